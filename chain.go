package cronguard

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"
)

// The guard chain of a run, outermost first:
//
//	scheduled: recover → middleware → kill switch → overlap → tick claim + run lock → timeout → hard kill → job
//	manual:    recover → middleware → run lock → timeout → job
//
// The claim and the run lock are one call to the Locker (one round trip on
// Redis), after the checks that cost nothing: the kill switch (a
// switched-off job claims nothing) and the local overlap. Each guard runs
// the rest of the chain or returns a skip.
//
// The guards are plain code, the same for every job, not closures made per
// job: a registered job costs its entry and nothing more, and a run costs
// no call through a chain of func values. User middleware (WithMiddleware)
// is the one chain of Jobs, built once per job at Register around the
// guards, and shared by both triggers.

// buildChain wraps the guards of e in the user middleware; without
// middleware e.chain stays nil and runs call the guards directly.
func (s *Scheduler) buildChain(e *entry) error {
	if len(s.cfg.middleware) == 0 {
		return nil
	}
	var j Job = (*guardJob)(e)
	for i, mw := range slices.Backward(s.cfg.middleware) {
		var err error
		if j, err = wrap(mw, j); err != nil {
			return fmt.Errorf("job %q: middleware %d: %w", e.name, i, err)
		}
	}
	e.chain = j
	return nil
}

// wrap applies user middleware, which must neither panic nor return nil.
func wrap(mw Middleware, j Job) (_ Job, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: while wrapping the job: %v", ErrPanic, r)
		}
	}()
	if j = mw(j); isNil(j) {
		return nil, fmt.Errorf("%w: returned a nil Job", ErrInvalidOption)
	}
	return j, nil
}

// guardJob is the Job the middleware of an entry wraps: the entry itself
// under another method set, so it costs no allocation.
type guardJob entry

// Run implements Job: the guards of the run of ctx. The middleware must
// pass on the context it was given, or one derived from it: the run lives
// in it.
func (g *guardJob) Run(ctx context.Context) error {
	e := (*entry)(g)
	st, ok := ctx.Value(runKey{}).(*run)
	if !ok || st.e != e {
		return fmt.Errorf("%w: job %q: a middleware passed on a context that does not derive from the run's", ErrInvalidOption, e.name)
	}
	return e.s.guards(ctx, st)
}

// skipError is returned by a guard that did not let the run start.
type skipError struct {
	reason SkipReason
	err    error
}

func (e *skipError) Error() string { return e.err.Error() }
func (e *skipError) Unwrap() error { return e.err }

func skip(reason SkipReason, err error) error { return &skipError{reason, err} }

// runChain runs st through its chain, turning a panic anywhere below into
// a failed run.
func (s *Scheduler) runChain(st *run) (err error) {
	defer func() {
		if r := recover(); r != nil {
			st.stack = string(debug.Stack())
			err = fmt.Errorf("%w: job %q: %v", ErrPanic, st.job, r)
		}
	}()
	if c := st.e.chain; c != nil {
		return c.Run(st)
	}
	return s.guards(st, st)
}

// guards runs the guards of st's trigger, below the middleware; ctx is st
// or derives from it.
func (s *Scheduler) guards(ctx context.Context, st *run) error {
	e := st.e
	if st.trigger == TriggerManual {
		return s.lockGuard(ctx, e) // whatever the overlap policy: manual runs exclude each other
	}
	if err := s.checkSwitch(ctx, e); err != nil {
		return err
	}
	return s.overlapGuard(ctx, e)
}

// checkSwitch returns a skip when the job's flag is off or unknown.
func (s *Scheduler) checkSwitch(ctx context.Context, e *entry) error {
	on, err := s.enabled(ctx, e.cfg.flag)
	if err != nil {
		return skip(SkipBackend, fmt.Errorf("job %q: %w", e.name, err))
	}
	if !on {
		return skip(SkipKilled, fmt.Errorf("%w: job %q (flag %q)", ErrKilled, e.name, e.cfg.flag))
	}
	return nil
}

// lockerCtx bounds a call to the Locker by the call budget
// (WithCallBudget). The memoryLocker answers at once and is not bounded: a
// timer per call would cost more than the call.
func (s *Scheduler) lockerCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := s.cfg.locker.(*memoryLocker); ok {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, s.cfg.budget)
}

