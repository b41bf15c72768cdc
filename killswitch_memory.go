package cronguard

import (
	"context"
	"sync"
	"time"
)

// MemoryKillSwitch is the embedded kill switch: flags in this process's
// memory, every flag on until switched off. Flips reach this process only;
// a HardKill run is canceled as soon as SetEnabled switches it off.
type MemoryKillSwitch struct {
	mu       sync.RWMutex
	flags    map[string]FlagState
	watchers flagWatchers
}

// NewMemoryKillSwitch returns a switch with every flag on.
func NewMemoryKillSwitch() *MemoryKillSwitch {
	return &MemoryKillSwitch{flags: map[string]FlagState{}}
}

// Enabled implements KillSwitch. It never fails.
func (m *MemoryKillSwitch) Enabled(_ context.Context, flag string) (bool, error) {
	return m.State(flag).Enabled, nil
}

// SetEnabled implements FlippableKillSwitch.
func (m *MemoryKillSwitch) SetEnabled(ctx context.Context, flag string, on bool, reason string) error {
	m.mu.Lock()
	m.flags[flag] = FlagState{Enabled: on, Reason: reason, By: ActorFrom(ctx), At: time.Now()}
	m.mu.Unlock()
	m.watchers.notify(flag)
	return nil
}

// watch implements flagWatcher.
func (m *MemoryKillSwitch) watch(flag string, fn func()) (stop func()) {
	return m.watchers.add(flag, fn)
}

// State returns the flag's recorded state; an unknown flag is on.
func (m *MemoryKillSwitch) State(flag string) FlagState {
	m.mu.RLock()
	defer m.mu.RUnlock()
	st, ok := m.flags[flag]
	if !ok {
		return FlagState{Enabled: true}
	}
	return st
}
