package cronguard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// Everything the kill switch does to a job, in the order a run meets it:
// the interfaces, the fail policy (the last known value of each flag), the
// kill switch guard and its re-checks, the hard-kill guard, the per-batch
// check of a Batch, and flip, the one switch-off of the package (SetEnabled
// and the runaway guard). The memory switch is in killswitch_memory.go, the
// Redis switch in killswitch_redis*.go.

// KillSwitch answers whether a job may run. The Scheduler asks it before
// every scheduled run and before every batch, so Enabled must be cheap:
// implementations answer from a local cache and refresh it in the background.
// The flag name is the job name unless the job was registered with Flag.
//
// When Enabled returns an error the Scheduler keeps the last answer it had
// for the flag; with none, the job does not run (see WithFailOpen). Each
// such decision raises an EventFlag, and JobInfo.EnabledErr carries the
// error.
type KillSwitch interface {
	Enabled(ctx context.Context, flag string) (bool, error)
}

// FlippableKillSwitch is a KillSwitch that can also be flipped from the
// program: the memory and Redis switches are. Scheduler.SetEnabled and the
// runaway guard use it. A switch whose flags are flipped elsewhere (the
// Unleash switch, github.com/cronguard/cronguard/unleash: in Unleash) may
// implement SetEnabled to say where: it returns an error wrapping
// ErrNotFlippable that names the place, and changes nothing.
type FlippableKillSwitch interface {
	KillSwitch
	// SetEnabled turns flag on or off; reason is recorded with the time.
	SetEnabled(ctx context.Context, flag string, on bool, reason string) error
}

