package cgprom_test

import (
	"testing"

	"github.com/cronguard/cronguard/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// TestMain fails the tests when a goroutine outlives them: a stopped
// scheduler and a closed test server leave none behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startRedis starts a real redis-server for the test (skipped without one,
// failed under CI=true) and returns a client to it.
func startRedis(t *testing.T) *redis.Client {
	t.Helper()
	return redistest.Start(t).Client(t)
}
