package cronguard

import (
	"context"
	"testing"
	"time"
)

// The MemoryLocker's jobs do not share a lock: while one job's state is
// held (a claim or release in progress), another job's claim, lock and
// release go through. With one mutex for all jobs, the 1,000 claims of a
// shared tick queued behind each other.
func TestMemoryLockerJobsDoNotWaitForEachOther(t *testing.T) {
	m := NewMemoryLocker().(*memoryLocker)
	ctx := context.Background()
	busy := m.job("busy")
	busy.mu.Lock()
	defer busy.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		c, err := m.Claim(ctx, "other", t0, time.Minute, "a")
		if err == nil && c.Lease != nil {
			err = c.Lease.Release(ctx)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a claim of another job waited for the busy job's lock")
	}
}
