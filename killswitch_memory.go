package cronguard

import (
	"context"
	"sync"
	"time"
)

// memoryKillSwitch is the embedded kill switch: flags in this process's
// memory, every flag on until switched off. Flips reach this process only;
// a HardKill run is canceled as soon as SetEnabled switches it off.
//
// Every run reads its flag, so the flags are in a sync.Map, whose reads
// write nothing shared: a read lock would write its counter in every run,
// and the runs of a tick, on every core at once, would pass that cache
// line from core to core.
type memoryKillSwitch struct {
	flags    sync.Map // flag → flagState, recorded by flips only
	watchers flagWatchers
}

// NewMemoryKillSwitch returns a switch with every flag on.
func NewMemoryKillSwitch() FlippableKillSwitch {
	return &memoryKillSwitch{}
}

// Enabled implements KillSwitch. It never fails.
func (m *memoryKillSwitch) Enabled(_ context.Context, flag string) (bool, error) {
	return m.State(flag).Enabled, nil
}

// SetEnabled implements FlippableKillSwitch.
func (m *memoryKillSwitch) SetEnabled(ctx context.Context, flag string, on bool, reason string) error {
	m.flags.Store(flag, flagState{Enabled: on, Reason: reason, By: ActorFrom(ctx), At: time.Now()})
	m.watchers.notify(flag)
	return nil
}

// watch implements flagWatcher.
func (m *memoryKillSwitch) watch(flag string, fn func()) (stop func()) {
	return m.watchers.add(flag, fn)
}

// on is Enabled, in a small frame.
func (m *memoryKillSwitch) on(flag string) bool {
	st, ok := m.flags.Load(flag)
	return !ok || st.(flagState).Enabled
}

// State returns the flag's recorded state; an unknown flag is on.
func (m *memoryKillSwitch) State(flag string) flagState {
	st, ok := m.flags.Load(flag)
	if !ok {
		return flagState{Enabled: true}
	}
	return st.(flagState)
}
