package cronguard

import (
	"context"
	"fmt"
	"sync"
)

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

// enabled asks the kill switch about flag under the call budget. When the
// switch fails, the last known answer holds; with none the answer is off
// (or on, WithFailOpen) and the error wraps ErrFlagUnavailable. Each such
// fallback raises an EventFlag.
func (s *Scheduler) enabled(ctx context.Context, flag string) (bool, error) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
	on, err := s.cfg.killSwitch.Enabled(cctx, flag)
	cancel()
	if err == nil {
		s.flags.remember(flag, on)
		return on, nil
	}
	st := runFrom(ctx)
	ev := st.event(EventFlag, fmt.Errorf("flag %q: %w", flag, err))
	if st.e == nil { // asked outside a run (Jobs, hard-kill poll): name the flag
		ev.Job = flag
	}
	on, known := s.flags.recall(flag)
	switch {
	case known:
		ev.Enabled = on
		s.emit(ev)
		return on, nil
	case s.cfg.failOpen:
		ev.Enabled = true
		s.emit(ev)
		return true, nil
	}
	s.emit(ev)
	return false, fmt.Errorf("%w: flag %q, no earlier answer: %w", ErrFlagUnavailable, flag, err)
}
