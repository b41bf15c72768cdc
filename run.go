package cronguard

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The life of one scheduled run, in this file from top to bottom:
//
//	cronFire.Run → fireAt → tickRun (the tick a fire stands for, the run)
//	  → run.do: the run's context and registrations
//	    → run.runChain (chain.go): middleware, then the chain of the trigger
//	      → runJob → Job.Run; for a Batch, Batch.Run (batch.go)
//	    → run.finish: the Report and its finished or skipped event (events.go)
//
// RunManually (manual.go) and RunTick (runtick.go) enter at runOnce,
// which makes the run and calls run.do.

// run is the state of one run, and its context: the guards, the job and
// every context derived from it find the run through Value(runKey{})
// without a context.WithValue per field. It wraps the run's cancelable
// context (canceled when the run ends, when its lock is lost, or by its
// parent), so one allocation holds the whole run.
//
// A Batch reaches its Scheduler only through the run's methods (checkKill,
// switchOff, loadCheckpoint, saveCheckpoint, emit), never through its
// fields. Outside a Scheduler (a Batch run directly, say) s is nil, and
// those methods do nothing: no kill switch, no checkpoint, no events.
type run struct {
	context.Context
	cancel context.CancelCauseFunc
	// ctx is the context the next step of the chain runs under: the run
	// itself, or one a middleware or a guard derived from it (chain.go).
	ctx context.Context

	s       *Scheduler // nil when a Batch runs outside a Scheduler
	e       *entry
	job     string
	trigger Trigger
	tick    time.Time
	// quiet is how long before tick the spec names no tick, when known
	// (tickSchedule.take): a claim mark within it leaves no gap.
	quiet  time.Duration
	manual *manualArgs // of a manual run that has any; nil otherwise

	start     time.Time
	batches   atomic.Int64
	processed atomic.Int64
	failed    atomic.Int64
	// duplicates counts RunManually items dropped as copies of an earlier one
	duplicates atomic.Int64

	prev, next *run // in its shard of Scheduler.runs

	token atomic.Int64 // the run lock's fencing token (Report.Token); set by holdLease, read by ReportFrom

	// gap: the claim of a CatchUp job's tick found missed ticks it did not
	// run here (catchup.go); nil otherwise.
	gap *missedGap
	// pinLost closes once the run was told that its pinned lock was taken
	// away (see pinner); set under the lock's mutex, nil while it is held.
	pinLost chan struct{}

	// memJob is the memory Locker's state of the job while this run holds
	// its lock, pinned (claimMemory): the run is then its own lease, with
	// its token in token. nil otherwise.
	memJob *memJob

	mu      sync.Mutex
	more    bool   // the batch loop stopped at MaxBatches with work left
	tripped bool   // the runaway guard switched the job off
	shard   uint8  // of Scheduler.runs (here, beside the other small fields: the run is 288 B)
	fired   bool   // a scheduled fire: the run's context hangs off nothing but the Scheduler's Stop
	cause   error  // context.Cause of the run's context when it ended canceled
	stack   string // of a panic

	// rep is where the run's Report goes when the run ends, for runOnce's
	// caller; nil for a scheduled fire or a catch-up run, whose Report
	// nobody reads back: it is then made on the stack at the end (finish),
	// copied into the memory history's ring, and an object of its own only
	// when a finished event carries it.
	rep *Report
}

// missedGap is what the claim of a CatchUp job's tick found missed: ticks
// after the mark prev, the last being last. Apart from the run, which
// every run pays for, as manualArgs.
type missedGap struct{ prev, last time.Time }

// manualArgs are what a manual run may have that a scheduled one never
// has, apart, so that the run of a scheduled fire fits a smaller size
// class.
type manualArgs struct {
	items []any  // RunManually's items; nil for a whole run
	by    string // who asked for a manual run (ActorFrom)
}

// items are RunManually's items; nil for a whole run.
func (r *run) items() []any {
	if r.manual == nil {
		return nil
	}
	return r.manual.items
}

// by is who asked for a manual run (ActorFrom).
func (r *run) by() string {
	if r.manual == nil {
		return ""
	}
	return r.manual.by
}

type runKey struct{}

// Value implements context.Context: runKey answers the run itself.
func (r *run) Value(key any) any {
	if _, ok := key.(runKey); ok {
		return r
	}
	return r.Context.Value(key)
}

