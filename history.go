package cronguard

import (
	"cmp"
	"context"
	"fmt"
	"time"
)

// Bounds of the run history.
const (
	// defaultHistorySize is how many entries are kept per job
	// (WithHistorySize): what the readers show, and no more. The admin
	// API returns 100 entries unless asked (at most 1,000), the dashboard
	// charts the newest 100 runs, the CLI prints 20 and the jobs list looks
	// for the last run among 20. In memory a full ring of 100 is about
	// 9.6 KB a job (an entry is 96 B with its Report, history_slot.go);
	// with 1,000 it was 0.5 MB a job (before the compact slot), and the
	// garbage collector scanned all of it at every cycle, a fifth of a
	// no-op run's CPU.
	defaultHistorySize = 100
	// historyQueueSize is how many entries may wait for the history writer;
	// past it new entries are dropped with an EventHistory, never waited for.
	historyQueueSize = 1024
	// historyTextMax bounds each error and reason text kept in the history.
	historyTextMax = 4096
)

// EventHistory is raised when a history entry could not be recorded: the
// writer's queue was full or the store failed (Err wraps ErrBackend and
// names the job). The run itself is not affected.
const EventHistory EventKind = "history"

// HistoryEntry is one thing the run history remembers about a job. Its
// Kind is one of the event kinds:
//
//   - EventFinished: a run ended; see Report.
//   - EventSkipped: a tick or manual run did not start; see Skip and Error.
//   - EventMissed: ticks that no instance claimed; see Missed, First, Last.
//   - EventFlag: Scheduler.SetEnabled flipped the job's switch; see
//     Enabled, By and Reason.
//   - "" (empty): an entry the store could not read (edited by hand,
//     written by another program); Error says why, with the value cut to a
//     bound. Only ID, Job and Error are set.
//
// Error and Reason are cut to 4 KiB. Report.Err of a history entry keeps
// the run's error text (cut so too) and its outcome's sentinel: errors.Is
// (ErrKilled, ErrRunaway, ...) and Report.Outcome work on it.
type HistoryEntry struct {
	// ID orders the entries of one job: the stream entry ID in Redis, a
	// sequence number in memory.
	ID       string    `json:"id,omitempty"`
	Kind     EventKind `json:"kind"`
	Job      string    `json:"job"`
	Time     time.Time `json:"time"`               // when it happened
	Instance string    `json:"instance,omitempty"` // which instance recorded it
	Trigger  Trigger   `json:"trigger,omitempty"`
	Tick     time.Time `json:"tick,omitzero"`
	By       string    `json:"by,omitempty"`     // who asked: manual runs and flips (WithActor)
	Report   *Report   `json:"report,omitempty"` // EventFinished
	Skip     string    `json:"skip,omitempty"`   // EventSkipped: the Report.Outcome of the skip
	Missed   int       `json:"missed,omitempty"` // EventMissed: how many ticks
	First    time.Time `json:"first,omitzero"`   // EventMissed: the first missed tick
	Last     time.Time `json:"last,omitzero"`    // EventMissed: the last missed tick
	Enabled  *bool     `json:"enabled,omitempty"`
	Reason   string    `json:"reason,omitempty"` // EventFlag
	Error    string    `json:"error,omitempty"`
}

// HistoryStore keeps the run history. Append is called from one goroutine,
// the scheduler's history writer, with a context bounded by WithCallBudget
// and canceled at Stop's bound: it must return when the context ends.
// History may be called from any goroutine at the same time.
type HistoryStore interface {
	// Append records e, which has no ID yet.
	Append(ctx context.Context, e HistoryEntry) error
	// History returns up to limit entries of job (limit >= 1), newest first.
	History(ctx context.Context, job string, limit int) ([]HistoryEntry, error)
}

type historyConfig struct {
	store HistoryStore // nil: memory; WithRedis sets NewRedisHistory's
	size  int          // entries kept per job; 0: defaultHistorySize
	queue int          // writer queue; 0: historyQueueSize (tests shrink it)
}

// WithHistoryStore sets where the run history is kept. The default is a
// ring in this process's memory (WithHistorySize entries per job), or
// NewRedisHistory on the first client with WithRedis.
func WithHistoryStore(hs HistoryStore) Option {
	return func(c *config) error {
		c.saw("WithHistoryStore")
		if isNil(hs) {
			return fmt.Errorf("%w: WithHistoryStore(nil)", ErrInvalidOption)
		}
		c.history.store = hs
		return nil
	}
}

