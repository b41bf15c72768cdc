package cronguard

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
)

// entry is one registered job with its schedule and live state. It is
// what every registered job costs while it waits for its ticks, so it holds
// no closures: the guard chain is code (guards.go), and only user
// middleware, when there is some, adds a chain of its own.
type entry struct {
	s    *Scheduler
	name string
	spec string
	job  Job
	cfg  jobConfig
	// ticks is the Schedule robfig/cron holds for the job; ticks.inner is
	// the parsed spec.
	ticks tickSchedule

	overlap overlapState
	active  atomic.Int32 // runs going now in this process
	stack   stackNeed    // whether its scheduled runs need a grown stack (stack.go)
	extra   *entryExtra  // nil unless the job has middleware or CatchUp

	// last is the job's last report: allocated by the first run that keeps
	// one here, then reused; or inRing. Guarded by ticks.mu.
	last *Report

	// The job's state in the memory Locker and the memory history, found
	// by name on the job's first run and kept: a run then reads its own
	// instead of looking it up in each store's map (whose nodes, among
	// 1,000 jobs', are cache misses). Nil until then, and for other stores.
	memJob atomic.Pointer[memJob]
	ring   atomic.Pointer[historyRing]
}

// entryExtra holds what only some jobs have, out of the entry every job
// pays for.
type entryExtra struct {
	// chain is the user middleware around the guards (WithMiddleware), for
	// both triggers; nil without middleware.
	chain Job
	// catchUp is the catch-up bookkeeping (catchup.go); nil unless the job
	// has CatchUp.
	catchUp *catchUpState
}

// middleware is the user middleware around the job's guards, or nil.
func (e *entry) middleware() Job {
	if e.extra == nil {
		return nil
	}
	return e.extra.chain
}

// catchUps is the job's catch-up bookkeeping, or nil without CatchUp.
func (e *entry) catchUps() *catchUpState {
	if e.extra == nil {
		return nil
	}
	return e.extra.catchUp
}

// sched is the job's parsed spec.
func (e *entry) sched() cron.Schedule { return e.ticks.inner }

// batch returns the job as a Batch, or nil.
func (e *entry) batch() batchJob {
	b, _ := e.job.(batchJob)
	return b
}

// setLast keeps r as the job's last report, in the one Report the entry
// keeps: lastReport hands out copies, so overwriting it is safe.
func (e *entry) setLast(r *Report) {
	e.ticks.mu.Lock()
	defer e.ticks.mu.Unlock()
	if e.last == nil || e.last == inRing {
		e.last = new(Report)
	}
	*e.last = *r
}

// inRing is entry.last when the job's last report is the newest run the
// memory history's ring added (lastIsInRing). The Report last held is
// dropped then: a job whose runs end one way, then the other (a failure
// between successes), allocates one at the switch.
var inRing = new(Report)

// lastIsInRing says that the job's last report is the newest run the
// memory history's ring added (appendDone): the run's Report is then
// copied once, into the ring, not also into the entry.
func (e *entry) lastIsInRing() {
	e.ticks.mu.Lock()
	defer e.ticks.mu.Unlock()
	e.last = inRing
}

// lastReport is a copy of the job's last report, or nil.
func (e *entry) lastReport() *Report {
	e.ticks.mu.Lock()
	defer e.ticks.mu.Unlock()
	switch e.last {
	case inRing:
		return e.ring.Load().lastDone()
	case nil:
		return nil
	}
	r := *e.last
	return &r
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
	loc   *time.Location // of the ticks handed out: robfig/cron's, the Scheduler's

	mu sync.Mutex // also guards entry.last
	// pending holds the latest ticks robfig/cron asked for and has not
	// fired yet, oldest first, in Unix nanoseconds (a time.Time is three
	// times the size, and every registered job carries these): two slots,
	// since only the latest due one serves take as a hint and robfig/cron
	// asks once per fire. When a third comes the oldest goes; take then
	// finds its tick by search, which is slower, never different.
	pending  [2]int64
	npending uint8
	hasPrev  bool
	// quiet[i] is how long before pending[i] the spec names no tick, in
	// whole milliseconds (0: not known); see Next. With it a won claim
	// finds no gap without calling the spec's Next (run.noteGap).
	quiet [2]uint32
	prev  int64 // the last tick handed out, when hasPrev
	// spans are the ticks runs here took up (handed out by take, or given
	// to RunTick) that no claim answer has put behind the claim mark yet,
	// oldest first (ticks_taken.go).
	spans []tickSpan
}

