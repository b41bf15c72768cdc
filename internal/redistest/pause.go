package redistest

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// Pause freezes the server with SIGSTOP, as a long GC pause, a VM
// migration or an overloaded host would: connections stay open, the
// kernel still accepts new ones, and nothing is answered until Continue.
// Pausing a server that is not running does nothing. Stop, Kill and
// Restart work on a paused server (Stop continues it so that it can exit).
func (s *Server) Pause(tb testing.TB) {
	tb.Helper()
	s.signal(tb, syscall.SIGSTOP)
}

// Continue resumes a server frozen by Pause with SIGCONT; it answers what
// it received meanwhile. Continuing a server that is not paused or not
// running does nothing.
func (s *Server) Continue(tb testing.TB) {
	tb.Helper()
	s.signal(tb, syscall.SIGCONT)
}

func (s *Server) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Errorf("redistest: signal %s (pid %d): %v", s.name, s.cmd.Process.Pid, err)
	}
}
