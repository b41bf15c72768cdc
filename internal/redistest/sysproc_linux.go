//go:build linux

package redistest

import (
	"os/exec"
	"runtime"
	"syscall"
)

// sysProcAttr asks the kernel to SIGKILL redis-server when the thread that
// started it exits, so a test binary that dies without running its
// cleanups (a -timeout panic, a kill) leaves no redis-server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// startCmd starts cmd on a locked OS thread. Pdeathsig fires when the
// forking thread exits, and the Go runtime only ends threads that are
// locked when their goroutine exits; unlocking afterwards returns the
// thread to the pool, where it lives as long as the process.
func startCmd(cmd *exec.Cmd) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.Start()
}
