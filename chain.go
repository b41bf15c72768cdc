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

// The guard chain of a run, outermost first, as robfig/cron's Chain.Then
// applies it:
//
//	scheduled: recover → middleware → kill switch → overlap → claim + lock → catch-up → timeout → hard kill → job
//	manual:    recover → middleware → lock → timeout → job
//	catch-up:  recover → middleware → timeout → hard kill → job (below the tick's claim + lock)
//
// The claim and the run lock are one call to the Locker (one round trip on
// Redis), after the checks that cost nothing: the kill switch (a
// switched-off job claims nothing) and the local overlap. Each guard runs
// the rest of the chain or returns a *SkipError.
//
// A guard takes the run as its argument, not a context: the chains are
// composed once, here, for every job of every Scheduler, so a registered
// job costs its entry and nothing more, and a run costs no closure. The
// context a step runs under is run.ctx (the run itself, or one a
// middleware or a guard derived from it). User middleware (WithMiddleware)
// is the one chain of Jobs, built once per job at Register around these
// chains, and shared by every trigger.

// step is one link of a chain: the rest of the run from here.
type step func(run *run) error

// guard wraps the rest of the chain, as robfig/cron's JobWrapper does.
type guard func(next step) step

// then applies gs to the innermost step, the first guard outermost, as
// robfig/cron's Chain.Then does.
func then(gs ...guard) func(step) step {
	return func(inner step) step {
		for _, g := range slices.Backward(gs) {
			inner = g(inner)
		}
		return inner
	}
}

// The chains, one per trigger, composed once for the whole program (in
// init: a catch-up run inside the scheduled chain runs a chain of its own).
// The guards live in this file except killSwitchGuard and hardKillGuard
// (killswitch.go) and catchUpGuard (catchup.go).
//
// Each trigger has a chain per set of optional guards (CatchUp, Timeout,
// HardKill), indexed by jobConfig.optional, which leaves out the guards a
// job's options make pass-through: they let the run through all the same,
// but each would add its frame to the stack the job runs on (see
// stack.go).
var scheduledChain, manualChain, catchUpChain [optAll + 1]step

// The optional guards, as bits of jobConfig.optional.
const (
	optCatchUp = 1 << iota
	optTimeout
	optHardKill
	optAll = optCatchUp | optTimeout | optHardKill
)

func init() {
	for v := range uint8(optAll + 1) {
		scheduledChain[v] = compose(v, link{0, killSwitchGuard}, link{0, overlapGuard}, link{0, claimGuard},
			link{optCatchUp, catchUpGuard}, link{optTimeout, timeoutGuard}, link{optHardKill, hardKillGuard})
		manualChain[v] = compose(v, link{0, lockGuard}, link{optTimeout, timeoutGuard})
		// A catch-up run goes below the tick's claim and lock (catchUpGuard),
		// above the tick's own timeout and hard kill: it gets its own.
		catchUpChain[v] = compose(v, link{optTimeout, timeoutGuard}, link{optHardKill, hardKillGuard})
	}
}

// link is a guard of a chain, left out unless the optional guards of the
// chain have its bit opt (always in when opt is 0).
type link struct {
	opt uint8
	g   guard
}

// compose applies the links that the optional guards v keep, around
// runJob.
func compose(v uint8, links ...link) step {
	var gs []guard
	for _, l := range links {
		if l.opt == 0 || v&l.opt != 0 {
			gs = append(gs, l.g)
		}
	}
	return then(gs...)(runJob)
}

// optional is the set of optional guards c makes do something.
func (c *jobConfig) optional() uint8 {
	var v uint8
	if c.catchUp {
		v |= optCatchUp
	}
	if c.timeout > 0 {
		v |= optTimeout
	}
	if c.hardKill {
		v |= optHardKill
	}
	return v
}

// chain returns the chain of r's trigger, below the middleware.
func (r *run) chain() step {
	v := r.e.cfg.optional()
	switch r.trigger {
	case TriggerManual:
		return manualChain[v]
	case TriggerCatchUp:
		return catchUpChain[v]
	}
	return scheduledChain[v]
}

// runChain runs r through the user middleware and its chain, turning a
// panic anywhere below into a failed run.
func (r *run) runChain() (err error) {
	defer r.recoverPanic(&err)
	if r.e.extra != nil && r.e.extra.chain != nil {
		return r.runMiddleware()
	}
	r.ctx = r
	return r.chain()(r)
}

