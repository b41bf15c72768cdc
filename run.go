package cronguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

	held leaseCtx // the context below the run lock, with its lease (holdLease)
	dog  watchdog // keeps the run lock alive (holdLease)

	mu      sync.Mutex
	stop    StopReason // set by the batch loop when it ends early without error
	tripped bool       // the runaway guard switched the job off
	cause   error      // context.Cause of the run's context when it ended canceled
	stack   string     // of a panic

	rep Report // the Report, once the run ended: the finished event points here
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

func (st *run) begin() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.start = time.Now()
}

func (st *run) setStop(r StopReason) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.stop = r
}

func (st *run) event(kind EventKind, err error) Event {
	ev := Event{Kind: kind, Job: st.job, Trigger: st.trigger, Tick: st.tick, Err: err}
	if kind == EventFinished && errors.Is(err, ErrPanic) {
		ev.Stack = st.stack
	}
	return ev
}

// execute runs e once through its guard chain for trig and reports the
// outcome.
//
// Allocation budget: a scheduled run of a no-op job on the memory backends,
// with no observer and a logger that drops Info, allocates runAllocBudget
// (6) objects: the run (which is also its context), the cancelable context
// below it and its cancel func, the memory Lease, and the history entry's
// copy of the Report and its ID. No timer, goroutine, context per guard or
// event is made for it: the watchdog shares one timer for the process, the
// memory stores are called without a deadline, and an event nobody takes
// is not built. robfig/cron adds the goroutine it starts per fire. A
// manual run adds the hook that cancels it with the Scheduler; an observer,
// a logger that takes the events, a Redis backend, a Timeout or HardKill
// add their own.
func (s *Scheduler) execute(ctx context.Context, e *entry, trig Trigger, tick time.Time, items []any) Report {
	st := &run{s: s, e: e, job: e.name, trigger: trig, tick: tick, items: items}
	if trig == TriggerManual {
		st.by = ActorFrom(ctx)
	}
	if !s.track(e) {
		err := skip(SkipStopped, fmt.Errorf("%w: job %q not run", ErrStopped, e.name))
		s.emitEvent(&Event{Kind: EventSkipped, Job: e.name, Trigger: trig, Tick: tick, Skip: SkipStopped, Err: err})
		return st.report(err)
	}
	defer s.untrack(e)
	st.Context, st.cancel = context.WithCancelCause(ctx)
	defer st.cancel(nil)
	if ctx != s.base { // a scheduled run's parent is s.base, whose end reaches it already
		stopWithScheduler := context.AfterFunc(s.base, func() { st.cancel(context.Cause(s.base)) })
		defer stopWithScheduler()
	}
	st.rep = st.report(s.runChain(st))
	rep := &st.rep
	if rep.Skipped != "" {
		ev := st.event(EventSkipped, rep.Err)
		ev.Skip = rep.Skipped
		s.emitEvent(&ev)
		return *rep
	}
	e.setLast(rep)
	ev := st.event(EventFinished, rep.Err)
	ev.Report = rep // the run is over: nothing changes it any more
	s.emitEvent(&ev)
	return *rep
}

// report turns the run's state and the chain's error into a Report.
func (st *run) report(err error) Report {
	st.mu.Lock()
	defer st.mu.Unlock()
	r := Report{Job: st.job, Trigger: st.trigger, Tick: st.tick, By: st.by, Start: st.start, Err: err}
	if st.s != nil {
		r.Instance = st.s.cfg.instance
	}
	if err != nil { // errors.As's target escapes: an allocation a run without error does without
		var se *skipError
		if errors.As(err, &se) {
			r.Skipped = se.reason
			return r
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
	return r
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
		s.history.observe(s, *ev) // never blocks: a bounded queue to one writer
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
const runAllocBudget = 6
