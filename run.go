package cronguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// run is the state of one run, and its context: the guards, the job and
// every context derived from it find the run through Value(runKey{})
// without a context.WithValue per field. It wraps the run's cancelable
// context (canceled when the run ends, when its lock is lost, or by its
// parent), so one allocation holds the whole run.
type run struct {
	context.Context
	cancel context.CancelCauseFunc

	s       *Scheduler // nil when a Batch runs outside a Scheduler
	e       *entry
	job     string
	trigger Trigger
	tick    time.Time
	items   []any  // RunManually's items; nil for a whole run
	by      string // who asked for a manual run (ActorFrom)

	start     time.Time
	batches   atomic.Int64
	processed atomic.Int64
	failed    atomic.Int64
	// duplicates counts RunManually items dropped as copies of an earlier one
	duplicates atomic.Int64

	prev, next *run  // in its shard of Scheduler.runs
	shard      uint8 // of Scheduler.runs

	held leaseCtx // the context below the run lock, with its lease (holdLease)

	// gapPrev and gapLast: the claim of a CatchUp job's tick found missed
	// ticks after the mark gapPrev, the last being gapLast (catchup.go).
	gapPrev, gapLast time.Time
	dog              watchdog // keeps the run lock alive (holdLease)

	mu      sync.Mutex
	stop    StopReason // set by the batch loop when it ends early without error
	tripped bool       // the runaway guard switched the job off
	cause   error      // context.Cause of the run's context when it ended canceled
	stack   string     // of a panic

	// rep is the Report once the run ended, allocated then: the finished
	// event points to it, and the history keeps it as it is when no
	// observer had it (history.go).
	rep *Report
}

type runKey struct{}

// Value implements context.Context: runKey answers the run itself.
func (st *run) Value(key any) any {
	if _, ok := key.(runKey); ok {
		return st
	}
	return st.Context.Value(key)
}

// runFrom returns the run of ctx, or a detached one when a Job runs outside
// a Scheduler (a Batch called directly in a test, say).
func runFrom(ctx context.Context) *run {
	if st, ok := ctx.Value(runKey{}).(*run); ok {
		return st
	}
	return &run{job: "(unscheduled)", trigger: TriggerManual}
}

// begin marks the start of the job and raises EventStarted.
func (st *run) begin() {
	st.mu.Lock()
	st.start = time.Now()
	st.mu.Unlock()
	var ev Event
	st.initEvent(&ev, EventStarted, nil)
	st.s.emitEvent(&ev)
}

func (st *run) setStop(r StopReason) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stop = r
}

func (st *run) event(kind EventKind, err error) Event {
	var ev Event
	st.initEvent(&ev, kind, err)
	return ev
}

// initEvent is event into *ev, which is zero.
func (st *run) initEvent(ev *Event, kind EventKind, err error) {
	ev.Kind, ev.Job, ev.Trigger, ev.Tick, ev.Err = kind, st.job, st.trigger, st.tick, err
	if kind == EventFinished && errors.Is(err, ErrPanic) {
		ev.Stack = st.stack
	}
}

// execute runs e once through its guard chain for trig and reports the
// outcome.
//
// Allocation budget: a scheduled run of a no-op job on the memory backends,
// with no observer and a logger that drops Info, allocates runAllocBudget
// (5) objects: the run (which is also its context), the cancelable context
// below it and its cancel func, the memory Lease, and the Report (the
// memory history copies it into its ring). No timer, goroutine, context per guard or
// event is made for it: the watchdog shares one timer for the process, the
// memory stores are called without a deadline, and an event nobody takes
// is not built. robfig/cron adds the goroutine it starts per fire. A
// manual run adds the hook that cancels it with the Scheduler; an observer,
// a logger that takes the events, a Redis backend, a Timeout or HardKill
// add their own.
func (s *Scheduler) execute(ctx context.Context, e *entry, trig Trigger, tick time.Time, items []any) Report {
	return *s.runOnce(ctx, e, trig, tick, items).rep
}