// recoverPanic, deferred, turns a panic into the failed run's *err.
func (r *run) recoverPanic(err *error) {
	if p := recover(); p != nil {
		r.stack = string(debug.Stack())
		*err = fmt.Errorf("%w: job %q: %v", ErrPanic, r.job, p)
	}
}

// runMiddleware runs r through the user middleware, which runs its chain.
//
//go:noinline
func (r *run) runMiddleware() error {
	c := r.e.middleware()
	if r.trigger == TriggerCatchUp {
		// A catch-up run goes inside its tick's run, below the tick's own
		// pass through the middleware: through the same wrapped Job, a
		// middleware that lets one run through at a time (a mutex, like
		// robfig's DelayIfStillRunning) would wait on itself for ever. It
		// gets the middleware wrapped anew: one per gap at most, so rarely.
		var err error
		if c, err = r.s.wrapMiddleware(r.e); err != nil {
			return err
		}
	}
	return c.Run(r)
}

// buildChain wraps the chains of e in the user middleware; without
// middleware e.middleware() stays nil and runs call the chains directly.
func (s *Scheduler) buildChain(e *entry) error {
	if len(s.cfg.middleware) == 0 {
		return nil
	}
	j, err := s.wrapMiddleware(e)
	if e.extra == nil {
		e.extra = new(entryExtra)
	}
	e.extra.chain = j
	return err
}

// wrapMiddleware wraps the chains of e in the user middleware, outermost
// first.
func (s *Scheduler) wrapMiddleware(e *entry) (Job, error) {
	var j Job = (*guardJob)(e)
	for i, mw := range slices.Backward(s.cfg.middleware) {
		var err error
		if j, err = wrap(mw, j); err != nil {
			return nil, fmt.Errorf("job %q: middleware %d: %w", e.name, i, err)
		}
	}
	return j, nil
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

// Run implements Job: the chain of the run of ctx. The middleware must
// pass on the context it was given, or one derived from it: the run lives
// in it.
func (g *guardJob) Run(ctx context.Context) error {
	e := (*entry)(g)
	run, ok := ctx.Value(runKey{}).(*run)
	if !ok || run.e != e {
		return fmt.Errorf("%w: job %q: a middleware passed on a context that does not derive from the run's", ErrInvalidOption, e.name)
	}
	run.ctx = ctx
	return run.chain()(run)
}

// under runs next with ctx as the run's context, then puts the previous
// one back (a catch-up run and the tick after it see the tick's own).
func under(ctx context.Context, run *run, next step) error {
	prev := run.ctx
	run.ctx = ctx
	defer func() { run.ctx = prev }()
	return next(run)
}

// lockerCtx bounds a call to the Locker by the call budget
// (WithCallBudget). The memoryLocker answers at once and is not bounded: a
// timer per call would cost more than the call.
func (s *Scheduler) lockerCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := s.cfg.locker.(*memoryLocker); ok {
		return ctx, noCancel
	}
	if run, ok := ctx.(*run); ok && run.sharesBudget() {
		return s.claimBudget.runCtx(run), noCancel
	}
	return context.WithTimeout(ctx, s.cfg.budget)
}

// claimGuard lets one run per tick through, across every instance sharing
// the Locker: it moves the job's claim mark to the tick and, in the same
// call, takes the run lock (not for overlapAllow, which runs unlocked). The
// winner of a tick reports the ticks missed since the mark (EventMissed);
// a won tick whose lock is held (a run of an earlier tick still goes) is
// skipped as locked, and stays claimed.
func claimGuard(next step) step {
	return func(run *run) error {
		lockTTL := run.e.cfg.lockTTL
		if run.e.cfg.overlap == overlapAllow {
			lockTTL = 0
		}
		if m, ok := run.s.cfg.locker.(*memoryLocker); ok {
			switch err := run.claimMemory(m, lockTTL); {
			case err != nil:
				return err
			case lockTTL == 0:
				return next(run)
			}
			return run.holdMemory(next)
		}
		lease, err := run.claimLocker(lockTTL)
		switch {
		case err != nil:
			return err
		case lockTTL == 0:
			return next(run)
		}
		if p, ok := lease.(pinner); ok { // holdLease, by hand: one frame less under the job
			return run.holdPinned(p, next)
		}
		return run.holdWatched(lease, lockTTL, next)
	}
}

