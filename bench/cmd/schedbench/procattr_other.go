//go:build !linux

package main

import "syscall"

// childAttr: only Linux can tie the child's life to ours.
func childAttr() *syscall.SysProcAttr { return nil }