// runOnce is execute; the Report is in the run it returns.
func (s *Scheduler) runOnce(ctx context.Context, e *entry, trig Trigger, tick time.Time, items []any) *run {
	st := &run{s: s, e: e, job: e.name, trigger: trig, tick: tick, items: items}
	if trig == TriggerManual {
		st.by = ActorFrom(ctx)
	}
	if !s.track(e) {
		st.refuse()
		return st
	}
	defer s.untrack(e)
	if ctx == s.base {
		// A scheduled run. Its context does not hang below s.base: every
		// run would then register with, and leave, one context's lock
		// and map. The registry cancels it at Stop instead, as s.base would.
		ctx = context.Background()
	}
	st.Context, st.cancel = context.WithCancelCause(ctx)
	defer st.cancel(nil)
	s.runs.add(st)
	defer s.runs.remove(st)
	st.finish(s.runChain(st))
	if trig == TriggerSchedule {
		e.noteDecided(tick)
	}
	return st
}

// The frames of execute and of everything below it are on the stack of
// every run's goroutine, which starts small: a copy of a Report or an Event
// held there across the run costs a stack growth (a copy of the stack).
// So the functions that build them are siblings of the run, not its
// callers.

// refuse reports a run the stopped Scheduler did not start.
func (st *run) refuse() {
	err := skip(SkipStopped, fmt.Errorf("%w: job %q not run", ErrStopped, st.job))
	st.rep = new(Report)
	st.fillReport(st.rep, err)
	st.s.emitEvent(&Event{Kind: EventSkipped, Job: st.job, Trigger: st.trigger, Tick: st.tick, Skip: SkipStopped, Err: err})
}

// finish turns the chain's error into the run's Report and raises its
// finished or skipped event.
func (st *run) finish(err error) {
	rep := new(Report)
	st.fillReport(rep, err)
	st.rep = rep
	var ev Event
	if rep.Skipped != "" {
		st.initEvent(&ev, EventSkipped, rep.Err)
		ev.Skip = rep.Skipped
	} else {
		st.e.setLast(rep)
		st.initEvent(&ev, EventFinished, rep.Err)
		ev.Report = rep // the run is over: nothing changes it any more
	}
	st.s.emitEvent(&ev)
}

// report turns the run's state and the chain's error into a Report.
func (st *run) report(err error) Report {
	var r Report
	st.fillReport(&r, err)
	return r
}

// fillReport is report into *r.
func (st *run) fillReport(r *Report, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	*r = Report{Job: st.job, Trigger: st.trigger, Tick: st.tick, By: st.by, Start: st.start, Err: err}
	if st.s != nil {
		r.Instance = st.s.cfg.instance
	}
	if err != nil { // errors.As's target escapes: an allocation a run without error does without
		var se *skipError
		if errors.As(err, &se) {
			r.Skipped = se.reason
			return
		}
	}
	if !st.start.IsZero() { // zero when a middleware failed before the guards let the run start
		r.Duration = time.Since(st.start)
	}
	r.Batches = int(st.batches.Load())
	r.Processed = int(st.processed.Load())
	r.Failed = int(st.failed.Load())
	r.Duplicates = int(st.duplicates.Load())
	r.Stop, r.Err = stopReason(err, st.cause, st.stop)
	r.Tripped = st.tripped
}

// stopReason says why a run ended. A canceled context explains the end
// better than the error the job returned for it (usually context.Canceled),
// so its cause leads, and is in the error for errors.Is.
func stopReason(err, cause error, early StopReason) (StopReason, error) {
	if cause != nil {
		if err == nil || !errors.Is(err, cause) {
			err = errors.Join(cause, err)
		}
		switch {
		case errors.Is(cause, ErrLockLost):
			return StopLockLost, err
		case errors.Is(cause, ErrTimeout):
			return StopTimeout, err
		case errors.Is(cause, ErrKilled):
			return StopKilled, err
		}
		return StopCanceled, err
	}
	switch {
	case err == nil && early != "":
		return early, nil
	case err == nil:
		return StopDone, nil
	case errors.Is(err, ErrKilled):
		return StopKilled, err
	case errors.Is(err, ErrRunaway):
		return StopRunaway, err
	case errors.Is(err, ErrErrorBudget):
		return StopErrorBudget, err
	case errors.Is(err, context.Canceled):
		return StopCanceled, err
	case errors.Is(err, context.DeadlineExceeded):
		return StopTimeout, err
	}
	return StopError, err
}

