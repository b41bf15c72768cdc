package cronguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
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
// (see entry.noteDecided); this covers the ticks that fell while its own
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

// tickBody runs the body of a won tick. For a CatchUp job whose claim found
// missed ticks (runFrom(ctx).gapLast not zero; gapPrev is the claim mark it
// moved from), it first runs the one catch-up run, then the tick, under
// the run lock the claim took.
func (s *Scheduler) tickBody(ctx context.Context, e *entry) error {
	st := runFrom(ctx)
	if !e.cfg.catchUp || st.trigger != TriggerSchedule {
		return s.body(ctx, e)
	}
	tick, claimed := st.tick, time.Now()
	defer func() { e.catchUp.ran(tick, tick.Add(time.Since(claimed))) }()
	if st.gapLast.IsZero() {
		return s.body(ctx, e)
	}
	if why := e.catchUp.declined(st.gapPrev, st.gapLast); why != "" {
		s.logAttrs(slog.LevelInfo, "cronguard: no catch-up run", slog.String("job", e.name),
			slog.Time("tick", tick), slog.String("reason", why))
		return s.body(ctx, e)
	}
	s.runCatchUp(ctx, e, st.gapLast)
	if err := s.afterCatchUp(ctx, e, tick); err != nil {
		return err
	}
	return s.body(ctx, e)
}

// runCatchUp runs the catch-up run of e, with tick last (the last missed
// tick), through the user middleware and the body (timeout and hard kill,
// as every run), a panic contained: it gets its own Report and events,
// with Trigger TriggerCatchUp. It runs below the tick's run, under its
// lock: it ends when that run's context ends.
func (s *Scheduler) runCatchUp(ctx context.Context, e *entry, last time.Time) {
	cu := &run{s: s, e: e, job: e.name, trigger: TriggerCatchUp, tick: last}
	cu.Context, cu.cancel = context.WithCancelCause(ctx)
	defer cu.cancel(nil)
	cu.finish(s.catchUpChain(cu, e))
}

// catchUpChain runs cu through the user middleware around the body,
// turning a panic into a failed run. The middleware is wrapped for each
// catch-up run (one per gap at most, so rarely), as Register wraps the
// others.
func (s *Scheduler) catchUpChain(cu *run, e *entry) (err error) {
	defer func() {
		if r := recover(); r != nil {
			cu.stack = string(debug.Stack())
			err = fmt.Errorf("%w: job %q: catch-up run: %v", ErrPanic, e.name, r)
		}
	}()
	var j Job = JobFunc(func(ctx context.Context) error { return s.body(ctx, e) })
	for i, mw := range slices.Backward(s.cfg.middleware) {
		if j, err = wrap(mw, j); err != nil {
			return fmt.Errorf("job %q: catch-up run: middleware %d: %w", e.name, i, err)
		}
	}
	return j.Run(cu)
}

// afterCatchUp decides whether the tick runs after its catch-up run: not
// when the run's context ended meanwhile (the lock was lost, the scheduler
// stops), nor when the job was switched off during the catch-up run.
func (s *Scheduler) afterCatchUp(ctx context.Context, e *entry, tick time.Time) error {
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		err := fmt.Errorf("job %q: tick %s not run after its catch-up run: %w", e.name, fmtTick(tick), cause)
		if errors.Is(cause, ErrLockLost) {
			return skip(SkipBackend, err)
		}
		return skip(SkipStopped, err)
	}
	return s.checkSwitch(ctx, e)
}