// flagState is the recorded state of one flag.
type flagState struct {
	Enabled bool      `json:"enabled"`
	Reason  string    `json:"reason,omitempty"`
	By      string    `json:"by,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// degradedError is what a switch returns from Enabled when it answers from
// its store but cannot promise its usual freshness (the Redis switch whose
// subscription is silent answers from the hash, re-read every 500ms). The
// Scheduler acts on the answer, remembers it as the last known value, and
// raises an EventFlag with the error, so the degradation shows.
type degradedError struct {
	on  bool
	err error
}

func (e *degradedError) Error() string { return e.err.Error() }
func (e *degradedError) Unwrap() error { return e.err }

type actorKey struct{}

// WithActor records who acts in ctx (an operator's name, "admin-api",
// "runaway-guard"); flippable switches store it with a flip.
func WithActor(ctx context.Context, who string) context.Context {
	return context.WithValue(ctx, actorKey{}, who)
}

// ActorFrom returns the actor recorded with WithActor, or "".
func ActorFrom(ctx context.Context) string {
	s, _ := ctx.Value(actorKey{}).(string)
	return s
}

// flagMemory keeps the last answer the kill switch gave for each flag, so
// that a store that cannot answer does not flip jobs on or off by itself.
type flagMemory struct {
	mu   sync.Mutex
	last map[string]bool
}

func (m *flagMemory) remember(flag string, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.last == nil {
		m.last = map[string]bool{}
	}
	m.last[flag] = on
}

func (m *flagMemory) recall(flag string) (on, known bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	on, known = m.last[flag]
	return on, known
}

// flagAnswer is what the fail policy makes of one kill switch answer.
type flagAnswer struct {
	on bool
	// err is the switch's error; on then comes from the fail policy (or,
	// for a degraded switch, from the store without the usual freshness).
	err error
	// unavailable: the switch could not answer and no answer is known, so
	// on is the WithFailOpen default, not an answer about the flag.
	unavailable bool
}

// ask asks the kill switch about flag (askBounded) and applies the
// fail policy, without raising events. Every answer the switch gives is
// remembered; when the switch fails, the last remembered answer holds; with
// none, the answer is off (or on, WithFailOpen).
func (s *Scheduler) ask(ctx context.Context, flag string) flagAnswer {
	if ks, ok := s.cfg.killSwitch.(*memoryKillSwitch); ok {
		// It answers from memory and never fails: no call budget (a timer
		// per run), and no last answer to remember for the fail policy.
		on, _ := ks.Enabled(ctx, flag)
		return flagAnswer{on: on}
	}
	on, err := s.askBounded(ctx, flag)
	if err == nil {
		s.flags.remember(flag, on)
		return flagAnswer{on: on}
	}
	if d := (*degradedError)(nil); errors.As(err, &d) {
		s.flags.remember(flag, d.on)
		return flagAnswer{on: d.on, err: err}
	}
	if on, known := s.flags.recall(flag); known {
		return flagAnswer{on: on, err: err}
	}
	return flagAnswer{on: s.cfg.failOpen, err: err, unavailable: true}
}

// askBounded asks the kill switch under the call budget. A RedisKillSwitch
// answers from its cache and never blocks: it is asked without one, which
// saves a context and a timer per run.
func (s *Scheduler) askBounded(ctx context.Context, flag string) (bool, error) {
	if ks, ok := s.cfg.killSwitch.(*RedisKillSwitch); ok {
		return ks.Enabled(ctx, flag)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
	defer cancel()
	return s.cfg.killSwitch.Enabled(ctx, flag)
}

// enabled is the kill switch check of a run: ask, plus an EventFlag for
// each answer the switch could not give cleanly. With no answer and none
// known it returns an error wrapping ErrBackend that names the job and the
// flag (unless WithFailOpen): the job does not run.
func (s *Scheduler) enabled(ctx context.Context, job, flag string) (bool, error) {
	a := s.flagEvent(ctx, flag)
	if a.unavailable && !a.on {
		return false, flagUnavailable(job, flag, a.err)
	}
	return a.on, nil
}

// flagUnavailable is the error of a kill switch that could not answer with
// no earlier answer known: ErrBackend, naming the store, the job and the
// flag.
func flagUnavailable(job, flag string, err error) error {
	return fmt.Errorf("%w: kill switch: job %q, flag %q, no earlier answer: %w", ErrBackend, job, flag, err)
}

// flagInfo is the kill switch check of JobInfo: the value the next run would
// act on, and the switch's error even when the fail policy supplied the
// value, so a dashboard shows it.
func (s *Scheduler) flagInfo(ctx context.Context, job, flag string) (bool, error) {
	a := s.flagEvent(ctx, flag)
	switch {
	case a.unavailable && !a.on:
		return false, flagUnavailable(job, flag, a.err)
	case a.err != nil:
		return a.on, fmt.Errorf("flag %q: %w", flag, a.err)
	}
	return a.on, nil
}

// flagEvent is ask plus the EventFlag of an unclean answer.
func (s *Scheduler) flagEvent(ctx context.Context, flag string) flagAnswer {
	a := s.ask(ctx, flag)
	if a.err == nil {
		return a
	}
	s.flagUnclean(ctx, flag, a)
	return a
}

// flagUnclean raises the EventFlag of an answer the switch could not give
// cleanly.
func (s *Scheduler) flagUnclean(ctx context.Context, flag string, a flagAnswer) {
	run := runFrom(ctx)
	ev := run.event(EventFlag, fmt.Errorf("flag %q: %w", flag, a.err))
	if run.e == nil { // asked outside a run (Jobs): name the flag
		ev.Job = flag
	}
	ev.Enabled = a.on
	s.emit(ev)
}

// killSwitchGuard lets a scheduled run go on only while its job's flag is
// on (switchedOff).
func killSwitchGuard(next step) step {
	return func(run *run) error {
		if err := run.switchedOff(); err != nil {
			return err
		}
		return next(run)
	}
}

// switchedOff returns the skip of r when its job's flag is off, or unknown
// with no earlier answer (the fail policy): the kill switch guard, and the
// re-check of a queued run (overlapGuard) and of the tick after a catch-up
// run (catchUpGuard).
func (r *run) switchedOff() error {
	if ks, ok := r.s.cfg.killSwitch.(*memoryKillSwitch); ok && ks.on(r.e.cfg.flag) {
		return nil // the common case, in small frames (see stack.go)
	}
	return r.askSwitch()
}

// askSwitch is switchedOff through the Scheduler's fail policy.
//
//go:noinline
func (r *run) askSwitch() error {
	on, err := r.s.enabled(r.ctx, r.job, r.e.cfg.flag)
	if err != nil {
		return skip(r, ErrBackend, err, "")
	}
	if !on {
		return skip(r, ErrKilled, nil, "flag "+strconv.Quote(r.e.cfg.flag))
	}
	return nil
}

// checkKill is the per-batch check of a Batch: it re-reads the kill switch
// (from the switch's local cache: no round trip) before batch n of a
// scheduled run. Manual and catch-up runs, and a Batch run outside a
// Scheduler, are not checked.
func (r *run) checkKill(ctx context.Context, n int) error {
	if r.s == nil || r.trigger != TriggerSchedule {
		return nil
	}
	on, err := r.s.enabled(ctx, r.job, r.e.cfg.flag)
	if err != nil {
		return fmt.Errorf("cronguard: before batch %d: %w", n, err)
	}
	if !on {
		return fmt.Errorf("%w: job %q: flag %q went off before batch %d", ErrKilled, r.job, r.e.cfg.flag, n)
	}
	return nil
}

// flagWatcher is implemented by kill switches that can tell at once when a
// flag may have changed (the memory and Redis switches). The hard-kill guard
// uses it to cancel a run as soon as its flag goes off; without it, the
// guard only polls (WithKillPoll).
type flagWatcher interface {
	// watch calls fn after each change the switch sees to flag, until stop
	// is called. fn must not block: it runs on the switch's goroutines.
	watch(flag string, fn func()) (stop func())
}

// flagWatchers is the registry of watch callbacks of a switch.
type flagWatchers struct {
	mu   sync.Mutex
	next uint64
	fns  map[string]map[uint64]func()
}

// add registers fn for flag and returns the function that removes it.
func (w *flagWatchers) add(flag string, fn func()) (stop func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = map[string]map[uint64]func(){}
	}
	if w.fns[flag] == nil {
		w.fns[flag] = map[uint64]func(){}
	}
	w.next++
	id := w.next
	w.fns[flag][id] = fn
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.fns[flag], id)
		if len(w.fns[flag]) == 0 {
			delete(w.fns, flag)
		}
	}
}

// notify calls the callbacks watching flag.
func (w *flagWatchers) notify(flag string) {
	w.mu.Lock()
	fns := make([]func(), 0, len(w.fns[flag]))
	for _, fn := range w.fns[flag] {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// hardKillGuard cancels a HardKill job's scheduled run with cause
// ErrKilled as soon as the job's flag goes off: at once when the switch
// reports changes (flagWatcher; the Redis switch within a round trip of
// the flip message), and in any case within the kill poll (WithKillPoll,
// default 100ms), the fallback for switches that do not report changes and
// for lost messages. It costs a goroutine, a channel and a context per run,
// so only HardKill jobs pay for it.
func hardKillGuard(next step) step {
	return func(run *run) error {
		if !run.e.cfg.hardKill {
			return next(run)
		}
		return hardKillRun(run, next)
	}
}

// hardKillRun is hardKillGuard for a HardKill job: its own function, so
// that the frame of a run without it stays small (see stack.go).
//
//go:noinline
func hardKillRun(run *run, next step) error {
	ctx, cancel := context.WithCancelCause(run.ctx)
	changed := make(chan struct{}, 1)
	if w, ok := run.s.cfg.killSwitch.(flagWatcher); ok {
		stop := w.watch(run.e.cfg.flag, func() {
			select {
			case changed <- struct{}{}:
			default: // a check is pending already
			}
		})
		defer stop()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		run.pollKill(ctx, changed, cancel)
	}()
	defer func() { cancel(nil); <-done }()
	return under(ctx, run, next)
}

// pollKill re-reads the flag when the switch reports a change and every
// kill poll, and cancels the run when the flag is off. A store that cannot
// answer never kills a run by itself: the fail policy's last known value
// decides (a run only started because that value was on, or fail-open with
// none, which stays on).
func (r *run) pollKill(ctx context.Context, changed <-chan struct{}, cancel context.CancelCauseFunc) {
	s, flag := r.s, r.e.cfg.flag
	t := time.NewTicker(s.cfg.killPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		// s.ask, not s.enabled: an outage must not raise an event ten
		// times a second.
		if a := s.ask(ctx, flag); !a.on { // unavailable is on here: the run started fail-open
			cancel(fmt.Errorf("%w: job %q: hard kill (flag %q)", ErrKilled, r.job, flag))
			return
		}
	}
}

// switchOff turns r's job off because its runaway guard tripped (why),
// through flip, as the actor "runaway-guard", and returns why with what
// became of the flag. A switch flipped elsewhere (ErrNotFlippable) and a
// run outside a Scheduler leave why as it is.
func (r *run) switchOff(ctx context.Context, why error) error {
	if r.s == nil {
		return why
	}
	err := r.s.flip(WithActor(context.WithoutCancel(ctx), "runaway-guard"), r.e, false, why.Error())
	switch {
	case err == nil:
		r.mu.Lock()
		r.tripped = true
		r.mu.Unlock()
		return fmt.Errorf("%w; flag %q switched off", why, r.e.cfg.flag)
	case !errors.Is(err, ErrNotFlippable):
		return fmt.Errorf("%w; switching flag %q off failed: %v", why, r.e.cfg.flag, err)
	}
	return why
}

// flip sets e's flag through a flippable switch, under the call budget. It is
// the one switch-off (and switch-on) of the package: SetEnabled and the
// runaway guard both use it. When an off cannot be written, this instance
// still remembers it, so that while the store cannot answer the job stays
// off here (fail safe); the store's next answer replaces it. A switch that
// is flipped elsewhere (its SetEnabled returns ErrNotFlippable) has nothing
// to write to: nothing is remembered, as for a switch that is not a
// FlippableKillSwitch at all, and the job follows the switch's answers.
func (s *Scheduler) flip(ctx context.Context, e *entry, on bool, reason string) error {
	fks, ok := s.cfg.killSwitch.(FlippableKillSwitch)
	if !ok {
		return fmt.Errorf("%w: job %q: %T is read-only; flip flag %q in its own store",
			ErrNotFlippable, e.name, s.cfg.killSwitch, e.cfg.flag)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
	defer cancel()
	if err := fks.SetEnabled(ctx, e.cfg.flag, on, reason); err != nil {
		if !on && !errors.Is(err, ErrNotFlippable) {
			s.flags.remember(e.cfg.flag, false)
		}
		return fmt.Errorf("cronguard: job %q: set flag %q to %t: %w", e.name, e.cfg.flag, on, err)
	}
	s.flags.remember(e.cfg.flag, on)
	s.recordFlip(ctx, e.name, on, reason)
	return nil
}
