package cronguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Events and logging: how a run's events are built, and where they go (the
// observers, the logger and the history), at what level, and at what cost
// when nobody listens.

func (r *run) event(kind EventKind, err error) Event {
	var ev Event
	r.initEvent(&ev, kind, err)
	return ev
}

// initEvent is event into *ev, which is zero.
func (r *run) initEvent(ev *Event, kind EventKind, err error) {
	ev.Kind, ev.Job, ev.Trigger, ev.Tick, ev.Err = kind, r.job, r.trigger, r.tick, err
	if kind == EventFinished && errors.Is(err, ErrPanic) {
		ev.Stack = r.stack
	}
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
	switch r.Outcome() {
	case "done", "max_batches":
		return slog.LevelInfo
	case "killed", "canceled":
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
func (s *Scheduler) heard(kind EventKind, skip string, level slog.Level) bool {
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
		attrs = append(attrs, slog.String("stop", r.Outcome()), slog.Duration("duration", r.Duration),
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
