package cronguard

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Job is the unit of work the Scheduler runs. Run must return when ctx is
// done: the context is canceled when the run lock is lost, the run times out,
// the job is hard-killed or the scheduler stops, and context.Cause(ctx) says
// which.
type Job interface {
	Run(ctx context.Context) error
}

// JobFunc adapts a plain function to Job.
type JobFunc func(ctx context.Context) error

// Run calls f(ctx).
func (f JobFunc) Run(ctx context.Context) error { return f(ctx) }

// Middleware wraps a Job. Middleware given with WithMiddleware wraps every
// job outermost, before the guards (kill switch, tick claim, lock), so it sees
// every attempt, including those the guards then skip.
type Middleware func(next Job) Job

// Trigger says what started a run.
type Trigger string

// Triggers.
const (
	TriggerSchedule Trigger = "schedule" // a cron tick
	TriggerManual   Trigger = "manual"   // RunManually
	// TriggerCatchUp: the one run a CatchUp job gets for the ticks it
	// missed, run just before the tick that revealed them; its tick is the
	// last missed tick.
	TriggerCatchUp Trigger = "catchup"
)

// SkipError is the error of a run that did not start: Report.Err and the
// Err of its EventSkipped. Middleware tells a skip from a failure with
// errors.As; errors.Is(err, ErrKilled) and the like match its Reason, and
// errors.Is also reaches its Cause.
type SkipError struct {
	// Job is the job whose run did not start.
	Job string
	// Reason says why: ErrKilled (switched off), ErrTickTaken (another run
	// claimed the tick), ErrOverlap (the previous run still goes here),
	// ErrLocked (the run lock is held), ErrBackend (a store could not
	// answer) or ErrStopped (the scheduler is stopping).
	Reason error
	// Cause is what the store or the context said, or nil.
	Cause error
	// detail names the tick, flag or holder concerned, or is "".
	detail string
}

// Error names the reason, the job and what the store said. A Cause that
// wraps the Reason itself (the Locker's ErrLocked, naming the job and the
// holder) is the whole message.
func (e *SkipError) Error() string {
	if e.Cause != nil && e.Reason != nil && errors.Is(e.Cause, e.Reason) {
		return e.Cause.Error()
	}
	s := fmt.Sprintf("%v: job %q", e.Reason, e.Job)
	if e.detail != "" {
		s += ": " + e.detail
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

// Unwrap returns the Reason and the Cause, for errors.Is and errors.As.
func (e *SkipError) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Cause}
}

// skip is the SkipError of r, for reason; cause and detail may be empty.
func skip(run *run, reason, cause error, detail string) error {
	return &SkipError{Job: run.job, Reason: reason, Cause: cause, detail: detail}
}

// Report tells what one run did.
//
// Err says how it ended: nil when it ran to the end (More then says
// whether it stopped at Batch.MaxBatches with work left); a *SkipError
// when it did not start; otherwise it wraps the sentinel of its end, for
// errors.Is: ErrKilled, ErrRunaway, ErrLockLost, ErrErrorBudget,
// ErrTimeout, ErrStopped or context.Canceled (the scheduler or the caller
// ended it), ErrPanic, or the job's own error. Outcome names it in one
// word. Read back from JSON, Err keeps its text and its sentinel.
type Report struct {
	Job      string        `json:"job"`
	Trigger  Trigger       `json:"trigger"`
	Tick     time.Time     `json:"tick"` // scheduled time; zero for manual runs
	Instance string        `json:"instance"`
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration"`

	// By is who asked for a manual run (WithActor); empty for scheduled runs.
	By string `json:"by,omitempty"`

	Batches   int `json:"batches"`   // batches fetched (Batch jobs)
	Processed int `json:"processed"` // items processed without error
	Failed    int `json:"failed"`    // items whose Process failed
	// More is set when a Batch stopped at MaxBatches with work left: the
	// rest waits for the next run. Err is then nil.
	More bool `json:"more,omitempty"`
	// Tripped is set when the runaway guard switched the job's flag off.
	Tripped bool  `json:"tripped,omitempty"`
	Err     error `json:"-"` // in JSON as "error", its text, with the outcome (report_json.go)

	// Duplicates counts RunManually items whose Key an earlier item of the
	// same call had: each key is processed once.
	Duplicates int `json:"duplicates,omitempty"`

	// Token is the fencing token of the run's lock (Lease.Token), 0 when
	// the run held none (AllowOverlap, or skipped before the lock). It
	// grows with each lock of the job, so a store that remembers the
	// highest token it saw can refuse a stale holder's writes. A job reads
	// it as Token of ReportFrom(ctx, nil).
	Token int64 `json:"token,omitempty"`
}

