package cronguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

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

// memoryKillSwitch is the embedded kill switch: flags in this process's
// memory, every flag on until switched off. Flips reach this process only;
// a HardKill run is canceled as soon as SetEnabled switches it off.
type memoryKillSwitch struct {
	mu       sync.RWMutex
	flags    map[string]flagState
	watchers flagWatchers
}

// NewMemoryKillSwitch returns a switch with every flag on.
func NewMemoryKillSwitch() FlippableKillSwitch {
	return &memoryKillSwitch{flags: map[string]flagState{}}
}

// Enabled implements KillSwitch. It never fails.
func (m *memoryKillSwitch) Enabled(_ context.Context, flag string) (bool, error) {
	return m.State(flag).Enabled, nil
}

// SetEnabled implements FlippableKillSwitch.
func (m *memoryKillSwitch) SetEnabled(ctx context.Context, flag string, on bool, reason string) error {
	m.mu.Lock()
	m.flags[flag] = flagState{Enabled: on, Reason: reason, By: ActorFrom(ctx), At: time.Now()}
	m.mu.Unlock()
	m.watchers.notify(flag)
	return nil
}

// watch implements flagWatcher.
func (m *memoryKillSwitch) watch(flag string, fn func()) (stop func()) {
	return m.watchers.add(flag, fn)
}

// State returns the flag's recorded state; an unknown flag is on.
func (m *memoryKillSwitch) State(flag string) flagState {
	m.mu.RLock()
	defer m.mu.RUnlock()
	st, ok := m.flags[flag]
	if !ok {
		return flagState{Enabled: true}
	}
	return st
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
