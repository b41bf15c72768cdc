package cronguard

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type spanKey struct{}

// valueHook records, for each script call (EVALSHA/EVAL), the spanKey value
// of the context go-redis's ProcessHook got.
type valueHook struct {
	mu   sync.Mutex
	seen []any
}

func (h *valueHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *valueHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			h.mu.Lock()
			h.seen = append(h.seen, ctx.Value(spanKey{}))
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (h *valueHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *valueHook) take() []any {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.seen
	h.seen = nil
	return s
}

// A middleware's context value (a trace span) reaches go-redis's hooks on
// the claim and on the release of a scheduled run: the shared call budget
// (budget.go) is taken only by runs whose context nobody derived.
func TestSharedBudgetKeepsMiddlewareValues(t *testing.T) {
	_, c := rlStart(t)
	h := &valueHook{}
	c.AddHook(h)
	l := rlLocker(t, c)
	mw := func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			return next.Run(context.WithValue(ctx, spanKey{}, "span"))
		})
	}
	s, _ := newTest(t, WithLocker(l), WithMiddleware(mw))
	if err := s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	_ = h.take()
	if rep := tickAt(t, s, "j", t0); rep.Outcome() != "done" {
		t.Fatalf("report %+v", rep)
	}
	seen := h.take()
	if len(seen) < 2 {
		t.Fatalf("%d script calls seen, want the claim and the release", len(seen))
	}
	for i, v := range seen {
		if v != "span" {
			t.Errorf("script call %d of a run with middleware: span %v, want the middleware's", i, v)
		}
	}
	// Without the middleware's value (no middleware), the run shares the budget.
	s2, _ := newTest(t, WithLocker(l))
	if err := s2.Register("k", "@every 1m", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s2, "k", t0); rep.Outcome() != "done" || s2.claimBudget.cur.Load() == nil || s2.releaseBudget.cur.Load() == nil {
		t.Fatalf("report %+v; a run without middleware did not take the shared budget", rep)
	}
}

// A scheduled run canceled by Stop still releases its Redis lock: the
// shared release budget does not end with Stop.
func TestSharedBudgetReleaseOutlivesStop(t *testing.T) {
	_, c := rlStart(t)
	l := rlLocker(t, c)
	s, _ := newTest(t, WithLocker(l))
	started := make(chan struct{})
	if err := s.Register("j", "@every 1m", JobFunc(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		time.Sleep(50 * time.Millisecond) // past Stop's cancel: the claim budget has ended
		return ctx.Err()
	}), LockTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	done := make(chan Report, 1)
	go func() { done <- tickAt(t, s, "j", t0) }()
	<-started
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = s.Stop(ctx)
	rep := <-done
	if rep.Outcome() != "stopped" && rep.Outcome() != "canceled" {
		t.Logf("outcome %s", rep.Outcome())
	}
	if n := c.Exists(context.Background(), l.lockKey("j")).Val(); n != 0 {
		t.Fatalf("the lock of a run canceled by Stop is still in Redis (TTL %s): the release was cut short",
			c.PTTL(context.Background(), l.lockKey("j")).Val())
	}
}