// claimMemory claims r's tick on the memory Locker and, when lockTTL > 0,
// takes the run lock, pinned to r (r.memJob): the skip of a claim lost or
// of a lock not taken, or nil. It is claimLocker's steps in small frames,
// with no Claim or Lease made, so that a lean run fits the stack a
// goroutine starts with (see stack.go); it returns before the job
// runs, so its frames are off the stack while the job runs.
//
//go:noinline
func (r *run) claimMemory(m *memoryLocker, lockTTL time.Duration) error {
	prev, err := m.claimRun(r, lockTTL)
	if err != nil {
		return err // lost, or a skip: ticks settled by claimRun
	}
	r.won(prev)
	return nil
}

// won is what every won claim of r does, whatever became of its lock:
// report the gap since the previous mark prev (zero: none) and settle the
// tick.
func (r *run) won(prev time.Time) {
	if !prev.IsZero() {
		r.noteGap(prev)
	}
	r.e.ticks.settled(r.tick)
}

// holdMemory runs next under the memory lock claimMemory pinned to r, and
// releases it when next returns, unless it was taken away (memoryLocker.
// forget): then it returns once the run has been told (EventLockLost).
// Only tests take a memory lock away; one taken between the claim and
// here has canceled the run's context already, so the job starts with
// its context ended, as on Redis when the lock is lost just after the
// claim (a Locker other than the memory one goes through holdPinned,
// which does not start the job then).
func (r *run) holdMemory(next step) error {
	defer r.unpinMemory()
	return next(r)
}

// claimLocker claims r's tick and, when lockTTL > 0, takes the run lock:
// the lease, or the skip of a claim lost or failed or of a lock not taken.
// It returns before the job runs, so its frame (a Claim, the Locker call)
// is off the stack while the job runs: a deeper stack than the
// goroutine's would be grown and copied in every run (stack.go).
//
//go:noinline
func (r *run) claimLocker(lockTTL time.Duration) (Lease, error) {
	s, e := r.s, r.e
	cctx, cancel := s.lockerCtx(r.ctx)
	c, err := s.cfg.locker.Claim(cctx, e.name, r.tick, lockTTL, s.cfg.instance)
	cancel()
	if err != nil || !c.Won {
		if err == nil {
			e.ticks.settled(r.tick) // the mark is at or past it
		}
		return nil, claimSkip(r, &c, err)
	}
	r.won(c.Prev)
	switch {
	case lockTTL == 0:
		return nil, nil
	case c.LockErr != nil || isNil(c.Lease):
		return nil, lockSkip(r, c.LockErr)
	}
	return c.Lease, nil
}

// noteGap reports the ticks missed between the previous claim mark prev
// and the run's tick, and keeps the gap for a CatchUp job (catchup.go).
// Ticks a run here took up and decided without claiming (switched off,
// overlap, store down), or that are on their way to their own claim, are
// reported by their own runs, as skips: they are not missed
// (ticks_taken.go). The rest of the gap is reported in stretches, one
// EventMissed each.
func (r *run) noteGap(prev time.Time) {
	if r.quiet > 0 && !prev.Before(r.tick.Add(-r.quiet)) {
		return // no tick between, known without calling Next: the common case
	}
	r.checkGap(prev)
}

// checkGap is noteGap when the tick's quiet time does not tell.
//
//go:noinline
func (r *run) checkGap(prev time.Time) {
	prev = prev.In(r.e.ticks.loc) // as stored: a spec without a zone reads the time's own
	if n := r.e.sched().Next(prev); n.IsZero() || !n.Before(r.tick) {
		return // no tick between
	}
	var buf [2]tickSpan
	var last time.Time
	for _, h := range r.e.ticks.untaken(prev, r.tick, buf[:0]) {
		if l := r.reportMissed(r.e.ticks.time(h.from), r.e.ticks.time(h.to), prev); !l.IsZero() {
			last = l
		}
	}
	if r.e.cfg.catchUp && !last.IsZero() {
		r.gap = &missedGap{prev: prev, last: last}
	}
}