// claimGuard lets one run per tick through, across every instance sharing
// the Locker: it moves the job's claim mark to the tick and, in the same
// call, takes the run lock (not for overlapAllow, which runs unlocked). The
// winner of a tick reports the ticks missed since the mark (EventMissed);
// a won tick whose lock is held (a run of an earlier tick still goes) is
// skipped as locked, and stays claimed.
func (s *Scheduler) claimGuard(ctx context.Context, e *entry) error {
	lockTTL := e.cfg.lockTTL
	if e.cfg.overlap == overlapAllow {
		lockTTL = 0
	}
	tick := tickFrom(ctx)
	cctx, cancel := s.lockerCtx(ctx)
	c, err := s.cfg.locker.Claim(cctx, e.name, tick, lockTTL, s.cfg.instance)
	cancel()
	if err != nil || !c.Won {
		return claimSkip(e, tick, &c, err)
	}
	st := runFrom(ctx)
	if !c.Prev.IsZero() {
		// Ticks this process fired and skipped before claiming (switched
		// off, overlap, store down) were decided, and reported as skips:
		// they are not missed.
		last := s.reportMissed(ctx, e, later(c.Prev, e.decidedTick()), tick)
		if e.cfg.catchUp {
			st.gapPrev, st.gapLast = c.Prev, last // catchup.go
		}
	}
	switch {
	case lockTTL == 0:
		return s.tickBody(ctx, e)
	case c.LockErr != nil || isNil(c.Lease):
		return lockSkip(e, tick, c.LockErr)
	}
	return s.holdLease(ctx, e, c.Lease, lockTTL)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// claimSkip is the skip of a claim that failed (err) or was lost.
func claimSkip(e *entry, tick time.Time, c *Claim, err error) error {
	if err != nil {
		return skip(SkipBackend, fmt.Errorf("%w: job %q: claim tick %s: %w", ErrBackend, e.name, fmtTick(tick), err))
	}
	return skip(SkipTickTaken, fmt.Errorf("%w: job %q: tick %s: the claim mark is at tick %s, claimed by %q",
		ErrTickTaken, e.name, fmtTick(tick), fmtTick(c.HolderTick), clip(c.Holder)))
}

// lockSkip is the skip of a won claim whose run lock was not taken.
func lockSkip(e *entry, tick time.Time, lockErr error) error {
	if errors.Is(lockErr, ErrLocked) {
		return skip(SkipLocked, lockErr)
	}
	return skip(SkipBackend, fmt.Errorf("%w: job %q: tick %s claimed, lock not taken: %w", ErrBackend, e.name, fmtTick(tick), lockErr))
}

// reportMissed raises EventMissed when the spec names ticks strictly
// between the previous claim mark and tick, and returns the last of them
// (zero when none).
func (s *Scheduler) reportMissed(ctx context.Context, e *entry, prev, tick time.Time) time.Time {
	n, first, last, capped := missedTicks(e.sched(), prev, tick)
	if n == 0 {
		return time.Time{}
	}
	count := strconv.Itoa(n)
	if capped {
		count = "at least " + count
	}
	ev := runFrom(ctx).event(EventMissed, fmt.Errorf("%w: job %q: %s tick(s) from %s to %s, before tick %s (claim mark was %s)",
		ErrMissed, e.name, count, fmtTick(first), fmtTick(last), fmtTick(tick), fmtTick(prev)))
	ev.Missed, ev.MissedCapped, ev.MissedFirst, ev.MissedLast = n, capped, first, last
	s.emitEvent(&ev)
	return last
}

// overlapState is the local no-overlap bookkeeping of one job.
type overlapState struct {
	mu      sync.Mutex
	running int32
	waiting bool          // a queued run waits (overlapQueue)
	idle    chan struct{} // made by a waiting run; closed when running drops to 0
}

// overlapGuard applies the job's overlapPolicy within this process, then
// claims the tick. A run that waited (overlapQueue) asks the kill switch
// again before it claims: an operator may have switched the job off
// meanwhile.
func (s *Scheduler) overlapGuard(ctx context.Context, e *entry) error {
	queued, err := e.overlap.enter(ctx, e)
	if err != nil {
		return err
	}
	defer e.overlap.done()
	if queued {
		if err := s.checkSwitch(ctx, e); err != nil {
			return err
		}
	}
	return s.claimGuard(ctx, e)
}

// enter counts a run of e in, or returns the skip of its overlap policy;
// under overlapQueue it waits for the runs going now (queued is then true).
func (o *overlapState) enter(ctx context.Context, e *entry) (queued bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running > 0 && e.cfg.overlap != overlapAllow {
		if e.cfg.overlap == overlapSkip || o.waiting {
			return false, skip(SkipOverlap, fmt.Errorf("%w: job %q", ErrOverlap, e.name))
		}
		if err := o.wait(ctx); err != nil { // overlapQueue
			return false, skip(SkipStopped, fmt.Errorf("%w: job %q: queued run: %w", ErrStopped, e.name, err))
		}
		queued = true
	}
	o.running++
	return queued, nil
}

// wait is called with o.mu held and returns with it held, after the runs
// going now have ended or ctx is done.
func (o *overlapState) wait(ctx context.Context) error {
	o.waiting = true
	defer func() { o.waiting = false }()
	for o.running > 0 {
		if o.idle == nil {
			o.idle = make(chan struct{})
		}
		idle := o.idle
		o.mu.Unlock()
		select {
		case <-idle:
			o.mu.Lock()
		case <-ctx.Done():
			o.mu.Lock()
			return context.Cause(ctx)
		}
	}
	return nil
}

func (o *overlapState) done() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running--; o.running == 0 && o.idle != nil {
		close(o.idle)
		o.idle = nil
	}
}