// runFrom returns the run of ctx, or a detached one when a Job runs outside
// a Scheduler (a Batch called directly in a test, say): s is nil, and the
// run's methods that reach the Scheduler do nothing.
func runFrom(ctx context.Context) *run {
	if run, ok := ctx.Value(runKey{}).(*run); ok {
		return run
	}
	return &run{job: "(unscheduled)", trigger: TriggerManual}
}

// cronFire is the cron.Job robfig/cron runs for an entry: the entry itself
// under another method set, so registering a job allocates no closure.
type cronFire entry

// Run implements cron.Job: fireAt, by hand (one frame less under the run),
// between the stack's enter and leave: the stack is grown at the top, where
// there is little to copy, when the job's runs need it (stack.go).
func (f *cronFire) Run() {
	e := (*entry)(f)
	grown := e.stack.enter()
	top := stackPointer()
	if r := e.s.tickRun(e, time.Now()); r != nil {
		r.do(e.s.base)
	}
	e.stack.leave(grown, stackPointer() != top)
}

// fireAt runs the tick that a fire at now stands for (see tickSchedule.take),
// or reports the fire as skipped (SkipTickTaken) when it stands for a tick
// this process has run already.
func (s *Scheduler) fireAt(e *entry, now time.Time) {
	if r := s.tickRun(e, now); r != nil {
		r.do(s.base)
	}
}

// tickRun is the run of the tick a fire at now stands for, or nil when
// the fire is stale (reported here). It returns before the run goes, so
// its frame (robfig's Next, below take) is off the stack while the job
// runs.
//
//go:noinline
func (s *Scheduler) tickRun(e *entry, now time.Time) *run {
	tick, quiet, err := e.ticks.take(now)
	if err != nil {
		s.staleFire(e, tick, err)
		return nil
	}
	return &run{s: s, e: e, job: e.name, trigger: TriggerSchedule, tick: tick, quiet: quiet}
}

// staleFire reports a fire that stood for a tick this process has run
// already (or for none), if anyone listens.
func (s *Scheduler) staleFire(e *entry, tick time.Time, err error) {
	if !s.heard(EventSkipped, outcomeTickTaken, slog.LevelInfo) {
		return
	}
	err = &SkipError{Job: e.name, Reason: ErrTickTaken, detail: err.Error()}
	s.emitEvent(&Event{Kind: EventSkipped, Job: e.name, Trigger: TriggerSchedule, Tick: tick, Skip: outcomeTickTaken, Err: err})
}

// emit sends ev to the observers, the logger and the history (events.go);
// it does nothing for a run outside a Scheduler.
func (r *run) emit(ev *Event) { r.s.emitEvent(ev) }

// begin marks the start of the job and raises EventStarted, if anyone
// listens: the Event is built in started, off the stack of a run nobody
// listens to.
func (r *run) begin() {
	r.mu.Lock()
	r.start = time.Now()
	r.mu.Unlock()
	if r.s != nil && r.s.heard(EventStarted, "", slog.LevelDebug) { // eventLevel's for EventStarted
		r.started()
	}
}

// started raises EventStarted.
//
//go:noinline
func (r *run) started() {
	var ev Event
	r.initEvent(&ev, EventStarted, nil)
	r.s.emitEvent(&ev)
}

// setMore records that the batch loop stopped at MaxBatches with work
// left (Report.More).
func (r *run) setMore() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.more = true
}

// execute runs e once through its guard chain for trig and reports the
// outcome.
//
// Allocation budget: a scheduled run of a no-op job on the memory backends,
// with no observer and a logger that drops Info, allocates runAllocBudget
// (3) objects: the run (which is also its context, and its own lease of
// the memory lock: see claimMemory), and the cancelable context below it
// and its cancel func. Its Report is made on the stack when it ends and
// copied into the memory history's ring (run.finish). No timer,
// goroutine, Lease, context per guard or event is made for it: the
// watchdog shares one timer for the process, the memory stores are called
// without a deadline, and an event nobody takes is not built. robfig/cron
// adds the goroutine it starts per fire. A manual run adds its Report and
// the hook that cancels it with the Scheduler; an observer, a logger that
// takes the events, a Redis backend, a Timeout or HardKill add their own.
func (s *Scheduler) execute(ctx context.Context, e *entry, trig Trigger, tick time.Time, items []any) Report {
	return *s.runOnce(ctx, e, trig, tick, items).rep
}