func (t *tickSchedule) time(ns int64) time.Time { return time.Unix(0, ns).In(t.loc) }

// prevTime is the last tick handed out, or zero.
func (t *tickSchedule) prevTime() time.Time {
	if !t.hasPrev {
		return time.Time{}
	}
	return t.time(t.prev)
}

// Next implements cron.Schedule.
//
// It remembers the tick it answers with how long before it the spec names
// no other tick (quiet). The spec's Next answers the first tick after now,
// so there is none between now and it; and robfig/cron asks right after
// it fired the tick before: when a tick remembered here lies less than
// minTickGap before now, there is none between that tick and now either,
// and so none between the two ticks.
func (t *tickSchedule) Next(now time.Time) time.Time {
	n := t.inner.Next(now)
	if n.IsZero() {
		return n
	}
	ns := n.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.hasPrev || ns > t.prev {
		from := now.UnixNano()
		if before, ok := t.tickBefore(from); ok && from-before < int64(minTickGap) {
			from = before
		}
		if int(t.npending) == len(t.pending) {
			t.pending[0], t.quiet[0], t.npending = t.pending[1], t.quiet[1], 1
		}
		t.pending[t.npending] = ns
		t.quiet[t.npending] = quietMs(time.Duration(ns - from))
		t.npending++
	}
	return n
}

// tickBefore is the latest tick remembered (pending, or the last handed
// out) at or before ns; t.mu is held.
func (t *tickSchedule) tickBefore(ns int64) (tick int64, ok bool) {
	if t.hasPrev && t.prev <= ns {
		tick, ok = t.prev, true
	}
	for _, p := range t.pending[:t.npending] {
		if p <= ns && (!ok || p > tick) {
			tick, ok = p, true
		}
	}
	return tick, ok
}

// quietMs is d in whole milliseconds, for tickSchedule.quiet: 0 when it
// does not fit (not known).
func quietMs(d time.Duration) uint32 {
	ms := d / time.Millisecond
	if ms <= 0 || ms > math.MaxUint32 {
		return 0
	}
	return uint32(ms)
}

// minTickGap is the least time between two ticks of any spec parseSpec
// makes: robfig/cron's specs name whole seconds (in zones whose offsets
// are whole seconds), and @every needs at least 1s.
const minTickGap = time.Second

// take returns the tick a fire at now stands for: the latest tick of the
// spec at or before now. It fails, with that tick, when this process handed
// it out already or when the spec names no tick before now. quiet is how
// long before the tick the spec is known to name none (0: not known).
//
// A fire less than minTickGap after the latest remembered tick that is due
// stands for that tick, with no call to the spec's Next: no other tick can
// lie between them. That is every fire robfig/cron makes on time, and it
// keeps Next's deep frames off the run's stack (see stack.go).
func (t *tickSchedule) take(now time.Time) (tick time.Time, quiet time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	nowNs := now.UnixNano()
	var hint time.Time // the latest remembered tick that is due
	due, dueQuiet, hasDue, kept := int64(0), uint32(0), false, uint8(0)
	for i, p := range t.pending[:t.npending] {
		if p > nowNs {
			t.pending[kept], t.quiet[kept] = p, t.quiet[i]
			kept++
		} else if !hasDue || p > due {
			due, dueQuiet, hasDue = p, t.quiet[i], true
		}
	}
	t.npending = kept
	switch {
	case hasDue && nowNs-due < int64(minTickGap):
		tick = t.time(due)
	case hasDue:
		hint = t.time(due)
	case t.hasPrev:
		hint = t.time(t.prev) // a tick
	}
	if tick.IsZero() {
		tick = latestTick(t.inner, now, hint)
	}
	if hasDue && tick.UnixNano() == due {
		quiet = time.Duration(dueQuiet) * time.Millisecond
	}
	switch {
	case tick.IsZero():
		return time.Time{}, 0, fmt.Errorf("a fire at %s: the spec names no tick in the %s before it", fmtTick(now), maxLookBack)
	case t.hasPrev && tick.UnixNano() <= t.prev:
		return tick, 0, fmt.Errorf("a fire at %s stands for tick %s, which this instance has run already", fmtTick(now), fmtTick(tick))
	}
	t.prev, t.hasPrev = tick.UnixNano(), true
	t.taken(t.prev)
	return tick, quiet, nil
}

func (t *tickSchedule) last() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.prevTime()
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
