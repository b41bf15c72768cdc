package main

import "syscall"

// childAttr makes the kernel kill redis-server when the benchmark dies, so a
// crashed or killed run leaves no server behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