// runOnce is execute; the Report is in the run it returns (run.rep).
func (s *Scheduler) runOnce(ctx context.Context, e *entry, trig Trigger, tick time.Time, items []any) *run {
	run := &run{s: s, e: e, job: e.name, trigger: trig, tick: tick, rep: new(Report)}
	by := ""
	if trig == TriggerManual {
		by = ActorFrom(ctx)
	}
	if items != nil || by != "" {
		run.manual = &manualArgs{items: items, by: by}
	}
	if trig == TriggerSchedule { // a tick given by hand (RunTick): fires note theirs in take
		e.ticks.takenTick(tick)
	}
	run.do(ctx)
	return run
}

// do runs r, made by runOnce or tickRun, under ctx (s.base for a scheduled
// fire), and leaves its Report in r.rep when r has one.
func (r *run) do(ctx context.Context) {
	if !r.s.track(r.e) {
		r.refuse()
		return
	}
	defer r.end()
	r.open(ctx)
	r.finish(r.runChain())
}

// open makes r's context, below ctx, and registers r with the runs that
// Stop cancels.
//
//go:noinline
func (r *run) open(ctx context.Context) {
	if ctx == r.s.base {
		// A scheduled run. Its context does not hang below s.base: every
		// run would then register with, and leave, one context's lock
		// and map. The registry cancels it at Stop instead, as s.base would.
		ctx = context.Background()
		r.fired = true
	}
	r.Context, r.cancel = context.WithCancelCause(ctx)
	r.s.runs.add(r)
}

// end undoes do's registrations, the last first, even when do panicked:
// an observer or a logger in finish, or open given a nil context (RunTick's
// caller's), whose run has no context and is not registered.
func (r *run) end() {
	if r.cancel != nil {
		r.s.runs.remove(r)
		r.cancel(nil)
	}
	r.s.untrack(r.e)
}

// sharesBudget reports whether r's Locker calls may take the Scheduler's
// shared call budget (budget.go): a scheduled fire whose context no
// middleware or guard has replaced, so that nothing but Stop (which ends
// the shared budget's parent too) can end it before the call, and no value
// of a caller's (a trace span, say) is lost on the way to the store.
func (r *run) sharesBudget() bool { return r.fired && r.ctx == context.Context(r) }

// The frames of execute and of everything below it are on the stack of
// every run's goroutine, which starts small: a copy of a Report or an Event
// held there across the run costs a stack growth (a copy of the stack).
// So the functions that build them are siblings of the run, not its
// callers.

// refuse reports a run the stopped Scheduler did not start.
func (r *run) refuse() {
	err := skip(r, ErrStopped, nil, "not run")
	if r.rep != nil {
		r.fillReport(r.rep, err)
	}
	r.s.emitEvent(&Event{Kind: EventSkipped, Job: r.job, Trigger: r.trigger, Tick: r.tick, Skip: skipOutcome(ErrStopped), Err: err})
}

// finish turns the chain's error into the run's Report (r.rep, or one on
// the stack) and raises its finished or skipped event. Not inlined: its
// Report on the stack must not be in do's frame, under the whole run.
//
//go:noinline
func (r *run) finish(err error) {
	var local Report // never escapes: whoever keeps a Report gets a copy
	rep := r.rep
	if rep == nil {
		rep = &local
	}
	r.fillReport(rep, err)
	if rep.Err == nil && r.s.reportUnkept() && !r.s.logEnabled(slog.LevelInfo) { // finishedLevel's for a run without error
		// The common run, heard by the memory history only: straight into
		// its ring, with no Event and no HistoryEntry built on the way,
		// and kept there as the job's last report too.
		if r.s.history.appendDone(r.s, r.e, rep) {
			r.e.lastIsInRing()
		} else {
			r.e.setLast(rep)
		}
		return
	}
	r.finishEvent(rep)
}

// finishEvent raises the finished or skipped event of r's Report, which is
// r.rep or, for a scheduled fire or a catch-up run, local (on finish's
// stack): a finished event then carries a copy of its own. A skipped event
// carries only the Report's Err, so a skip copies nothing.
//
//go:noinline
func (r *run) finishEvent(local *Report) {
	var ev Event
	if se, ok := errors.AsType[*SkipError](local.Err); ok {
		r.initEvent(&ev, EventSkipped, local.Err)
		ev.Skip = skipOutcome(se.Reason)
	} else {
		rep := r.rep
		if rep == nil {
			rep = new(Report)
			*rep = *local
		}
		r.e.setLast(rep)
		r.initEvent(&ev, EventFinished, rep.Err)
		ev.Report = rep // the run is over: nothing changes it any more
	}
	r.s.emitEvent(&ev)
}

