package cronguard

import "time"

// InstanceID returns the name of this instance in claims, reports and
// events (WithInstanceID; hostname-pid by default).
func (s *Scheduler) InstanceID() string { return s.cfg.instance }

// flagRecorder is a kill switch that records who flipped a flag last, why
// and when: the memory and Redis switches do, and the Unleash switch gives
// the toggle's name as the reason. Scheduler.Job shows it in JobInfo
// (EnabledBy, EnabledReason, EnabledAt). Flipped reads the switch's local
// state only, never a store, so it is cheap. A switch of your own may
// implement it: the method is all it takes.
type flagRecorder interface {
	Flipped(flag string) (by, reason string, at time.Time)
}

// Flipped implements flagRecorder.
func (m *memoryKillSwitch) Flipped(flag string) (by, reason string, at time.Time) {
	st := m.State(flag)
	return st.By, st.Reason, st.At
}

// flipped reads the record of flag, when the kill switch keeps one.
func (s *Scheduler) flipped(flag string) (by, reason string, at time.Time) {
	if r, ok := s.cfg.killSwitch.(flagRecorder); ok {
		return r.Flipped(flag)
	}
	return "", "", time.Time{}
}
