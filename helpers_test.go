package cronguard

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/testwait"
)

// recorder collects events.
type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) observe(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// skips returns the skipped events with reason.
func (r *recorder) skips(reason string) []Event {
	var out []Event
	for _, e := range r.all() {
		if e.Kind == EventSkipped && e.Skip == reason {
			out = append(out, e)
		}
	}
	return out
}

// kind returns the events of kind k.
func (r *recorder) kind(k EventKind) []Event {
	var out []Event
	for _, e := range r.all() {
		if e.Kind == k {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) kinds(job string) []EventKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ks []EventKind
	for _, e := range r.events {
		if e.Job == job {
			ks = append(ks, e.Kind)
		}
	}
	return ks
}

func (r *recorder) find(kind EventKind) (Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Kind == kind {
			return e, true
		}
	}
	return Event{}, false
}

// newTest returns a quiet scheduler on memory backends with an event
// recorder, stopped at the end of the test.
func newTest(t *testing.T, opts ...Option) (*Scheduler, *recorder) {
	t.Helper()
	rec := &recorder{}
	opts = append([]Option{
		WithLogger(slog.New(slog.DiscardHandler)),
		WithObserver(rec.observe),
		WithInstanceID("test"),
		WithLocation(time.UTC),
	}, opts...)
	s, err := New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSched(t, s) })
	return s, rec
}

// stopSched stops s, giving its runs 10s, and fails t if Stop fails.
func stopSched(t testing.TB, s *Scheduler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

// tokenFrom is how job code reads its run lock's fencing token: Token of
// ReportFrom(ctx, nil), 0 without a lock.
func tokenFrom(ctx context.Context) int64 {
	r, _ := ReportFrom(ctx, nil)
	return r.Token
}

// tickAt runs job name through the scheduled guard chain as if cron fired it
// at tick: the suite never waits for real cron minutes.
func tickAt(t *testing.T, s *Scheduler, name string, tick time.Time) Report {
	t.Helper()
	e, err := s.lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return s.execute(s.base, e, TriggerSchedule, tick, nil)
}

// t0 is a fixed tick for tests.
var t0 = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

// blocker is a job that signals when it starts and runs until released or
// its context ends.
type blocker struct {
	started chan time.Time // receives tickFrom of each run
	release chan struct{}
	runs    atomic.Int32
}

func newBlocker() *blocker {
	return &blocker{started: make(chan time.Time, 16), release: make(chan struct{})}
}

func (b *blocker) Run(ctx context.Context) error {
	b.runs.Add(1)
	b.started <- tickFrom(ctx)
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *blocker) waitStarted(t *testing.T) time.Time {
	t.Helper()
	select {
	case tick := <-b.started:
		return tick
	case <-time.After(5 * time.Second):
		t.Fatal("job did not start within 5s")
		return time.Time{}
	}
}

// goAsync runs fn in a goroutine and returns a channel with its result.
func goAsync[T any](fn func() T) <-chan T {
	ch := make(chan T, 1)
	go func() { ch <- fn() }()
	return ch
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("no result within 5s")
		var zero T
		return zero
	}
}

// spyLocker counts calls to the Locker it wraps, records what the
// scheduler passed, and counts the extensions of the leases it hands out.
type spyLocker struct {
	Locker
	claims     atomic.Int32
	acquires   atomic.Int32
	extensions atomic.Int32

	mu    sync.Mutex
	calls []spyClaim // every Claim, in order
	exts  []time.Time
}

// spyClaim is one Claim call as the spy saw it.
type spyClaim struct {
	job      string
	tick     time.Time
	lockTTL  time.Duration
	instance string
}

func (s *spyLocker) Claim(ctx context.Context, job string, tick time.Time, lockTTL time.Duration, inst string) (Claim, error) {
	s.claims.Add(1)
	s.mu.Lock()
	s.calls = append(s.calls, spyClaim{job, tick, lockTTL, inst})
	s.mu.Unlock()
	c, err := s.Locker.Claim(ctx, job, tick, lockTTL, inst)
	if c.Lease != nil {
		c.Lease = &spyLease{Lease: c.Lease, spy: s}
	}
	return c, err
}

func (s *spyLocker) Acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error) {
	s.acquires.Add(1)
	l, err := s.Locker.Acquire(ctx, job, ttl)
	if l != nil {
		l = &spyLease{Lease: l, spy: s}
	}
	return l, err
}

func (s *spyLocker) claimCalls() []spyClaim {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

func (s *spyLocker) extendTimes() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.exts)
}

// spyLease counts and times successful extensions.
type spyLease struct {
	Lease
	spy *spyLocker
}

func (l *spyLease) Extend(ctx context.Context, ttl time.Duration) error {
	err := l.Lease.Extend(ctx, ttl)
	if err == nil {
		l.spy.extensions.Add(1)
		l.spy.mu.Lock()
		l.spy.exts = append(l.spy.exts, time.Now())
		l.spy.mu.Unlock()
	}
	return err
}

// waitFor waits for cond, polling (testwait.For): tests wait for conditions, never for fixed sleeps.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return testwait.For(t, d, what, cond)
}

// skipOf is the Outcome of a run that did not start (its Err a
// *SkipError), or "" for one that started.
func skipOf(r Report) string {
	if _, ok := errors.AsType[*SkipError](r.Err); ok {
		return r.Outcome()
	}
	return ""
}
