package cronguard

import (
	"context"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
)

// A keyset cursor saved by one instance is where the next run on another
// instance starts, through Redis.
func TestRedisCheckpointsAcrossInstances(t *testing.T) {
	srv := redistest.Start(t)
	var afters []string
	job := Batch[int]{Fetch: keysetTable(10, &afters), Process: noop, Key: itoa, Size: 3, MaxBatches: 2, Checkpoint: true}
	// The memory switch: this test is about checkpoints, not about waiting
	// for the Redis switch's first load.
	a, _ := newTest(t, WithRedis(srv.Client(t)), WithKillSwitch(NewMemoryKillSwitch()), WithInstanceID("a"))
	b, _ := newTest(t, WithRedis(srv.Client(t)), WithKillSwitch(NewMemoryKillSwitch()), WithInstanceID("b"))
	_ = a.Register("walk", "@every 1m", job)
	_ = b.Register("walk", "@every 1m", job)
	r1 := tickAt(t, a, "walk", t0)
	r2 := tickAt(t, b, "walk", t0.Add(time.Minute))
	if r1.Processed != 6 || r2.Processed != 4 {
		t.Fatalf("runs processed %d then %d, want 6 then the remaining 4", r1.Processed, r2.Processed)
	}
	if afters[2] != "6" {
		t.Fatalf("instance b started after %q, want the cursor \"6\" instance a saved (afters %q)", afters[2], afters)
	}
	got, err := srv.Client(t).HGet(context.Background(), "cronguard:checkpoint", "walk").Result()
	if err != nil || got != "10" {
		t.Fatalf("HGET cronguard:checkpoint walk = %q, %v", got, err)
	}
}
