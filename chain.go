package cronguard

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// chain builds the guard chain of e for one trigger, outermost first:
//
//	scheduled: recover → middleware → kill switch → tick claim → overlap → run lock → timeout → job
//	manual:    recover → middleware → run lock → timeout → job
//
// Each guard is a Middleware: it runs next or returns a skip.
func (s *Scheduler) chain(e *entry, trig Trigger) (Job, error) {
	j := s.startGuard(e)
	if e.cfg.hardKill && trig == TriggerSchedule {
		j = s.hardKillGuard(e)(j)
	}
	if e.cfg.timeout > 0 {
		j = timeoutGuard(e)(j)
	}
	if trig == TriggerManual || e.cfg.overlap != OverlapAllow {
		j = s.lockGuard(e)(j)
	}
	if trig == TriggerSchedule {
		j = s.overlapGuard(e)(j)
		j = s.claimGuard(e)(j)
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
// the Locker. The claim lives for the tick's interval, at least the lock TTL.
func (s *Scheduler) claimGuard(e *entry) Middleware {
	return func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			tick := TickFrom(ctx)
			ttl := max(interval(e.sched, tick), e.cfg.lockTTL)
			cctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
			ok, holder, err := s.cfg.locker.Claim(cctx, e.name, tick, ttl, s.cfg.instance)
			cancel()
			if err != nil {
				return skip(SkipBackend, fmt.Errorf("%w: job %q: claim tick %s: %w", ErrBackend, e.name, fmtTick(tick), err))
			}
			if !ok {
				return skip(SkipTickTaken, fmt.Errorf("%w: job %q: tick %s claimed by %q", ErrTickTaken, e.name, fmtTick(tick), holder))
			}
			return next.Run(ctx)
		})
	}
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

// lockGuard holds the job's run lock for the run and keeps it alive with the
// watchdog; losing it cancels the run with cause ErrLockLost.
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
		})
	}
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
