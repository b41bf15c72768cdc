package cronguard

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNotATick: Scheduler.RunTick was given a time that the job's spec does
// not name (scheduled runs only ever get such times, see ReportFrom).
var ErrNotATick = errors.New("cronguard: not a tick of the job's spec")

// RunTick runs one scheduled tick of the job now, through the whole
// scheduled guard chain, as if cron had fired it at tick: kill switch,
// no-overlap, tick claim and run lock (the claim mark moves to tick, and
// the ticks missed since the mark are reported, and caught up with
// CatchUp), timeout. It is meant for tests (package cronguardtest wraps
// it): a unit test runs a job's tick without waiting for cron, and the
// Scheduler need not be started. RunTick does not move what JobInfo.Prev
// reports (the last tick cron fired here).
//
// tick must be a time the spec names, in any location (ReportFrom(ctx, nil).Tick gives it
// back as given): otherwise RunTick
// runs nothing and returns an error wrapping ErrNotATick that names the
// spec's ticks around it. An unknown job is ErrUnknownJob.
//
// As with RunManually, the returned error is otherwise Report.Err: nil when
// the run did its work, the skip's error when it did not start
// (a *SkipError; Report.Outcome names why).
func (s *Scheduler) RunTick(ctx context.Context, name string, tick time.Time) (Report, error) {
	e, err := s.lookup(name)
	if err != nil {
		return Report{Job: name, Trigger: TriggerSchedule, Tick: tick, Err: err}, err
	}
	t, err := specTick(e, tick)
	if err != nil {
		return Report{Job: name, Trigger: TriggerSchedule, Tick: tick, Err: err}, err
	}
	rep := s.execute(ctx, e, TriggerSchedule, t, nil)
	return rep, rep.Err
}

// specTick returns tick when the spec names it, or an ErrNotATick naming
// the ticks around it.
//
// It reads tick in the Scheduler's location, as cron's fires are: robfig/cron
// reads a spec without a zone, on a Scheduler in time.Local, in the
// location of the time it is given.
func specTick(e *entry, tick time.Time) (time.Time, error) {
	at := tick.In(e.ticks.loc)
	if t := e.sched().Next(at.Add(-time.Nanosecond)); !tick.IsZero() && t.Equal(tick) {
		return tick, nil
	}
	around := ""
	if !tick.IsZero() {
		if prev := latestTick(e.sched(), at, time.Time{}); !prev.IsZero() {
			around += "; the tick before it is " + fmtTick(prev)
		}
		if next := e.sched().Next(at); !next.IsZero() {
			around += "; the tick after it is " + fmtTick(next)
		}
	}
	return time.Time{}, fmt.Errorf("%w: job %q: %s is not a tick of %q%s", ErrNotATick, e.name, fmtTick(tick), clip(e.spec), around)
}
