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

// chain builds the guard chain of e for one trigger, outermost first:
//
//	scheduled: recover → middleware → kill switch → overlap → tick claim + run lock → timeout → job
//	manual:    recover → middleware → run lock → timeout → job
//
// The claim and the run lock are one call to the Locker (one round trip on
// Redis), after the checks that cost nothing: the kill switch (a
// switched-off job claims nothing) and the local overlap. Each guard is a
// Middleware: it runs next or returns a skip.
func (s *Scheduler) chain(e *entry, trig Trigger) (Job, error) {
	j := s.startGuard(e)
	if e.cfg.hardKill && trig == TriggerSchedule {
		j = s.hardKillGuard(e)(j)
	}
	if e.cfg.timeout > 0 {
		j = timeoutGuard(e)(j)
	}
	if trig == TriggerManual {
		j = s.lockGuard(e)(j) // whatever the overlap policy: manual runs exclude each other
	} else {
		j = s.claimGuard(e)(j)
		j = s.overlapGuard(e)(j)
		j = s.killGuard(e)(j)
	}
	for i, mw := range slices.Backward(s.cfg.middleware) {
		var err error
		if j, err = wrap(mw, j); err != nil {
			return nil, fmt.Errorf("job %q: middleware %d: %w", e.name, i, err)
		}
	}
	return s.recoverGuard(e)(j), nil
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

// skipError is returned by a guard that did not let the run start.
type skipError struct {
	reason SkipReason
	err    error
}

func (e *skipError) Error() string { return e.err.Error() }
func (e *skipError) Unwrap() error { return e.err }

func skip(reason SkipReason, err error) error { return &skipError{reason, err} }

// recoverGuard turns a panic anywhere below into a failed run.
func (s *Scheduler) recoverGuard(e *entry) Middleware {
	return func(next Job) Job {
		return JobFunc(func(ctx context.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					st := runFrom(ctx)
					st.stack = string(debug.Stack())
					err = fmt.Errorf("%w: job %q: %v", ErrPanic, e.name, r)
				}
			}()
			return next.Run(ctx)
		})
	}
}

// killGuard skips the run when the job's flag is off.
func (s *Scheduler) killGuard(e *entry) Middleware {
	return func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			if err := s.checkSwitch(ctx, e); err != nil {
				return err
			}
			return next.Run(ctx)
		})
	}
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

// claimGuard lets one run per tick through, across every instance sharing
// the Locker: it moves the job's claim mark to the tick and, in the same
// call, takes the run lock (not for OverlapAllow, which runs unlocked). The
// winner of a tick reports the ticks missed since the mark (EventMissed)
// and, with CatchUp, runs one catch-up run for them first (catchup.go);
// a won tick whose lock is held (a run of an earlier tick still goes) is
// skipped as locked, and stays claimed.
func (s *Scheduler) claimGuard(e *entry) Middleware {
	lockTTL := e.cfg.lockTTL
	if e.cfg.overlap == OverlapAllow {
		lockTTL = 0
	}
	return func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			tick := TickFrom(ctx)
			cctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
			c, err := s.cfg.locker.Claim(cctx, e.name, tick, lockTTL, s.cfg.instance)
			cancel()
			if err != nil {
				return skip(SkipBackend, fmt.Errorf("%w: job %q: claim tick %s: %w", ErrBackend, e.name, fmtTick(tick), err))
			}
			if !c.Won {
				return skip(SkipTickTaken, fmt.Errorf("%w: job %q: tick %s: the claim mark is at tick %s, claimed by %q",
					ErrTickTaken, e.name, fmtTick(tick), fmtTick(c.HolderTick), clip(c.Holder)))
			}
			var lastMissed time.Time
			if !c.Prev.IsZero() {
				// Ticks this process fired and skipped before claiming
				// (switched off, overlap, store down) were decided, and
				// reported as skips: they are not missed.
				lastMissed = s.reportMissed(ctx, e, later(c.Prev, e.decidedTick()), tick)
			}
			job := next
			if e.cfg.catchUp {
				job = s.catchUpGuard(e, c.Prev, lastMissed, next) // catchup.go
			}
			switch {
			case lockTTL == 0:
				return job.Run(ctx)
			case errors.Is(c.LockErr, ErrLocked):
				return skip(SkipLocked, c.LockErr)
			case c.LockErr != nil || isNil(c.Lease):
				return skip(SkipBackend, fmt.Errorf("%w: job %q: tick %s claimed, lock not taken: %w", ErrBackend, e.name, fmtTick(tick), c.LockErr))
			}
			return s.holdLease(ctx, e, c.Lease, lockTTL, job)
		})
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// reportMissed raises EventMissed when the spec names ticks strictly
// between the previous claim mark and tick, and returns the last of them
// (zero when none).
func (s *Scheduler) reportMissed(ctx context.Context, e *entry, prev, tick time.Time) time.Time {
	n, first, last, capped := missedTicks(e.sched, prev, tick)
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
	s.emit(ev)
	return last
}