// reportUnkept reports whether nobody but the memory history hears of a
// finished run: no observer gets its event, and the history is the memory
// one, which copies a run's Report into its ring (memEntry). A run without
// error then goes straight into the ring (run.finish), with no event and
// no Report of its own built.
func (s *Scheduler) reportUnkept() bool {
	if len(s.cfg.observers) > 0 {
		return false
	}
	_, ok := s.history.storeOf(s).(*memoryHistory)
	return ok
}

// fillReport turns the run's state and the chain's error into *rep, which
// is zero. It sets rep's fields one by one: a Report literal would be one
// more Report on the stack, under the job when it calls ReportFrom.
func (r *run) fillReport(rep *Report, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep.Job, rep.Trigger, rep.Tick, rep.By, rep.Start, rep.Err = r.job, r.trigger, r.tick, r.by(), r.start, err
	rep.Token = r.token.Load()
	if r.s != nil {
		rep.Instance = r.s.cfg.instance
	}
	if err != nil { // errors.As's target escapes: an allocation a run without error does without
		if _, ok := errors.AsType[*SkipError](err); ok {
			return
		}
	}
	if !r.start.IsZero() { // zero when a middleware failed before the guards let the run start
		rep.Duration = time.Since(r.start)
	}
	rep.Batches = int(r.batches.Load())
	rep.Processed = int(r.processed.Load())
	rep.Failed = int(r.failed.Load())
	rep.Duplicates = int(r.duplicates.Load())
	if r.cause != nil {
		rep.Err = ended(r.cause, err) // outcome.go
	}
	rep.More = r.more && rep.Err == nil
	rep.Tripped = r.tripped
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

// add registers run, whose context is made.
func (r *runRegistry) add(run *run) {
	run.shard = uint8(rand.Uint32() % uint32(len(r.shards)))
	sh := &r.shards[run.shard]
	sh.mu.Lock()
	run.next = sh.head
	if sh.head != nil {
		sh.head.prev = run
	}
	sh.head = run
	sh.mu.Unlock()
	if c := r.cause.Load(); c != nil {
		run.cancel(*c)
	}
}

func (r *runRegistry) remove(run *run) {
	sh := &r.shards[run.shard]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if run.prev != nil {
		run.prev.next = run.next
	} else {
		sh.head = run.next
	}
	if run.next != nil {
		run.next.prev = run.prev
	}
	run.prev, run.next = nil, nil
}

// cancelAll cancels every run going now, and every run added from now on,
// with cause.
func (r *runRegistry) cancelAll(cause error) {
	r.cause.CompareAndSwap(nil, &cause)
	c := *r.cause.Load()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for run := sh.head; run != nil; run = run.next {
			run.cancel(c)
		}
		sh.mu.Unlock()
	}
}

// track counts a run as going; it refuses once the scheduler is stopped, so
// Stop's wait sees every run (runGate).
//
// The entry counts the run before the gate does: Stop, whose ctx ended,
// names the jobs with runs going (runningJobs, from entry.active) and waits
// unbounded when it finds none, so a run the gate counts must already show
// there. A refused run shows there for an instant, as none did before.
func (s *Scheduler) track(e *entry) bool {
	e.active.Add(1)
	if !s.wg.track() {
		e.active.Add(-1)
		return false
	}
	return true
}

func (s *Scheduler) untrack(e *entry) {
	e.active.Add(-1)
	s.wg.done()
}

// ReportFrom is for Middleware (tracing, metrics): inside a run it returns
// the Report of the run of ctx as it stands, given the error the rest of
// the chain returned — the Report the Scheduler is about to emit, with the
// job's name, trigger, tick, instance, batches, items and why it stopped or
// was skipped. ok is false outside a run. A job reads its run lock's
// fencing token as Token of ReportFrom(ctx, nil). The context of a Locker
// call (and so of a go-redis hook under it) carries the run too.
func ReportFrom(ctx context.Context, err error) (r Report, ok bool) {
	run, ok := ctx.Value(runKey{}).(*run)
	if !ok {
		return Report{}, false
	}
	run.fillReport(&r, err) // into r: one Report on the stack, not two
	return r, true
}

// runAllocBudget is the most objects a scheduled run of a no-op job
// allocates on the memory backends with no observer and a logger that
// drops Info (alloc_test.go holds it; see execute). Before issue 8's rework
// a run allocated 43; 5 before the Report moved into the run, 4 before the
// run became its own memory lease.
const runAllocBudget = 3
