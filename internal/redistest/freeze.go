//go:build unix

package redistest

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// Pid returns the process id of the running redis-server, or 0 when it is
// not running.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		return 0
	}
	return s.cmd.Process.Pid
}

// Freeze stops the server with SIGSTOP, as a stalled or paused machine
// would: connections stay open, commands queue up unanswered, and run once
// Thaw resumes it. A frozen server is thawed when the test ends, before it
// is stopped.
func (s *Server) Freeze(tb testing.TB) {
	tb.Helper()
	s.signal(tb, syscall.SIGSTOP)
	tb.Cleanup(func() { s.signal(tb, syscall.SIGCONT) })
}

// Thaw resumes a server stopped by Freeze (SIGCONT). Thawing a server that
// is not frozen does nothing.
func (s *Server) Thaw(tb testing.TB) {
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
		tb.Errorf("redistest: %v to redis-server (pid %d): %v", sig, s.cmd.Process.Pid, err)
	}
}
