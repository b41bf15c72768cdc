package cronguard

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// A shared budget's deadline is between the budget and the budget plus one
// slice from each call's start; calls within a slice share one context,
// which ends with its parent.
func TestSharedBudgetDeadline(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	b := newSharedBudget(parent, time.Second)
	if b.slice != 10*time.Millisecond {
		t.Fatalf("slice of a 1s budget = %s, want 10ms (a sixteenth, at most 10ms)", b.slice)
	}
	for range 50 {
		start := time.Now()
		ctx := b.ctx()
		end := time.Now()
		dl, ok := ctx.Deadline()
		if !ok || dl.Before(start.Add(time.Second)) || dl.After(end.Add(time.Second+b.slice)) {
			t.Fatalf("deadline %s after the call's start: want between 1s and 1s + %s", dl.Sub(start), b.slice)
		}
		time.Sleep(time.Millisecond)
	}
	c1, c2 := b.ctx(), b.ctx()
	if c1 != c2 {
		t.Error("two calls in the same instant got two contexts: the budget is not shared")
	}
	cancel()
	select {
	case <-c1.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a shared budget's context outlived its parent")
	}
	if small := newSharedBudget(parent, 80*time.Millisecond); small.slice != 5*time.Millisecond {
		t.Errorf("slice of an 80ms budget = %s, want 5ms", small.slice)
	}
}

// A scheduled fire's claim on a Redis that stalls ends within the call
// budget (plus a slice) through the shared budget, and the tick is
// skipped as a store failure, not waited on.
func TestScheduledClaimBoundedBySharedBudget(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	opts := proxy.Options()
	opts.ContextTimeoutEnabled, opts.MaxRetries = true, -1
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	const budget = 300 * time.Millisecond
	l, err := NewRedisLocker(c, WithCallBudget(budget))
	if err != nil {
		t.Fatal(err)
	}
	s, rec := newTest(t, WithLocker(l), WithCallBudget(budget))
	if err := s.Register("j", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a run on a working Redis", func() bool { return len(rec.kind(EventFinished)) > 0 })
	if s.claimBudget.cur.Load() == nil {
		t.Fatal("a scheduled fire's claim did not take the shared budget")
	}
	proxy.Stall()
	defer proxy.Resume()
	var ev Event
	waitFor(t, 10*time.Second, "a tick skipped as a store failure", func() bool {
		for _, e := range rec.skips("backend") {
			ev = e
			return true
		}
		return false
	})
	if !errors.Is(ev.Err, ErrBackend) {
		t.Errorf("skip: %v, want ErrBackend", ev.Err)
	}
	// The fire comes at most a few ms after the tick; the claim ends by
	// the budget plus a slice. One second of margin for a busy machine.
	took := ev.Time.Sub(ev.Tick)
	if took > budget+s.claimBudget.slice+time.Second {
		t.Errorf("the stalled claim ended %s after its tick, budget %s", took, budget)
	}
	t.Logf("the stalled claim ended %s after its tick (budget %s)", took, budget)
}

// reportingLocker records what ReportFrom says inside its calls.
type reportingLocker struct {
	Locker
	mu   sync.Mutex
	seen []string // "claim:<job>" or "release:<job>", "" when ReportFrom found no run
}

func (l *reportingLocker) note(what string, ctx context.Context) {
	rep, ok := ReportFrom(ctx, nil)
	l.mu.Lock()
	defer l.mu.Unlock()
	if !ok {
		what = ""
	}
	l.seen = append(l.seen, what+rep.Job)
}

func (l *reportingLocker) Claim(ctx context.Context, job string, tick time.Time, ttl time.Duration, inst string) (Claim, error) {
	l.note("claim:", ctx)
	c, err := l.Locker.Claim(ctx, job, tick, ttl, inst)
	if c.Lease != nil {
		c.Lease = reportingLease{c.Lease, l}
	}
	return c, err
}

type reportingLease struct {
	Lease
	l *reportingLocker
}

func (r reportingLease) Release(ctx context.Context) error {
	r.l.note("release:", ctx)
	return r.Lease.Release(ctx)
}

// A Locker (or a go-redis hook under it) finds the run in its context on a
// scheduled fire's claim and release too, which take the shared budget;
// the context's deadline is the slice's.
func TestSharedBudgetCarriesTheRun(t *testing.T) {
	l := &reportingLocker{Locker: NewMemoryLocker()}
	s, rec := newTest(t, WithLocker(l))
	if err := s.Register("j", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a scheduled run", func() bool { return len(rec.kind(EventFinished)) > 0 })
	if s.claimBudget.cur.Load() == nil || s.releaseBudget.cur.Load() == nil {
		t.Fatal("the scheduled run did not take the shared budget")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seen) < 2 || l.seen[0] != "claim:j" || l.seen[1] != "release:j" {
		t.Fatalf("ReportFrom in the Locker's calls: %q, want claim:j, release:j", l.seen)
	}
	ctx := s.claimBudget.runCtx(&run{job: "x"})
	if context.Cause(ctx) != nil {
		t.Errorf("a live slice's cause: %v", context.Cause(ctx))
	}
	if _, ok := ctx.Deadline(); !ok {
		t.Error("the run's view of the slice has no deadline")
	}
}
