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

// ctxHook records, for every command, its context's deadline and the
// value of budgetTestKey.
type ctxHook struct {
	mu        sync.Mutex
	deadlines []time.Time
	values    []any
}

type budgetTestKey struct{}

func (h *ctxHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *ctxHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		dl, _ := ctx.Deadline()
		h.mu.Lock()
		h.deadlines = append(h.deadlines, dl)
		h.values = append(h.values, ctx.Value(budgetTestKey{}))
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *ctxHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *ctxHook) seen() ([]time.Time, []any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.deadlines...), append([]any(nil), h.values...)
}

// A direct call whose context can never end (context.Background with a
// value) takes the locker's shared budget: the claim and the release made
// one after the other share one deadline, between the budget and the
// budget plus a slice after the first started, and both see the caller's
// value. Without the shared budget each call would make a timer (and a
// deadline) of its own.
func TestRedisLockerSharesBudgetForContextsThatNeverEnd(t *testing.T) {
	const budget = time.Second
	l, h := hookedLocker(t, budget)
	ctx := context.WithValue(context.Background(), budgetTestKey{}, "mine")
	start := time.Now()
	cl, err := l.Claim(ctx, "j", t0, 30*time.Second, "me")
	if err != nil || !cl.Won || cl.Lease == nil {
		t.Fatalf("Claim: %+v, %v", cl, err)
	}
	if err := cl.Lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	deadlines, values := h.seen()
	if len(deadlines) < 2 {
		t.Fatalf("%d commands seen, want the claim and the release", len(deadlines))
	}
	first, last := deadlines[0], deadlines[len(deadlines)-1]
	if !first.Equal(last) {
		t.Errorf("claim deadline %s, release deadline %s: want one shared deadline", first, last)
	}
	lo, hi := start.Add(budget), time.Now().Add(budget+budget/16)
	if first.Before(lo) || first.After(hi) {
		t.Errorf("deadline %s after the start, want within [%s, %s]", first.Sub(start), budget, budget+budget/16)
	}
	for i, v := range values {
		if v != "mine" {
			t.Errorf("command %d saw value %v, want the caller's", i, v)
		}
	}
}

// A direct call whose context can be canceled keeps a deadline of its own,
// of exactly the budget, and its cancellation.
func TestRedisLockerOwnBudgetForCancelableContexts(t *testing.T) {
	const budget = time.Second
	l, h := hookedLocker(t, budget)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 2 {
		start := time.Now()
		if _, err := l.Claim(ctx, "j", t0.Add(time.Duration(i)*time.Second), 0, "me"); err != nil {
			t.Fatal(err)
		}
		deadlines, _ := h.seen()
		dl := deadlines[len(deadlines)-1]
		if d := dl.Sub(start); d < budget || d > budget+100*time.Millisecond {
			t.Errorf("claim %d: deadline %s after the start, want the %s budget", i, d, budget)
		}
	}
	cancel()
	if _, err := l.Claim(ctx, "j", t0.Add(time.Hour), 0, "me"); !errors.Is(err, context.Canceled) {
		t.Errorf("Claim on a canceled context: %v, want context.Canceled", err)
	}
}

// The shared budget's context for a context that never ends: the slice's
// deadline and cancellation (context.Cause and derived contexts see it),
// the caller's values.
func TestBudgetCtxEndsWithTheSlice(t *testing.T) {
	b := newSharedBudget(context.Background(), 20*time.Millisecond)
	ctx := b.valuesCtx(context.WithValue(context.Background(), budgetTestKey{}, "v"))
	if ctx.Value(budgetTestKey{}) != "v" {
		t.Errorf("value %v, want the caller's", ctx.Value(budgetTestKey{}))
	}
	if _, ok := ctx.Deadline(); !ok {
		t.Fatal("no deadline")
	}
	derived, cancel := context.WithCancel(ctx)
	defer cancel()
	select {
	case <-derived.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a context derived from it did not end with the slice")
	}
	if !errors.Is(context.Cause(derived), context.DeadlineExceeded) || !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Errorf("causes %v, %v; want the slice's deadline", context.Cause(derived), context.Cause(ctx))
	}
}

// hookedLocker is a Redis locker on a fresh redis-server with the given
// call budget, its client seen by a ctxHook.
func hookedLocker(t *testing.T, budget time.Duration) (Locker, *ctxHook) {
	t.Helper()
	c := redistest.Start(t).Client(t)
	h := &ctxHook{}
	c.AddHook(h)
	return rlLocker(t, c, WithCallBudget(budget)), h
}