// claimSkip is the skip of a claim that failed (err) or was lost.
func claimSkip(run *run, c *Claim, err error) error {
	if err != nil {
		return skip(run, ErrBackend, err, "claim tick "+fmtTick(run.tick))
	}
	return skip(run, ErrTickTaken, nil, fmt.Sprintf("tick %s: the claim mark is at tick %s, claimed by %q",
		fmtTick(run.tick), fmtTick(c.HolderTick), clip(c.Holder)))
}

// lockSkip is the skip of a won claim whose run lock was not taken.
func lockSkip(run *run, lockErr error) error {
	if errors.Is(lockErr, ErrLocked) {
		return skip(run, ErrLocked, lockErr, "")
	}
	return skip(run, ErrBackend, lockErr, "tick "+fmtTick(run.tick)+" claimed, lock not taken")
}

// reportMissed raises EventMissed when the spec names ticks strictly
// between after and before, in the gap between the claim mark prev and
// r's tick, and returns the last of them (zero when none).
func (r *run) reportMissed(after, before, prev time.Time) time.Time {
	n, first, last, capped := missedTicks(r.e.sched(), after, before)
	if n == 0 {
		return time.Time{}
	}
	count := strconv.Itoa(n)
	if capped {
		count = "at least " + count
	}
	// Err only describes them (for logs); no sentinel: the Kind says it.
	ev := r.event(EventMissed, fmt.Errorf("cronguard: ticks missed: job %q: %s tick(s) from %s to %s, before tick %s (claim mark was %s)",
		r.job, count, fmtTick(first), fmtTick(last), fmtTick(r.tick), fmtTick(prev)))
	ev.Missed, ev.MissedCapped, ev.MissedFirst, ev.MissedLast = n, capped, first, last
	r.s.emitEvent(&ev)
	return last
}

// overlapState is the local no-overlap bookkeeping of one job.
type overlapState struct {
	mu      sync.Mutex
	running int32
	waiting bool          // a queued run waits (overlapQueue)
	idle    chan struct{} // made by a waiting run; closed when running drops to 0
}

// overlapGuard applies the job's overlapPolicy within this process.
func overlapGuard(next step) step {
	return func(run *run) error {
		if err := run.e.overlap.admit(run); err != nil {
			return err
		}
		defer run.e.overlap.done()
		return next(run)
	}
}

// admit counts r in, or returns the skip of its job's overlap policy.
// A run that waited (overlapQueue) asks the kill switch again before it
// goes on (killswitch.go): an operator may have switched the job off
// meanwhile; it is then counted out again, also when the switch panics
// (a user's KillSwitch: the run is then a contained panic, see runChain).
//
//go:noinline
func (o *overlapState) admit(run *run) error {
	queued, err := o.enter(run)
	if err != nil || !queued {
		return err
	}
	admitted := false
	defer func() {
		if !admitted {
			o.done()
		}
	}()
	if err := run.switchedOff(); err != nil {
		return err
	}
	admitted = true
	return nil
}

