package cronguardtest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/cronguardtest"
)

var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// fakeTB records what the helpers ask of a test: failures (Fatalf stops
// the calling goroutine, as testing's does) and cleanups.
type fakeTB struct {
	testing.TB // the methods not overridden are not called
	ctx        context.Context

	mu       sync.Mutex
	fatal    string
	errs     []string
	cleanups []func()
}

func newFakeTB(t *testing.T) *fakeTB { return &fakeTB{ctx: t.Context()} }

func (f *fakeTB) Helper()                  {}
func (f *fakeTB) Context() context.Context { return f.ctx }
func (f *fakeTB) Cleanup(fn func())        { f.mu.Lock(); f.cleanups = append(f.cleanups, fn); f.mu.Unlock() }
func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal = fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

// run calls fn on a goroutine of its own, as a test body, and returns the
// fatal message, if any.
func (f *fakeTB) run(fn func()) string {
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fatal
}

func (f *fakeTB) cleanup() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

func ok(context.Context) error { return nil }

// RunTick runs the tick through the guards, without Redis and without a
// started scheduler, and its events reach the Recorder; a second run of the
// same tick is skipped as taken (the claim mark), a later one runs.
func TestRunTick(t *testing.T) {
	s, rec := cronguardtest.New(t)
	var ticks []time.Time
	job := cronguard.JobFunc(func(ctx context.Context) error {
		r, _ := cronguard.ReportFrom(ctx, nil)
		ticks = append(ticks, r.Tick)
		return nil
	})
	if err := s.Register("j", "*/30 * * * * *", job); err != nil {
		t.Fatal(err)
	}
	rep := cronguardtest.RunTick(t, s, "j", t0)
	if rep.Outcome() != "done" || rep.Trigger != cronguard.TriggerSchedule || !rep.Tick.Equal(t0) || rep.Instance != "test" {
		t.Fatalf("report %+v", rep)
	}
	if r := cronguardtest.RunTick(t, s, "j", t0); r.Outcome() != "tick_taken" {
		t.Fatalf("the same tick again: %v", r)
	}
	cronguardtest.RunTick(t, s, "j", t0.Add(30*time.Second))
	if len(ticks) != 2 || !ticks[1].Equal(t0.Add(30*time.Second)) {
		t.Fatalf("ticks run %v", ticks)
	}
	if got := rec.Reports("j"); len(got) != 2 {
		t.Fatalf("reports %+v", got)
	}
	if sk := rec.Find(cronguard.EventSkipped, "j"); len(sk) != 1 || sk[0].Skip != "tick_taken" {
		t.Fatalf("skips %+v", sk)
	}
	if st := rec.Find(cronguard.EventStarted, ""); len(st) != 2 {
		t.Fatalf("started events %+v", st)
	}
	if all := rec.Events(); len(all) != 5 { // started, finished, skipped, started, finished
		t.Fatalf("%d events: %+v", len(all), all)
	}
}

// The kill switch is a guard RunTick goes through; a failed run is a
// Report, not a test failure; a gap is reported missed, and caught up
// with CatchUp.
func TestRunTickGuards(t *testing.T) {
	s, rec := cronguardtest.New(t)
	boom := errors.New("boom")
	if err := s.Register("fails", "@every 1m", cronguard.JobFunc(func(context.Context) error { return boom })); err != nil {
		t.Fatal(err)
	}
	if err := s.Register("off", "@every 1m", cronguard.JobFunc(ok)); err != nil {
		t.Fatal(err)
	}
	if err := s.Register("gaps", "@every 1m", cronguard.JobFunc(ok), cronguard.CatchUp()); err != nil {
		t.Fatal(err)
	}
	if r := cronguardtest.RunTick(t, s, "fails", t0); r.Outcome() != "error" || !errors.Is(r.Err, boom) {
		t.Fatalf("failing job: %v", r)
	}
	if err := s.SetEnabled(t.Context(), "off", false, "test"); err != nil {
		t.Fatal(err)
	}
	if r := cronguardtest.RunTick(t, s, "off", t0); r.Outcome() != "killed" {
		t.Fatalf("switched-off job: %v", r)
	}
	cronguardtest.RunTick(t, s, "gaps", t0)
	cronguardtest.RunTick(t, s, "gaps", t0.Add(5*time.Minute))
	if m := rec.Find(cronguard.EventMissed, "gaps"); len(m) != 1 || m[0].Missed != 4 {
		t.Fatalf("missed events %+v", m)
	}
	var triggers []cronguard.Trigger
	for _, r := range rec.Reports("gaps") {
		triggers = append(triggers, r.Trigger)
	}
	if fmt.Sprint(triggers) != "[schedule catchup schedule]" {
		t.Fatalf("runs of gaps: %v", triggers)
	}
}

