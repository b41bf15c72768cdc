package cronguard

import (
	"context"
	"sync/atomic"
	"time"
)

// sharedBudget hands out the call budget (WithCallBudget) of a Scheduler's
// calls to its Locker as a context shared by every call that starts within
// one slice of time, instead of a context and a runtime timer per call.
//
// Why: on a Redis backend a scheduled run makes two calls (the claim and
// the release), and a timer made per call wakes the runtime's network
// poller on another thread every time: on a 2-core machine that cost about
// as much as the scripts themselves, and it is a tenth of the process's
// CPU when 1,000 jobs share a second (BenchmarkRedisGuardedRunVsPing,
// schedbench).
//
// Bound: a call bounded so has its deadline between the budget and the
// budget plus one slice (a sixteenth of the budget, at most 10 ms) after
// it starts. Only runs whose context nobody else derived use it (see
// run.sharesBudget): a middleware's or a caller's context keeps its own
// values, deadline and cancellation, through a context of its own per call.
// The Redis locker keeps one too, for direct calls whose context can never
// end (context.Background and values over it, see valuesCtx).
type sharedBudget struct {
	parent context.Context
	budget time.Duration
	slice  time.Duration
	cur    atomic.Pointer[budgetSlice]
}

// budgetSlice is one shared deadline and its context. Its timer ends it at
// the deadline (or its parent first); nothing else need cancel it.
type budgetSlice struct {
	ctx      context.Context
	cancel   context.CancelFunc // kept only to mark it as released by the deadline
	deadline time.Time
}

func newSharedBudget(parent context.Context, budget time.Duration) *sharedBudget {
	return &sharedBudget{parent: parent, budget: budget, slice: min(budget/16, 10*time.Millisecond)}
}

// runCtx is the shared budget's context as one run's Locker call sees it:
// the slice's deadline and cancellation, and the run (ReportFrom in a
// Locker or a go-redis hook finds it, as under a context of the run's own).
// Every other key goes to the slice, so that context.Cause and contexts
// derived from it see the slice's cancellation, not the run's.
type runCtx struct {
	context.Context // the slice
	run             *run
}

func (c runCtx) Value(key any) any {
	if _, ok := key.(runKey); ok {
		return c.run
	}
	return c.Context.Value(key)
}

// budgetCtx is the shared budget's context for a direct call whose own
// context can never end (Done is nil): the slice's deadline and
// cancellation, and the caller's values. The slice answers first, so that
// context.Cause and contexts derived from it find the slice's cancellation
// (the slice holds no other value); every other key goes to the caller's.
type budgetCtx struct {
	context.Context                 // the slice
	vals            context.Context // the caller's, which never ends
}

func (c budgetCtx) Value(key any) any {
	if v := c.Context.Value(key); v != nil {
		return v
	}
	return c.vals.Value(key)
}

// valuesCtx returns the context of one call whose context vals can never
// end: the current slice, with vals' values.
func (b *sharedBudget) valuesCtx(vals context.Context) context.Context {
	return budgetCtx{Context: b.ctx(), vals: vals}
}

// runCtx returns ctx for one call of run.
func (b *sharedBudget) runCtx(run *run) context.Context {
	return runCtx{Context: b.ctx(), run: run}
}

// ctx returns a context that ends between the budget and the budget plus
// one slice from now, or when the parent ends.
func (b *sharedBudget) ctx() context.Context {
	want := time.Now().Add(b.budget)
	if s := b.cur.Load(); s != nil && !s.deadline.Before(want) {
		return s.ctx
	}
	s := &budgetSlice{deadline: want.Add(b.slice)}
	s.ctx, s.cancel = context.WithDeadline(b.parent, s.deadline)
	b.cur.Store(s) // a slice made at once by another call is simply replaced
	return s.ctx
}
