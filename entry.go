package cronguard

import (
	"fmt"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// entry is one registered job with its schedule, chains and live state.
type entry struct {
	name  string
	spec  string
	sched cron.Schedule
	job   Job
	batch batchJob // job as a Batch, or nil
	cfg   jobConfig
	id    cron.EntryID
	ticks *tickSchedule

	scheduled Job // the guard chain for cron ticks
	manual    Job // the guard chain for RunManually

	overlap overlapState
	catchUp catchUpState // catchup.go

	mu      sync.Mutex
	last    *Report
	decided time.Time // the latest scheduled tick this process ran or skipped
}

// noteDecided records that this process fired tick and decided it: ran
// it, or skipped it (switched off, overlap, store down, taken elsewhere).
func (e *entry) noteDecided(tick time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if tick.After(e.decided) {
		e.decided = tick
	}
}

// decidedTick returns the latest tick noted by noteDecided.
func (e *entry) decidedTick() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.decided
}

func (e *entry) setLast(r Report) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.last = &r
}

func (e *entry) lastReport() *Report {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.last == nil {
		return nil
	}
	r := *e.last
	return &r
}

// fire is what robfig/cron calls at each tick of e.
func (s *Scheduler) fire(e *entry) { s.fireAt(e, time.Now()) }

// fireAt runs the tick that a fire at now stands for (see tickSchedule.take),
// or reports the fire as skipped (SkipTickTaken) when it stands for a tick
// this process has run already.
func (s *Scheduler) fireAt(e *entry, now time.Time) {
	tick, err := e.ticks.take(now)
	if err != nil {
		err = skip(SkipTickTaken, fmt.Errorf("%w: job %q: %w", ErrTickTaken, e.name, err))
		s.emit(Event{Kind: EventSkipped, Job: e.name, Trigger: TriggerSchedule, Tick: tick, Skip: SkipTickTaken, Err: err})
		return
	}
	s.execute(s.base, e, TriggerSchedule, tick, nil)
}

// tickSchedule wraps a schedule to remember the ticks robfig/cron asked for,
// because robfig/cron calls a job without saying which tick fired it. It
// calls Next once at start and once after each fire.
//
// A fire stands for the latest tick the spec names at or before the moment
// it runs: usually the tick robfig/cron meant, and after a pause (a frozen
// process, a long GC, a VM migration) the latest one that came due while it
// was frozen, never a time the spec does not name. The ticks a fire hands
// out grow strictly: a fire whose latest due tick was handed out already
// (robfig/cron fires a stale tick on waking, then again) is skipped, so one
// process never runs one tick twice.
type tickSchedule struct {
	inner cron.Schedule

	mu      sync.Mutex
	pending []time.Time // ticks robfig/cron asked for and has not fired yet
	prev    time.Time   // the last tick handed out
}

// Next implements cron.Schedule.
func (t *tickSchedule) Next(now time.Time) time.Time {
	n := t.inner.Next(now)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !n.IsZero() && n.After(t.prev) {
		t.pending = append(t.pending, n)
	}
	return n
}

// take returns the tick a fire at now stands for: the latest tick of the
// spec at or before now. It fails, with that tick, when this process handed
// it out already or when the spec names no tick before now.
func (t *tickSchedule) take(now time.Time) (time.Time, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var hint time.Time // the latest remembered tick that is due
	keep := t.pending[:0]
	for _, p := range t.pending {
		if p.After(now) {
			keep = append(keep, p)
		} else if p.After(hint) {
			hint = p
		}
	}
	t.pending = keep
	if hint.IsZero() {
		hint = t.prev // a tick, unless nothing ran yet
	}
	tick := latestTick(t.inner, now, hint)
	switch {
	case tick.IsZero():
		return time.Time{}, fmt.Errorf("a fire at %s: the spec names no tick in the %s before it", fmtTick(now), maxLookBack)
	case !tick.After(t.prev):
		return tick, fmt.Errorf("a fire at %s stands for tick %s, which this instance has run already", fmtTick(now), fmtTick(tick))
	}
	t.prev = tick
	return tick, nil
}

func (t *tickSchedule) last() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.prev
}

// maxLookBack bounds how far back latestTick looks for a tick when it has
// no hint: robfig/cron gives up on a spec after five years too.
const maxLookBack = 5 * 366 * 24 * time.Hour

// latestTick returns the latest tick of s at or before now, or zero when
// there is none within maxLookBack. hint, when not zero and not after now,
// should be a tick of s; the nearer it is to now, the cheaper the call: with
// the tick just before now it costs one call to s.Next, and at most about
// 100 otherwise (robfig/cron has no Prev, so it searches Next).
func latestTick(s cron.Schedule, now, hint time.Time) time.Time {
	lo := hint // Next(lo) <= now is what the search keeps true
	if !lo.IsZero() && lo.After(now) {
		lo = time.Time{}
	}
	if lo.IsZero() {
		for d := time.Second; ; d *= 2 {
			if d > maxLookBack {
				return time.Time{}
			}
			if n := s.Next(now.Add(-d)); !n.IsZero() && !n.After(now) {
				lo = now.Add(-d)
				break
			}
		}
	} else if n := s.Next(lo); n.IsZero() || n.After(now) {
		return lo // the hint is the latest tick
	}
	// Next(lo) <= now < Next(now): binary search for the last instant whose
	// Next is still at or before now; its Next is the tick.
	hi := now
	for hi.Sub(lo) > time.Nanosecond {
		mid := lo.Add(hi.Sub(lo) / 2)
		if n := s.Next(mid); !n.IsZero() && !n.After(now) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return s.Next(lo)
}

// maxMissedWalk bounds the ticks missedTicks counts one by one.
const maxMissedWalk = 10_000

// missedTicks counts the ticks of s strictly between after and before, up
// to maxMissedWalk (capped is then set: there are at least n), and returns
// the first and last of them. n is 0 when there is none.
func missedTicks(s cron.Schedule, after, before time.Time) (n int, first, last time.Time, capped bool) {
	for t := s.Next(after); !t.IsZero() && t.Before(before); t = s.Next(t) {
		if n == maxMissedWalk {
			return n, first, latestTick(s, before.Add(-time.Nanosecond), last), true
		}
		if n == 0 {
			first = t
		}
		n, last = n+1, t
	}
	return n, first, last, false
}
