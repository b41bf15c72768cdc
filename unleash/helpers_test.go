package unleash

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/internal/testwait"
)

// everySecond is the spec of the jobs in these tests: this module sees
// cronguard from outside and drives runs through real cron ticks.
const everySecond = "* * * * * *"

// recorder collects events.
type recorder struct {
	mu     sync.Mutex
	events []cronguard.Event
}

func (r *recorder) observe(e cronguard.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) all() []cronguard.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// find returns the first event of kind k for job.
func (r *recorder) find(job string, k cronguard.EventKind) (cronguard.Event, bool) {
	for _, e := range r.all() {
		if e.Job == job && e.Kind == k {
			return e, true
		}
	}
	return cronguard.Event{}, false
}

// outcome waits up to 10s for the first scheduled run of job on a tick
// after after that finished or was skipped, and returns its event: a tick
// after the moment a test saw a change is decided on that change.
func (r *recorder) outcome(t *testing.T, job string, after time.Time) cronguard.Event {
	t.Helper()
	var got cronguard.Event
	waitFor(t, 10*time.Second, "a run of "+job+" on a tick after "+after.Format(time.StampMilli), func() bool {
		for _, e := range r.all() {
			if e.Job == job && e.Tick.After(after) && (e.Kind == cronguard.EventFinished || e.Kind == cronguard.EventSkipped) {
				got = e
				return true
			}
		}
		return false
	})
	return got
}

// newScheduler returns a quiet scheduler on memory backends with an event
// recorder, stopped when the test ends (before the Unleash clients made
// earlier are closed).
func newScheduler(t *testing.T, opts ...cronguard.Option) (*cronguard.Scheduler, *recorder) {
	t.Helper()
	rec := &recorder{}
	opts = append([]cronguard.Option{
		cronguard.WithLogger(slog.New(slog.DiscardHandler)),
		cronguard.WithObserver(rec.observe),
		cronguard.WithInstanceID("test"),
		cronguard.WithLocation(time.UTC),
	}, opts...)
	s, err := cronguard.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return s, rec
}

// waitFor waits for cond, polling (testwait.For): tests wait for conditions, never for fixed sleeps.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testwait.For(t, d, what, cond)
}

// ksIs reports whether k answers want for flag, without error.
func ksIs(k cronguard.KillSwitch, flag string, want bool) func() bool {
	return func() bool {
		on, err := k.Enabled(context.Background(), flag)
		return err == nil && on == want
	}
}