// runRegistry holds the runs going now, so that Stop can cancel them (see
// Scheduler.cancelBase). It is sharded, each shard a list under its own
// lock, so that concurrent runs do not queue on one lock, as they would
// registering as children of one context.
type runRegistry struct {
	cause  atomic.Pointer[error] // set by cancelAll: a run added later cancels itself
	shards [16]runShard
}

type runShard struct {
	mu   sync.Mutex
	head *run
	_    [48]byte // a cache line each: shards are locked from every core
}

// add registers st, whose context is made.
func (r *runRegistry) add(st *run) {
	st.shard = uint8(rand.Uint32() % uint32(len(r.shards)))
	sh := &r.shards[st.shard]
	sh.mu.Lock()
	st.next = sh.head
	if sh.head != nil {
		sh.head.prev = st
	}
	sh.head = st
	sh.mu.Unlock()
	if c := r.cause.Load(); c != nil {
		st.cancel(*c)
	}
}

func (r *runRegistry) remove(st *run) {
	sh := &r.shards[st.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if st.prev != nil {
		st.prev.next = st.next
	} else {
		sh.head = st.next
	}
	if st.next != nil {
		st.next.prev = st.prev
	}
	st.prev, st.next = nil, nil
}

// cancelAll cancels every run going now, and every run added from now on,
// with cause.
func (r *runRegistry) cancelAll(cause error) {
	r.cause.CompareAndSwap(nil, &cause)
	c := *r.cause.Load()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for st := sh.head; st != nil; st = st.next {
			st.cancel(c)
		}
		sh.mu.Unlock()
	}
}

// track counts a run as going; it refuses once the scheduler is stopped, so
// Stop's wait sees every run.
func (s *Scheduler) track(e *entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stopped {
		return false
	}
	s.wg.Add(1)
	e.active.Add(1)
	return true
}

func (s *Scheduler) untrack(e *entry) {
	e.active.Add(-1)
	s.wg.Done()
}

// eventLevel is the level an event is logged at. An operator's stop (kill
// switch, Stop) is no failure.
func eventLevel(ev *Event) slog.Level {
	switch ev.Kind {
	case EventStarted, EventBatchDone:
		return slog.LevelDebug
	case EventItemFailed, EventFlag, EventHistory, EventMissed:
		return slog.LevelWarn
	case EventLockLost, EventRunaway:
		return slog.LevelError
	case EventFinished:
		return finishedLevel(ev.Report)
	}
	return slog.LevelInfo
}

