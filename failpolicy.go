package cronguard

import (
	"context"
	"errors"
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

// ask asks the kill switch about flag under the call budget and applies the
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
	cctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
	on, err := s.cfg.killSwitch.Enabled(cctx, flag)
	cancel()
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

// enabled is the kill switch check of a run: ask, plus an EventFlag for
// each answer the switch could not give cleanly. With no answer and none
// known it returns an error wrapping ErrFlagUnavailable (unless
// WithFailOpen): the job does not run.
func (s *Scheduler) enabled(ctx context.Context, flag string) (bool, error) {
	a := s.flagEvent(ctx, flag)
	if a.unavailable && !a.on {
		return false, fmt.Errorf("%w: flag %q, no earlier answer: %w", ErrFlagUnavailable, flag, a.err)
	}
	return a.on, nil
}

// flagInfo is the kill switch check of JobInfo: the value the next run would
// act on, and the switch's error even when the fail policy supplied the
// value, so a dashboard shows it.
func (s *Scheduler) flagInfo(ctx context.Context, flag string) (bool, error) {
	a := s.flagEvent(ctx, flag)
	switch {
	case a.unavailable && !a.on:
		return false, fmt.Errorf("%w: flag %q, no earlier answer: %w", ErrFlagUnavailable, flag, a.err)
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
	st := runFrom(ctx)
	ev := st.event(EventFlag, fmt.Errorf("flag %q: %w", flag, a.err))
	if st.e == nil { // asked outside a run (Jobs): name the flag
		ev.Job = flag
	}
	ev.Enabled = a.on
	s.emit(ev)
}