// lockGuard takes the job's run lock for a manual run (no claim) and holds
// it for the run.
func (s *Scheduler) lockGuard(ctx context.Context, e *entry) error {
	ttl := e.cfg.lockTTL
	actx, cancel := s.lockerCtx(ctx)
	lease, err := s.cfg.locker.Acquire(actx, e.name, ttl)
	cancel()
	if errors.Is(err, ErrLocked) {
		return skip(SkipLocked, err)
	}
	if err != nil {
		return skip(SkipBackend, fmt.Errorf("%w: job %q: acquire lock: %w", ErrBackend, e.name, err))
	}
	return s.holdLease(ctx, e, lease, ttl)
}

// holdLease runs the body under lease, kept alive by the run's watchdog;
// losing it cancels the run with cause ErrLockLost (run.lockLost). The
// lease is released when the run ends, unless it was lost.
func (s *Scheduler) holdLease(ctx context.Context, e *entry, lease Lease, ttl time.Duration) error {
	st := runFrom(ctx)
	st.dog.start(st, lease, ttl, s.cfg.budget)
	defer func() {
		if !st.dog.stop() {
			s.release(ctx, lease) // an unreleased lock expires after ttl
		}
	}()
	st.held.Context, st.held.lease = ctx, lease
	return s.tickBody(&st.held, e)
}

// release gives lease up, within the call budget even when the run's
// context has ended.
func (s *Scheduler) release(ctx context.Context, lease Lease) {
	if _, ok := s.cfg.locker.(*memoryLocker); ok {
		_ = lease.Release(ctx) // it neither blocks nor reads ctx
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.budget)
	defer cancel()
	_ = lease.Release(rctx)
}

// lockLost is called by the run's watchdog when its lease could not be
// extended: it raises EventLockLost and cancels the run.
func (st *run) lockLost(err error) {
	cause := err
	if !errors.Is(err, ErrLockLost) { // a Redis error, say
		cause = fmt.Errorf("%w: job %q: %w", ErrLockLost, st.job, err)
	}
	ev := st.event(EventLockLost, cause)
	st.s.emitEvent(&ev)
	st.cancel(cause)
}

// body runs the job, bounded by its Timeout and, for a scheduled HardKill
// job, under the hard-kill guard.
func (s *Scheduler) body(ctx context.Context, e *entry) error {
	if e.cfg.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, e.cfg.timeout,
			fmt.Errorf("%w: job %q after %s", ErrTimeout, e.name, e.cfg.timeout))
		defer cancel()
	}
	if e.cfg.hardKill && runFrom(ctx).trigger == TriggerSchedule {
		return s.hardKillGuard(ctx, e)
	}
	return s.start(ctx, e)
}

// start is innermost: the run has passed every guard and starts now.
func (s *Scheduler) start(ctx context.Context, e *entry) error {
	st := runFrom(ctx)
	st.begin()
	var err error
	if st.items != nil {
		err = e.batch().runItems(ctx, st.items)
	} else {
		err = e.job.Run(ctx)
	}
	if ctx.Err() != nil {
		st.cause = context.Cause(ctx)
	}
	return err
}

func fmtTick(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