// WithHistorySize sets how many history entries the default stores keep per
// job (default 100, what the admin API, the dashboard's chart and the CLI
// show): the memory ring's size, the Redis stream's MAXLEN. In memory a
// full ring costs 96 B an entry, its Report included: 9.6 KB a job
// at the default, 96 KB at 1,000 (an entry with an error or who asked
// holds a small object besides; see history_slot.go).
func WithHistorySize(n int) Option {
	return func(c *config) error {
		c.saw("WithHistorySize")
		if n < 1 {
			return fmt.Errorf("%w: WithHistorySize %d: must be at least 1", ErrInvalidOption, n)
		}
		c.history.size = n
		return nil
	}
}

// History returns up to limit history entries of the job, newest first (in
// the order they were recorded: the runs of two instances that end within
// moments of each other may come in either order):
// runs with their Report, skipped ticks with their reason (a tick another
// instance claimed is not a skip: its run is recorded by that instance),
// missed ticks and switch flips. limit < 1 means every entry kept. With
// WithRedis it shows the runs of every instance.
//
// Entries are written in the background: a run shows up shortly after its
// Report is returned. Stop writes the entries still queued, for at most 5s
// or until its context ends. Reading takes at most the call budget
// (WithCallBudget) and never delays a run.
func (s *Scheduler) History(ctx context.Context, job string, limit int) ([]HistoryEntry, error) {
	if _, err := s.lookup(job); err != nil {
		return nil, err
	}
	size := cmp.Or(s.cfg.history.size, defaultHistorySize)
	if limit < 1 || limit > size {
		limit = size
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
	defer cancel()
	entries, err := s.history.storeOf(s).History(ctx, job, limit)
	if err != nil {
		return nil, fmt.Errorf("cronguard: job %q: read history: %w", job, err)
	}
	return entries, nil
}

// makeStore returns the history store the options ask for.
func (c *config) makeHistoryStore() HistoryStore {
	size := cmp.Or(c.history.size, defaultHistorySize)
	if c.history.store != nil { // given, or made by WithRedis (redis.go)
		return c.history.store
	}
	return newMemoryHistory(size)
}

// historyKeeps reports whether the history keeps events of kind (with skip
// reason skip): runs, skips (but a tick taken elsewhere, which that instance
// records) and missed ticks. The frequent ones (started, batch_done,
// item_failed) cost nothing.
func historyKeeps(kind EventKind, skip string) bool {
	switch kind {
	case EventFinished, EventMissed:
		return true
	case EventSkipped:
		return skip != outcomeTickTaken
	}
	return false
}

// historyFromEvent fills e, which is zero, from ev when the history keeps
// events of its kind. Both go by pointer: this runs on every run's stack,
// where a copy of either costs a stack growth.
//
// With ownsReport the history may keep ev.Report itself: the Scheduler says
// so when the run is over and no observer received a pointer to it.
func historyFromEvent(ev *Event, e *HistoryEntry, ownsReport bool) bool {
	if !historyKeeps(ev.Kind, ev.Skip) {
		return false
	}
	e.Job, e.Time, e.Instance, e.Trigger, e.Tick = ev.Job, ev.Time, ev.Instance, ev.Trigger, ev.Tick
	if ev.Err != nil {
		e.Error = clipN(ev.Err.Error(), historyTextMax)
	}
	switch ev.Kind {
	case EventFinished:
		if ev.Report == nil {
			return false
		}
		r := ev.Report
		if r.Err != nil || !ownsReport {
			r = new(Report) // historyReport, in place
			*r = *ev.Report
			if r.Err != nil {
				r.Err = keptError(r.Job, r.Err, historyTextMax)
			}
		}
		e.Kind, e.Report, e.By = EventFinished, r, r.By
	case EventSkipped:
		e.Kind, e.Skip = EventSkipped, ev.Skip
	case EventMissed:
		e.Kind, e.Missed, e.First, e.Last = EventMissed, ev.Missed, ev.MissedFirst, ev.MissedLast
	}
	return true
}

// historyReport is r as the history keeps it: its error as bounded text.
func historyReport(r Report) Report {
	r.Err = keptError(r.Job, r.Err, historyTextMax) // outcome.go: the same outcome and sentinel
	return r
}

// recordFlip records a switch flip made with SetEnabled.
func (s *Scheduler) recordFlip(ctx context.Context, job string, on bool, reason string) {
	s.history.record(s, &HistoryEntry{
		Kind: EventFlag, Job: job, Time: time.Now(), Instance: s.cfg.instance,
		By: ActorFrom(ctx), Enabled: &on, Reason: clipN(reason, historyTextMax),
	})
}
