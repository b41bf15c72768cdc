package cronguardtest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
)

// Recorder records the events of a Scheduler, for a test to assert on. Give
// it with Option (New does). It keeps every event in memory, in the order
// raised: it is meant for tests, not for long-running programs. It is safe
// for concurrent use; its zero value is ready to use.
type Recorder struct {
	mu      sync.Mutex
	events  []cronguard.Event
	changed chan struct{} // closed and replaced at each event; nil until asked for
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{}
}

// Option returns the cronguard.WithObserver option that feeds r.
func (r *Recorder) Option() cronguard.Option { return cronguard.WithObserver(r.Observe) }

// Observe records ev. It is the observer function that Option installs.
func (r *Recorder) Observe(ev cronguard.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// Events returns a copy of every event recorded so far, oldest first.
func (r *Recorder) Events() []cronguard.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Find returns the recorded events of kind for job, oldest first; an empty
// kind or job matches any.
func (r *Recorder) Find(kind cronguard.EventKind, job string) []cronguard.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []cronguard.Event
	for _, ev := range r.events {
		if matches(ev, kind, job) {
			out = append(out, ev)
		}
	}
	return out
}

// Reports returns the Reports of the runs of job that ended (its finished
// events), oldest first; an empty job matches any. Skipped ticks have no
// Report here: find them with Find(cronguard.EventSkipped, job).
func (r *Recorder) Reports(job string) []cronguard.Report {
	var out []cronguard.Report
	for _, ev := range r.Find(cronguard.EventFinished, job) {
		if ev.Report != nil {
			out = append(out, *ev.Report)
		}
	}
	return out
}

// Wait returns the first recorded event of kind for job (an empty kind or
// job matches any), waiting at most timeout for it to be raised: for runs
// that end on another goroutine (a started scheduler, a run in flight). It
// fails the test (t.Fatalf) when none comes in time.
func (r *Recorder) Wait(t testing.TB, kind cronguard.EventKind, job string, timeout time.Duration) cronguard.Event {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		i := slices.IndexFunc(r.events, func(ev cronguard.Event) bool { return matches(ev, kind, job) })
		if i >= 0 {
			ev := r.events[i]
			r.mu.Unlock()
			return ev
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		n := len(r.events)
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("cronguardtest: no %q event for job %q within %s (%d other events recorded)", orAny(string(kind)), orAny(job), timeout, n)
			return cronguard.Event{}
		}
	}
}

// Reset forgets every event recorded so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = nil
}

func matches(ev cronguard.Event, kind cronguard.EventKind, job string) bool {
	return (kind == "" || ev.Kind == kind) && (job == "" || ev.Job == job)
}

func orAny(s string) string {
	if s == "" {
		return "any"
	}
	return s
}
