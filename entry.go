package cronguard

import (
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

	mu   sync.Mutex
	last *Report
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
func (s *Scheduler) fire(e *entry) {
	tick := e.ticks.take(time.Now())
	s.execute(s.base, e, TriggerSchedule, tick, nil)
}

// tickSchedule wraps a schedule to remember the ticks robfig/cron asked for,
// because robfig/cron calls a job without saying which tick fired it. It
// calls Next once at start and once after each fire, so the tick being run is
// the latest remembered one that is not in the future.
type tickSchedule struct {
	inner cron.Schedule

	mu      sync.Mutex
	pending []time.Time
	prev    time.Time
}

// Next implements cron.Schedule.
func (t *tickSchedule) Next(now time.Time) time.Time {
	n := t.inner.Next(now)
	t.mu.Lock()
	defer t.mu.Unlock()
	if !n.IsZero() {
		t.pending = append(t.pending, n)
	}
	return n
}

// take removes and returns the tick due at now.
func (t *tickSchedule) take(now time.Time) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	due := -1
	for i, p := range t.pending {
		if !p.After(now) {
			due = i
		}
	}
	if due < 0 { // not seen with robfig/cron's loop; fall back to the current second
		return now.Truncate(time.Second)
	}
	tick := t.pending[due]
	t.pending = append(t.pending[:0], t.pending[due+1:]...)
	t.prev = tick
	return tick
}

func (t *tickSchedule) last() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.prev
}
