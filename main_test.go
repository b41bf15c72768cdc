package cronguard

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them: a
// stopped scheduler, a finished run and a closed backend leave none behind.
//
// It is also the main of the instance processes that the chaos test starts
// (the test binary re-executed with CRONGUARD_CHAOS_CHILD set).
func TestMain(m *testing.M) {
	if spec := os.Getenv(chaosChildEnv); spec != "" {
		os.Exit(chaosChild(spec))
	}
	if spec := os.Getenv(missedChildEnv); spec != "" { // an instance of TestMissedTicksAndCatchUpSeparateProcesses
		os.Exit(missedChild(spec))
	}
	goleak.VerifyTestMain(m)
}