// A time the spec does not name, or an unknown job, fails the test with a
// message that says why; the job does not run.
func TestRunTickRefuses(t *testing.T) {
	s, _ := cronguardtest.New(t)
	runs := 0
	if err := s.Register("j", "*/30 * * * * *", cronguard.JobFunc(func(context.Context) error { runs++; return nil })); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		job  string
		tick time.Time
		want []string
	}{
		{"j", t0.Add(10 * time.Second), []string{"not a tick", `"j"`, "12:00:10Z", "12:00:00Z", "12:00:30Z"}},
		{"j", t0.Add(time.Millisecond), []string{"not a tick"}},
		{"j", time.Time{}, []string{"not a tick"}},
		{"nope", t0, []string{"unknown job", `"nope"`}},
	} {
		f := newFakeTB(t)
		msg := f.run(func() { cronguardtest.RunTick(f, s, c.job, c.tick) })
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("RunTick(%q, %s) failed the test with %q, want it to say %q", c.job, c.tick, msg, w)
			}
		}
	}
	if runs != 0 {
		t.Fatalf("the job ran %d times", runs)
	}
	// The same instant in another zone is the same tick.
	if r := cronguardtest.RunTick(t, s, "j", t0.In(time.FixedZone("X", 3600))); r.Outcome() != "done" {
		t.Fatalf("tick in another zone: %v", r)
	}
}

// Wait returns an event raised later on another goroutine, or one already
// recorded; it fails the test when none comes in time. Reset forgets.
func TestRecorderWait(t *testing.T) {
	s, rec := cronguardtest.New(t)
	release := make(chan struct{})
	if err := s.Register("slow", "@every 1m", cronguard.JobFunc(func(context.Context) error { <-release; return nil })); err != nil {
		t.Fatal(err)
	}
	done := make(chan cronguard.Report, 1)
	go func() { done <- cronguardtest.RunTick(t, s, "slow", t0) }()
	rec.Wait(t, cronguard.EventStarted, "slow", 5*time.Second)
	if n := len(rec.Find(cronguard.EventFinished, "")); n != 0 {
		t.Fatalf("%d finished events while the run goes", n)
	}
	close(release)
	ev := rec.Wait(t, cronguard.EventFinished, "slow", 5*time.Second)
	if ev.Report == nil || ev.Report.Outcome() != "done" {
		t.Fatalf("finished event %+v", ev)
	}
	<-done
	if again := rec.Wait(t, "", "slow", time.Millisecond); again.Kind != cronguard.EventStarted {
		t.Fatalf("Wait for any kind returned %+v, want the first event", again)
	}

	f := newFakeTB(t)
	msg := f.run(func() { rec.Wait(f, cronguard.EventRunaway, "slow", 20*time.Millisecond) })
	if !strings.Contains(msg, `no "runaway" event for job "slow" within 20ms`) {
		t.Fatalf("Wait timed out with %q", msg)
	}
	rec.Reset()
	if n := len(rec.Events()); n != 0 {
		t.Fatalf("%d events after Reset", n)
	}
	var zero cronguardtest.Recorder // usable as is
	go func() {
		time.Sleep(10 * time.Millisecond)
		zero.Observe(cronguard.Event{Kind: cronguard.EventStarted, Job: "x"})
	}()
	zero.Wait(t, cronguard.EventStarted, "x", 5*time.Second)
}

// New's scheduler is stopped at cleanup: a run still going is waited for,
// and registering afterwards fails with ErrStopped. Options given win over
// the defaults; a bad option fails the test.
func TestNewStopsAtCleanup(t *testing.T) {
	f := newFakeTB(t)
	var s *cronguard.Scheduler
	var rec *cronguardtest.Recorder
	if msg := f.run(func() { s, rec = cronguardtest.New(f, cronguard.WithInstanceID("mine")) }); msg != "" {
		t.Fatal(msg)
	}
	if err := s.Register("j", "@every 1m", cronguard.JobFunc(func(context.Context) error {
		time.Sleep(50 * time.Millisecond)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	go s.RunManually(context.Background(), "j") // its report is recorded
	rec.Wait(t, cronguard.EventStarted, "j", 5*time.Second)
	f.cleanup()
	if len(f.errs) != 0 {
		t.Fatalf("cleanup failed the test: %v", f.errs)
	}
	ev := rec.Wait(t, cronguard.EventFinished, "j", time.Millisecond) // Stop waited for it
	if ev.Instance != "mine" {
		t.Fatalf("instance %q, want the option given", ev.Instance)
	}
	if err := s.Register("k", "@every 1m", cronguard.JobFunc(ok)); !errors.Is(err, cronguard.ErrStopped) {
		t.Fatalf("Register after cleanup: %v", err)
	}

	f = newFakeTB(t)
	msg := f.run(func() { cronguardtest.New(f, cronguard.WithLocation(nil)) })
	if !strings.Contains(msg, "invalid option") {
		t.Fatalf("a bad option failed the test with %q", msg)
	}
}
