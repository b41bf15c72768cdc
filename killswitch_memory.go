package cronguard

import (
	"context"
	"sync"
	"time"
)

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
