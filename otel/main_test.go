package cgotel_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the tests when a goroutine outlives them: a stopped
// scheduler and a shut down tracer provider leave none behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