// overlapState is the local no-overlap bookkeeping of one job.
type overlapState struct {
	mu      sync.Mutex
	running int
	waiting bool          // a queued run waits (OverlapQueue)
	idle    chan struct{} // closed when running drops to 0
}

// overlapGuard applies the job's OverlapPolicy within this process. A run
// that waited (OverlapQueue) asks the kill switch again before it starts: an
// operator may have switched the job off meanwhile.
func (s *Scheduler) overlapGuard(e *entry) Middleware {
	o := &e.overlap
	return func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			o.mu.Lock()
			queued := false
			if o.running > 0 && e.cfg.overlap != OverlapAllow {
				if e.cfg.overlap == OverlapSkip || o.waiting {
					o.mu.Unlock()
					return skip(SkipOverlap, fmt.Errorf("%w: job %q", ErrOverlap, e.name))
				}
				if err := o.wait(ctx); err != nil { // OverlapQueue; returns locked
					o.mu.Unlock()
					return skip(SkipStopped, fmt.Errorf("%w: job %q: queued run: %w", ErrStopped, e.name, err))
				}
				queued = true
			}
			if o.running == 0 {
				o.idle = make(chan struct{})
			}
			o.running++
			o.mu.Unlock()
			defer o.done()
			if queued {
				if err := s.checkSwitch(ctx, e); err != nil {
					return err
				}
			}
			return next.Run(ctx)
		})
	}
}

// wait is called with o.mu held and returns with it held, after the runs
// going now have ended or ctx is done.
func (o *overlapState) wait(ctx context.Context) error {
	o.waiting = true
	defer func() { o.waiting = false }()
	for o.running > 0 {
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
	if o.running--; o.running == 0 {
		close(o.idle)
	}
}

// lockGuard takes the job's run lock for a manual run (no claim) and holds
// it for the run.
func (s *Scheduler) lockGuard(e *entry) Middleware {
	return func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			ttl := e.cfg.lockTTL
			actx, cancel := context.WithTimeout(ctx, s.cfg.budget)
			lease, err := s.cfg.locker.Acquire(actx, e.name, ttl)
			cancel()
			if errors.Is(err, ErrLocked) {
				return skip(SkipLocked, err)
			}
			if err != nil {
				return skip(SkipBackend, fmt.Errorf("%w: job %q: acquire lock: %w", ErrBackend, e.name, err))
			}
			return s.holdLease(ctx, e, lease, ttl, next)
		})
	}
}

// holdLease runs next under lease, kept alive by the watchdog; losing it
// cancels the run with cause ErrLockLost. The lease is released when the
// run ends, unless it was lost.
func (s *Scheduler) holdLease(ctx context.Context, e *entry, lease Lease, ttl time.Duration, next Job) error {
	runCtx, cancelRun := context.WithCancelCause(ctx)
	dog := startWatchdog(lease, ttl, s.cfg.budget, func(err error) {
		cause := err
		if !errors.Is(err, ErrLockLost) { // a Redis error, say
			cause = fmt.Errorf("%w: job %q: %w", ErrLockLost, e.name, err)
		}
		s.emit(runFrom(ctx).event(EventLockLost, cause))
		cancelRun(cause)
	})
	defer func() {
		if !dog.stop() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.budget)
			_ = lease.Release(rctx) // an unreleased lock expires after ttl
			cancel()
		}
		cancelRun(nil)
	}()
	return next.Run(context.WithValue(runCtx, leaseKey{}, lease))
}

// timeoutGuard bounds the run by the job's Timeout.
func timeoutGuard(e *entry) Middleware {
	return func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			ctx, cancel := context.WithTimeoutCause(ctx, e.cfg.timeout,
				fmt.Errorf("%w: job %q after %s", ErrTimeout, e.name, e.cfg.timeout))
			defer cancel()
			return next.Run(ctx)
		})
	}
}

// startGuard is innermost: the run has passed every guard and starts now.
func (s *Scheduler) startGuard(e *entry) Job {
	return JobFunc(func(ctx context.Context) error {
		st := runFrom(ctx)
		st.begin()
		s.emit(st.event(EventStarted, nil))
		var err error
		if st.items != nil {
			err = e.batch.runItems(ctx, st.items)
		} else {
			err = e.job.Run(ctx)
		}
		if ctx.Err() != nil {
			st.cause = context.Cause(ctx)
		}
		return err
	})
}

func fmtTick(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