// enter counts r in, or returns the skip of its job's overlap policy;
// under overlapQueue it waits for the runs going now (queued is then true).
func (o *overlapState) enter(run *run) (queued bool, err error) {
	policy := run.e.cfg.overlap
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running > 0 && policy != overlapAllow {
		if policy == overlapSkip || o.waiting {
			return false, skip(run, ErrOverlap, nil, "")
		}
		if err := o.wait(run.ctx); err != nil { // overlapQueue
			return false, skip(run, ErrStopped, err, "queued run")
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

// lockGuard takes the job's run lock for a manual run (no claim), whatever
// the overlap policy, so manual runs exclude each other, and holds it for
// the run.
func lockGuard(next step) step {
	return func(run *run) error {
		s, ttl := run.s, run.e.cfg.lockTTL
		actx, cancel := s.lockerCtx(run.ctx)
		lease, err := s.cfg.locker.Acquire(actx, run.job, ttl)
		cancel()
		if errors.Is(err, ErrLocked) {
			return skip(run, ErrLocked, err, "")
		}
		if err != nil {
			return skip(run, ErrBackend, err, "acquire lock")
		}
		return run.holdLease(lease, ttl, next)
	}
}

// holdLease runs next under lease, kept alive by the run's watchdog;
// losing it cancels the run with cause ErrLockLost (run.lockLost). The
// lease is released when the run ends, unless it was lost.
//
// A lease whose Locker holds it for the run (the memory locker's, see
// pinner) is pinned instead of watched: no watchdog, no extension. The
// two are functions of their own, so that the frame of the one a run
// does not use is not on its stack.
func (r *run) holdLease(lease Lease, ttl time.Duration, next step) error {
	if p, ok := lease.(pinner); ok {
		return r.holdPinned(p, next)
	}
	return r.holdWatched(lease, ttl, next)
}

// holdPinned is holdLease for a pinned lease.
func (r *run) holdPinned(p pinner, next step) error {
	if !p.pin(r) { // taken away between the claim and now: the job does not start
		return r.pinTakenAway()
	}
	defer r.unpin(p)
	r.token.Store(p.Token()) // Report.Token: what job code fences its writes with
	return next(r)
}

// pinTakenAway ends a run whose pinned lock was taken away before it
// started.
//
//go:noinline
func (r *run) pinTakenAway() error {
	err := fmt.Errorf("%w: job %q: the lock was taken away before the run started", ErrLockLost, r.job)
	r.lockLost(err)
	return err
}

// unpin ends r's pin of p, which releases the lock unless it was lost;
// if it was, it returns once the run has been told (EventLockLost).
func (r *run) unpin(p pinner) {
	if lost := p.unpin(r); lost != nil {
		<-lost
	}
}

// holdWatched is holdLease for a lease the run's watchdog extends.
//
//go:noinline
func (r *run) holdWatched(lease Lease, ttl time.Duration, next step) error {
	ctx := r.ctx
	dog := &watchdog{}
	dog.start(r, lease, ttl, r.s.cfg.budget)
	defer func() {
		if !dog.stop() {
			r.s.release(ctx, lease) // an unreleased lock expires after ttl
		}
	}()
	r.token.Store(lease.Token()) // Report.Token: what job code fences its writes with
	return next(r)
}

// release gives lease up, within the call budget even when the run's
// context has ended.
func (s *Scheduler) release(ctx context.Context, lease Lease) {
	if _, ok := s.cfg.locker.(*memoryLocker); ok {
		_ = lease.Release(ctx) // it neither blocks nor reads ctx
		return
	}
	if run, ok := ctx.(*run); ok && run.sharesBudget() {
		_ = lease.Release(s.releaseBudget.runCtx(run))
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.budget)
	defer cancel()
	_ = lease.Release(rctx)
}

// lockLost is called by the run's watchdog when its lease could not be
// extended: it raises EventLockLost and cancels the run.
func (r *run) lockLost(err error) {
	cause := err
	if !errors.Is(err, ErrLockLost) { // a Redis error, say
		cause = fmt.Errorf("%w: job %q: %w", ErrLockLost, r.job, err)
	}
	ev := r.event(EventLockLost, cause)
	r.s.emitEvent(&ev)
	r.cancel(cause)
}

// timeoutGuard bounds the rest of the run by the job's Timeout, canceling
// it with cause ErrTimeout.
func timeoutGuard(next step) step {
	return func(run *run) error {
		if run.e.cfg.timeout <= 0 {
			return next(run)
		}
		return timeoutRun(run, next)
	}
}

// timeoutRun is timeoutGuard for a job with a Timeout: its own function,
// so that the frame of a run without one stays small (see stack.go).
//
//go:noinline
func timeoutRun(run *run, next step) error {
	d := run.e.cfg.timeout
	ctx, cancel := context.WithTimeoutCause(run.ctx, d, fmt.Errorf("%w: job %q after %s", ErrTimeout, run.job, d))
	defer cancel()
	return under(ctx, run, next)
}

// runJob is innermost: the run has passed every guard and starts now.
func runJob(run *run) error {
	run.begin()
	if run.manual != nil && run.manual.items != nil {
		return runItems(run)
	}
	var err error
	if f, ok := run.e.job.(JobFunc); ok {
		err = f(run.ctx) // JobFunc.Run, by hand: one frame less under the job
	} else {
		err = run.e.job.Run(run.ctx)
	}
	run.noteCause()
	return err
}

// runItems is runJob for RunManually's items.
//
//go:noinline
func runItems(run *run) error {
	err := run.e.batch().runItems(run.ctx, run.items())
	run.noteCause()
	return err
}

// noteCause keeps why the job's context ended, if it did (Report.Err).
func (r *run) noteCause() {
	if r.ctx.Err() != nil {
		r.cause = context.Cause(r.ctx)
	}
}

func fmtTick(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
