package cronguard

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them: a
// stopped scheduler, a finished run and a closed backend leave none behind.
func TestMain(m *testing.M) {
	if spec := os.Getenv(missedChildEnv); spec != "" { // an instance of TestMissedTicksAndCatchUpSeparateProcesses
		os.Exit(missedChild(spec))
	}
	goleak.VerifyTestMain(m)
}