// Outcome names how the run ended, from Err and More, for logs, metrics
// and dashboards. A run that did not start (a *SkipError) is named by its
// reason: "killed", "tick_taken", "overlap", "locked", "backend" or
// "stopped". A run that started: "done", "max_batches" (More), "killed",
// "runaway", "lock_lost", "error_budget", "canceled", "timeout" or "error"
// (the job's own error or a panic). When the run's context ended, its
// cause names the end, whatever error the job returned for it.
func (r Report) Outcome() string { return outcomeOf(r.Err, r.More) }

// String renders the report in one line, for logs and examples.
func (r Report) String() string {
	if _, ok := errors.AsType[*SkipError](r.Err); ok {
		return fmt.Sprintf("%s (%s): skipped (%s): %v", r.Job, r.Trigger, r.Outcome(), r.Err)
	}
	d := r.Duration.Round(time.Millisecond)
	if r.Duration < time.Millisecond {
		d = r.Duration.Round(time.Microsecond)
	}
	s := fmt.Sprintf("%s (%s): %s after %s, %d batch(es), %d processed, %d failed",
		r.Job, r.Trigger, r.Outcome(), d, r.Batches, r.Processed, r.Failed)
	if r.Err != nil {
		s += ": " + r.Err.Error()
	}
	return s
}

// EventKind names an Event.
type EventKind string

// Event kinds.
const (
	EventStarted    EventKind = "started"     // the guards passed and the job starts
	EventSkipped    EventKind = "skipped"     // a tick or manual run did not start; see Skip and Err (a *SkipError)
	EventBatchDone  EventKind = "batch_done"  // a Batch finished one batch; see Batch and Items
	EventItemFailed EventKind = "item_failed" // one item's Process failed; see Item and Err
	EventFinished   EventKind = "finished"    // the run ended; see Report
	EventLockLost   EventKind = "lock_lost"   // the lease could not be extended; the run is canceled
	EventRunaway    EventKind = "runaway"     // a batch repeated an item; the run stops, the switch goes off
	EventFlag       EventKind = "flag"        // the kill switch store failed; see Err and Enabled for the decision taken
	// EventMissed: the tick being run was claimed with ticks of the spec
	// left unclaimed since the job's previous claim (no instance ran them);
	// see Missed, MissedFirst and MissedLast. Only the instance that won
	// the tick raises it, so it is raised once across instances. Ticks that
	// this instance fired and skipped before claiming (switched off,
	// overlap, store down) are skips, reported as such, not missed; ticks
	// that only other instances skipped that way, while this one was down,
	// are counted as missed. A gap with such skips inside is reported in
	// stretches, one EventMissed each, before the tick's run. When the
	// claim that found the gap lost its reply (the store stalled or went
	// down after running it), its instance reports its tick skipped with
	// ErrBackend, and the gap before that tick is not reported. Err
	// describes them in words, for logs; it wraps no sentinel (the Kind
	// says what happened).
	EventMissed EventKind = "missed"
)

// Event is one thing that happened to a job. Events go to the observer given
// with WithObserver and to the logger.
type Event struct {
	Kind     EventKind `json:"kind"`
	Job      string    `json:"job"`
	Trigger  Trigger   `json:"trigger"`
	Tick     time.Time `json:"tick"`
	Instance string    `json:"instance"`
	Time     time.Time `json:"time"`
	Skip     string    `json:"skip,omitempty"`  // EventSkipped: the Report.Outcome of the skip
	Batch    int       `json:"batch,omitempty"` // batch number, from 0
	Items    int       `json:"items,omitempty"` // items in the batch
	Item     string    `json:"item,omitempty"`  // item key (item_failed, runaway)
	Enabled  bool      `json:"enabled,omitempty"`
	Err      error     `json:"-"`
	Stack    string    `json:"stack,omitempty"` // for panics
	Report   *Report   `json:"report,omitempty"`

	// Missed counts the ticks missed before Tick (EventMissed), at most
	// 10,000: MissedCapped says there were at least that many.
	Missed       int       `json:"missed,omitempty"`
	MissedCapped bool      `json:"missed_capped,omitempty"`
	MissedFirst  time.Time `json:"missed_first,omitzero"` // the first missed tick
	MissedLast   time.Time `json:"missed_last,omitzero"`  // the last missed tick
}

// tickFrom returns the scheduled time of the tick being run: the instant the
// cron spec named, not the moment the job happened to start. It is zero for
// manual runs and outside a run. Jobs read it as ReportFrom(ctx, nil).Tick.
func tickFrom(ctx context.Context) time.Time {
	if run, ok := ctx.Value(runKey{}).(*run); ok {
		return run.tick
	}
	return time.Time{}
}

// overlapPolicy says what a scheduled tick does while the previous run of
// the same job is still going in this process: skip it (the default),
// queue it (QueueOverlap) or run it at once (AllowOverlap).
type overlapPolicy uint8 // small: every registered job holds one

const (
	overlapSkip overlapPolicy = iota
	overlapQueue
	overlapAllow
)

