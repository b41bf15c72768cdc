// Package testwait is the one way cronguard's tests, in every module, wait
// for a condition: polling, never a fixed sleep.
package testwait

import (
	"testing"
	"time"
)

// For polls cond every millisecond until it holds, failing the test after
// d; it returns how long that took.
func For(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}
