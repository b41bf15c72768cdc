package cronguardtest_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them: the
// schedulers New makes are stopped at cleanup and leave none behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
