package cronguard

// InstanceID returns the name of this instance in claims, reports and
// events (WithInstanceID; hostname-pid by default).
func (s *Scheduler) InstanceID() string { return s.cfg.instance }

// SwitchState returns the recorded state of the job's kill switch flag —
// on or off, why, by whom, since when — when the switch keeps one: the
// memory and Redis switches do (ok true); Unleash does not (ok false). It
// reads the switch's local state only, never a store. It returns
// ErrUnknownJob for a name that was never registered.
func (s *Scheduler) SwitchState(job string) (st FlagState, ok bool, err error) {
	e, err := s.lookup(job)
	if err != nil {
		return FlagState{}, false, err
	}
	sw, ok := s.cfg.killSwitch.(interface{ State(flag string) FlagState })
	if !ok {
		return FlagState{}, false, nil
	}
	return sw.State(e.cfg.flag), true, nil
}