// String names the policy, as JobInfo.Overlap shows it.
func (p overlapPolicy) String() string {
	switch p {
	case overlapSkip:
		return "skip"
	case overlapQueue:
		return "queue"
	case overlapAllow:
		return "allow"
	}
	return fmt.Sprintf("overlapPolicy(%d)", int(p))
}

// defaultLockTTL is the run lock's time to live when LockTTL is not given
// (30s, as LockTTL's doc says). The lease is extended every third of it
// while the job runs.
const defaultLockTTL = 30 * time.Second

// JobOption configures one job at Register.
type JobOption func(*jobConfig) error

type jobConfig struct {
	lockTTL  time.Duration
	timeout  time.Duration
	flag     string
	overlap  overlapPolicy
	hardKill bool
	catchUp  bool
}

// LockTTL sets the run lock's time to live (default 30s). The lease is
// extended every ttl/3 while the job runs, so ttl bounds how long a crashed
// instance keeps the job locked, not how long the job may run.
func LockTTL(ttl time.Duration) JobOption {
	return func(c *jobConfig) error {
		if ttl < time.Millisecond { // Redis expiries count milliseconds
			return fmt.Errorf("%w: LockTTL %s: must be at least 1ms", ErrInvalidOption, ttl)
		}
		c.lockTTL = ttl
		return nil
	}
}

// Timeout bounds one run; the run's context is canceled with cause
// ErrTimeout when it passes. Zero (the default) means no bound.
func Timeout(d time.Duration) JobOption {
	return func(c *jobConfig) error {
		if d < 0 {
			return fmt.Errorf("%w: Timeout %s: must not be negative", ErrInvalidOption, d)
		}
		c.timeout = d
		return nil
	}
}

// Flag names the kill switch flag of the job. By default it is the job name.
func Flag(name string) JobOption {
	return func(c *jobConfig) error {
		if name == "" {
			return fmt.Errorf("%w: Flag: empty flag name", ErrInvalidOption)
		}
		c.flag = name
		return nil
	}
}

// By default a scheduled tick that comes while the previous run of the job
// is still going in this process is skipped and reported (SkipOverlap);
// QueueOverlap and AllowOverlap change that. They exclude each other: a job
// given both is refused with ErrInvalidOption.

// QueueOverlap makes such a tick run once the current run ends. At most one
// run waits: further ticks while one waits are skipped (coalesced). The
// queued run asks the kill switch again and claims its tick only once its
// turn comes: when another instance claimed a newer tick meanwhile, it is
// skipped as taken.
func QueueOverlap() JobOption { return overlapOption("QueueOverlap", overlapQueue) }

// AllowOverlap lets runs of the job overlap, here and across instances:
// scheduled runs take no run lock (the tick claim alone, one round trip,
// still makes each tick run once). Manual runs still take the lock, so they
// exclude each other (and scheduled runs do not wait for them).
func AllowOverlap() JobOption { return overlapOption("AllowOverlap", overlapAllow) }

// overlapOption sets policy p, named name, unless another was set.
func overlapOption(name string, p overlapPolicy) JobOption {
	return func(c *jobConfig) error {
		if c.overlap != overlapSkip && c.overlap != p {
			return fmt.Errorf("%w: %s: the job already has overlap policy %q (QueueOverlap and AllowOverlap exclude each other)", ErrInvalidOption, name, c.overlap)
		}
		c.overlap = p
		return nil
	}
}

// HardKill makes a kill switch flip cancel the job's scheduled runs in
// flight (ticks and catch-up runs; manual runs skip the kill switch), with
// cause ErrKilled, instead of only stopping them before their next batch.
// The switch is polled while such a run goes (see WithKillPoll); use it for
// jobs whose single step can do harm for long.
func HardKill() JobOption {
	return func(c *jobConfig) error {
		c.hardKill = true
		return nil
	}
}

// CatchUp gives the job one catch-up run for the ticks it missed (ticks
// that no instance claimed: every instance down, paused or unable to reach
// the store). Off by default: missed ticks are then only reported
// (EventMissed).
//
// The bound: at most one catch-up run per gap, whatever the number of
// ticks in it (a day of downtime on a 1s spec, a DST jump), never more, and
// only when the instance that claims the first tick after the gap has
// CatchUp on. Only the winner of that tick sees the gap, so the catch-up
// runs once across instances. It runs first, with Trigger TriggerCatchUp
// and Report.Tick the last missed tick, then the tick that revealed the gap
// runs as usual: both under the run lock that tick's claim took, each with
// its own Timeout and Report. So the job sees its ticks in order, and the
// current tick starts once the catch-up run ends.
//
// No catch-up when that tick does not run (its run lock is held, say): the
// gap is reported once and the next claim does not see it again. Nor for
// ticks the claiming instance skipped on purpose: the latest missed tick
// was skipped here as switched off, or fell while this instance's own run
// of the previous tick was still going (the default overlap policy). Ticks that only other
// instances skipped so are caught up.
func CatchUp() JobOption {
	return func(c *jobConfig) error {
		c.catchUp = true
		return nil
	}
}