// finishedLevel: an operator's stop (kill switch, Stop) is no failure.
func finishedLevel(r *Report) slog.Level {
	if r == nil {
		return slog.LevelInfo
	}
	switch r.Stop {
	case StopDone, StopMaxBatches:
		return slog.LevelInfo
	case StopKilled, StopCanceled:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// emit sends ev to the observers, the logger and the history.
func (s *Scheduler) emit(ev Event) { s.emitEvent(&ev) }

// emitEvent sends ev to the observers, the logger and the history, and does
// nothing at all for an event nobody takes: no observer, a logger that
// drops its level, a kind the history does not keep (started, batch_done,
// item_failed, ...). Neither the observers nor the logger may take the
// process down: emit also runs on the worker goroutines of a Batch (item
// failures), where a panic could not be recovered by the run. A panic in an
// observer is logged; a panic in the logger's handler loses that record.
func (s *Scheduler) emitEvent(ev *Event) {
	if s == nil {
		return
	}
	level := eventLevel(ev)
	logged := s.logEnabled(level)
	kept := historyKeeps(ev.Kind, ev.Skip)
	if len(s.cfg.observers) == 0 && !logged && !kept {
		return
	}
	ev.Instance = s.cfg.instance
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	for _, fn := range s.cfg.observers {
		s.observeOne(fn, ev)
	}
	if logged {
		s.log(level, ev)
	}
	if kept {
		// never blocks; the Report of a finished run is the history's to
		// keep when no observer has it
		s.history.observe(s, ev, len(s.cfg.observers) == 0)
	}
}

// heard reports whether an event of kind (skip reason skip) at level would
// reach anyone: an observer, the logger or the history. A caller that
// builds costly fields (an error's text) asks first.
func (s *Scheduler) heard(kind EventKind, skip SkipReason, level slog.Level) bool {
	return len(s.cfg.observers) > 0 || historyKeeps(kind, skip) || s.logEnabled(level)
}

// logEnabled asks the logger whether it takes level; a panic in its handler
// is a no.
func (s *Scheduler) logEnabled(level slog.Level) (on bool) {
	defer recoverLogger()
	return s.cfg.logger.Enabled(context.Background(), level)
}

// observeOne calls one observer with a copy of ev. A panic in it is logged,
// not passed on: it may run on a worker goroutine of a Batch, where a panic
// would end the process.
func (s *Scheduler) observeOne(fn func(Event), ev *Event) {
	defer func() {
		if r := recover(); r != nil {
			s.logAttrs(slog.LevelError, "cronguard: observer panicked", slog.String("job", ev.Job),
				slog.String("event", string(ev.Kind)), slog.String("panic", clip(fmt.Sprint(r))))
		}
	}()
	fn(*ev)
}

// log writes ev at level, which the logger takes.
func (s *Scheduler) log(level slog.Level, ev *Event) {
	attrs := []slog.Attr{slog.String("job", ev.Job), slog.String("trigger", string(ev.Trigger))}
	if !ev.Tick.IsZero() {
		attrs = append(attrs, slog.Time("tick", ev.Tick))
	}
	if ev.Skip != "" {
		attrs = append(attrs, slog.String("skip", string(ev.Skip)))
	}
	if ev.Kind == EventBatchDone {
		attrs = append(attrs, slog.Int("batch", ev.Batch), slog.Int("items", ev.Items))
	}
	if ev.Item != "" {
		attrs = append(attrs, slog.String("item", clip(ev.Item))) // a key from the user's data
	}
	if r := ev.Report; r != nil {
		attrs = append(attrs, slog.String("stop", string(r.Stop)), slog.Duration("duration", r.Duration),
			slog.Int("batches", r.Batches), slog.Int("processed", r.Processed), slog.Int("failed", r.Failed))
		if r.Duplicates > 0 {
			attrs = append(attrs, slog.Int("duplicates", r.Duplicates))
		}
	}
	if ev.Err != nil {
		attrs = append(attrs, slog.String("err", ev.Err.Error()))
	}
	if ev.Stack != "" {
		attrs = append(attrs, slog.String("stack", ev.Stack))
	}
	s.logAttrs(level, "cronguard: "+string(ev.Kind), attrs...)
}

// logAttrs logs one record, losing it if the logger's handler panics.
func (s *Scheduler) logAttrs(level slog.Level, msg string, attrs ...slog.Attr) {
	defer recoverLogger()
	s.cfg.logger.LogAttrs(context.Background(), level, msg, attrs...)
}

// recoverLogger, deferred around a call into the logger, swallows a panic of
// its handler: a log record is not worth the process, and the logger cannot
// be told about its own failure.
func recoverLogger() { _ = recover() }

// ReportFrom is for Middleware (tracing, metrics): inside a run it returns
// the Report of the run of ctx as it stands, given the error the rest of
// the chain returned — the Report the Scheduler is about to emit, with the
// job's name, trigger, tick, instance, batches, items and why it stopped or
// was skipped. ok is false outside a run.
func ReportFrom(ctx context.Context, err error) (r Report, ok bool) {
	st, ok := ctx.Value(runKey{}).(*run)
	if !ok {
		return Report{}, false
	}
	return st.report(err), true
}

// runAllocBudget is the most objects a scheduled run of a no-op job
// allocates on the memory backends with no observer and a logger that
// drops Info (alloc_test.go holds it; see execute). Before issue 8's rework
// a run allocated 43.
const runAllocBudget = 5
