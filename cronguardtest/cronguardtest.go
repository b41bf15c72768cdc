// Package cronguardtest helps unit-test code that registers cronguard jobs,
// the role rivertest plays for River and Oban.Testing for Oban: run a
// registered job's tick once through its whole guard chain (kill switch,
// no-overlap, tick claim and run lock, timeout) and assert on its Report
// and its events, with no Redis and without waiting for cron.
//
//	func TestConfirmationEmails(t *testing.T) {
//		s, rec := cronguardtest.New(t)
//		if err := registerJobs(s); err != nil { // your service's own setup
//			t.Fatal(err)
//		}
//		rep := cronguardtest.RunTick(t, s, "confirmation-emails", tick)
//		if rep.Processed != 3 { ... }
//		if ev := rec.Find(cronguard.EventItemFailed, "confirmation-emails"); len(ev) > 0 { ... }
//	}
//
// It imports only cronguard and the standard library (testing among it), so
// it adds nothing to a service's dependencies.
package cronguardtest

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
)

// stopBound bounds the Stop that New registers with t.Cleanup.
const stopBound = 5 * time.Second

// New returns a quiet Scheduler for a test, and a Recorder of every event
// it raises. It runs on the in-memory backends unless opts say otherwise,
// logs nothing (WithLogger in opts to see the log), names its instance
// "test", and reads specs in UTC (so a test's ticks do not depend on the
// machine's zone); opts come after these defaults and win. It is not
// started: RunTick needs no cron. t.Cleanup stops it, waiting at most 5s for
// runs still going, and fails the test if Stop reports an error.
func New(t testing.TB, opts ...cronguard.Option) (*cronguard.Scheduler, *Recorder) {
	t.Helper()
	rec := NewRecorder()
	all := append([]cronguard.Option{
		cronguard.WithLogger(slog.New(slog.DiscardHandler)),
		cronguard.WithInstanceID("test"),
		cronguard.WithLocation(time.UTC),
		rec.Option(),
	}, opts...)
	s, err := cronguard.New(all...)
	if err != nil {
		t.Fatalf("cronguardtest.New: %v", err)
		return nil, nil
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopBound)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("cronguardtest: stop the scheduler: %v", err)
		}
	})
	return s, rec
}

// RunTick runs the tick of the registered job through its scheduled guard
// chain, as if cron had fired it (Scheduler.RunTick), and returns its
// Report: a failed or skipped run is a Report to assert on, not a test
// failure. The test fails at once (t.Fatalf) when the job is not
// registered or tick is not a time its spec names (the message names the
// ticks around it). Each tick claims the job's claim mark, as a real one
// does: running one tick twice skips the second as tick_taken, and a gap
// since the previous tick is reported missed (and caught up with
// cronguard.CatchUp). The run's context is t.Context().
func RunTick(t testing.TB, s *cronguard.Scheduler, job string, tick time.Time) cronguard.Report {
	t.Helper()
	rep, err := s.RunTick(t.Context(), job, tick)
	if errors.Is(err, cronguard.ErrUnknownJob) || errors.Is(err, cronguard.ErrNotATick) { // refused, not run
		t.Fatalf("cronguardtest.RunTick: %v", err)
	}
	return rep
}
