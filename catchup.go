package cronguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Catch-up (the CatchUp job option): the winner of the first tick after a
// gap of missed ticks runs one catch-up run for all of them, then the tick
// itself, under the run lock its claim took. Only the winner of a tick sees
// the gap (the claim mark moves once), so the catch-up runs once across
// instances; and it is one run whatever the gap's size.

// catchUpState is what this instance knows of a CatchUp job's recent runs.
// Ticks it fired and skipped (switched off, overlap) are not missed at all
// (see ticks_taken.go); this covers the ticks that fell while its own
// run of the previous tick was going and were never fired, such as ticks
// given by hand (RunTick).
type catchUpState struct {
	mu      sync.Mutex
	ranTick time.Time // the latest tick run here
	// ranEnd is when the run of ranTick ended, on the ticks' clock: its
	// tick plus how long it took from its claim. Real fires start at their
	// tick, give or take the claim's latency; ticks given by hand (RunTick)
	// are compared on their own clock, not with time.Now.
	ranEnd time.Time
}

// ran notes that the run of tick (after its catch-up run, if any) ended
// here at end (on the ticks' clock).
func (c *catchUpState) ran(tick, end time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !tick.Before(c.ranTick) {
		c.ranTick, c.ranEnd = tick, end
	}
}

// declined says why the gap after the claim mark prev, whose last missed
// tick is last, is not caught up here; "" when it is.
func (c *catchUpState) declined(prev, last time.Time) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ranTick.Equal(prev) && last.Before(c.ranEnd) {
		// Nobody claimed them because this instance was busy with prev
		// (the default overlap policy); the other instances, if any, were down.
		return fmt.Sprintf("the missed ticks fell while this instance's run of tick %s was going (it ended at %s)",
			fmtTick(prev), fmtTick(c.ranEnd))
	}
	return ""
}

// catchUpGuard runs the catch-up run of a CatchUp job whose claim found
// missed ticks (r.gap; its prev is the claim mark it moved from) before
// the rest of the tick's chain, under the run lock the claim took; then
// the tick, unless the catch-up run saw it switched off or lost its lock.
func catchUpGuard(next step) step {
	return func(run *run) error {
		if !run.e.cfg.catchUp {
			return next(run)
		}
		return catchUpTick(run, next)
	}
}

// catchUpTick is catchUpGuard for a CatchUp job. It is its own function,
// not inlined, so that the guard's frame, on the stack of every run, stays
// small: a deeper stack than the goroutine's first would be grown and
// copied in every run (see stack.go).
//
//go:noinline
func catchUpTick(run *run, next step) error {
	e := run.e
	tick, claimed := run.tick, time.Now()
	defer func() { e.catchUps().ran(tick, tick.Add(time.Since(claimed))) }()
	if run.gap == nil {
		return next(run)
	}
	if why := e.catchUps().declined(run.gap.prev, run.gap.last); why != "" {
		run.s.logAttrs(slog.LevelInfo, "cronguard: no catch-up run", slog.String("job", e.name),
			slog.Time("tick", tick), slog.String("reason", why))
		return next(run)
	}
	run.runCatchUp()
	if err := run.afterCatchUp(); err != nil {
		return err
	}
	return next(run)
}

// runCatchUp runs the catch-up run of r's job, with tick r.gap.last (the
// last missed tick), through the user middleware and catchUpChain, a panic
// contained: it gets its own Report and events, with Trigger
// TriggerCatchUp. It runs below the tick's run, under its lock: it ends
// when that run's context ends.
func (r *run) runCatchUp() {
	cu := &run{s: r.s, e: r.e, job: r.job, trigger: TriggerCatchUp, tick: r.gap.last}
	cu.token.Store(r.token.Load()) // under the tick's lock: its fencing token
	cu.Context, cu.cancel = context.WithCancelCause(r.ctx)
	defer cu.cancel(nil)
	cu.finish(cu.runChain())
}

// afterCatchUp decides whether the tick runs after its catch-up run: not
// when the run's context ended meanwhile (the lock was lost, the scheduler
// stops), nor when the job was switched off during the catch-up run.
func (r *run) afterCatchUp() error {
	if r.ctx.Err() != nil {
		cause := context.Cause(r.ctx)
		detail := "tick " + fmtTick(r.tick) + " not run after its catch-up run"
		if errors.Is(cause, ErrLockLost) {
			return skip(r, ErrBackend, cause, detail)
		}
		return skip(r, ErrStopped, cause, detail)
	}
	return r.switchedOff()
}
