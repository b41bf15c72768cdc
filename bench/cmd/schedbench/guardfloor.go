package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
)

// The guard floor: robfig/cron whose every job, at each fire, does by hand
// the least that a guarded run on memory backends must do before and after
// its body, with nothing general about it: no interfaces, no options, no
// events, no Report, no registry. It bounds from below what any library
// keeping cronguard's promises in one process can cost over robfig/cron:
//
//   - the tick: one call of the spec's Next, from a second before (robfig
//     does not say which tick fired; cronguard's lookup also needs one Next
//     in the common case);
//   - the kill switch: one atomic load of the job's flag;
//   - no overlap, and the run lock: one compare-and-swap (the lock is the
//     job's own in one process);
//   - the claim: the job's mutex, a compare and a store of its mark, so a
//     tick runs once however often it is fired;
//   - a cancelable context, so that Stop, a kill or a lost lock can end the
//     run (context.WithCancelCause: the cause reaches the job);
//   - the run's record: start, duration, tick and outcome into a ring of
//     the job's last 100 runs (the history an operator reads), under the
//     job's mutex.
//
// Its lateness is taken in the body, as cronguard's is.

// floorRing is the history size of a floor job, cronguard's default.
const floorRing = 100

// floorJob is the state of one guard-floor job.
type floorJob struct {
	sched   cron.Schedule
	on      atomic.Bool // the kill switch's flag
	running atomic.Bool // no overlap, and the run lock

	mu   sync.Mutex
	mark int64 // the claim mark: the latest tick run, Unix ns
	ring []floorRecord
	next int
}

// floorRecord is one run in a floor job's ring.
type floorRecord struct {
	tick, start int64
	took        time.Duration
	ok          bool
}

func newGuardFloor(env *phaseEnv) (sched, error) {
	p := env.probe
	parser := cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
	bodyOf := func(_, spec string) func() {
		sc, err := parser.Parse(spec)
		if err != nil {
			return func() { p.errs.Add(1) }
		}
		j := &floorJob{sched: sc}
		j.on.Store(true)
		return func() { j.run(p) }
	}
	return &robfigSched{c: cron.New(cron.WithSeconds()), bodyOf: bodyOf}, nil
}

// run is one fire of j.
func (j *floorJob) run(p *probe) { j.runAt(p, time.Now()) }

// runAt is a fire of j at now.
func (j *floorJob) runAt(p *probe, now time.Time) {
	tick := j.sched.Next(now.Add(-time.Second))
	if tick.After(now) || !j.on.Load() || !j.running.CompareAndSwap(false, true) {
		p.errs.Add(1)
		return
	}
	defer j.running.Store(false)
	ns := tick.UnixNano()
	j.mu.Lock()
	won := ns > j.mark
	if won {
		j.mark = ns
	}
	j.mu.Unlock()
	if !won {
		p.errs.Add(1)
		return
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	start := time.Now()
	p.lat.add(tick, start.Sub(tick)) // the body: what every row's job does
	err := ctx.Err()
	cancel(nil)
	took := time.Since(start)
	j.mu.Lock()
	if j.ring == nil {
		j.ring = make([]floorRecord, floorRing)
	}
	j.ring[j.next] = floorRecord{tick: ns, start: start.UnixNano(), took: took, ok: err == nil}
	j.next = (j.next + 1) % floorRing
	j.mu.Unlock()
}
