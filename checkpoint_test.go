package cronguard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cronguard/cronguard/internal/redistest"
	"github.com/redis/go-redis/v9"
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

// cpStore is one CheckpointStore backend for the checkpoint tests: opts
// gives the options of a scheduler on it (every scheduler of one test shares
// the same store), load reads the saved cursor of a job.
type cpStore struct {
	opts func() []Option
	load func(t *testing.T, job string) string
}

// forEachCheckpointStore runs test on newMemoryCheckpoints and on
// NewRedisCheckpoints over a real redis-server.
func forEachCheckpointStore(t *testing.T, test func(t *testing.T, cs cpStore)) {
	t.Run("memory", func(t *testing.T) {
		mem := newMemoryCheckpoints()
		test(t, cpStore{
			opts: func() []Option { return []Option{WithCheckpointStore(mem)} },
			load: func(t *testing.T, job string) string {
				after, _ := mem.Load(context.Background(), job)
				return after
			},
		})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		test(t, cpStore{
			opts: func() []Option {
				// The memory switch: these tests are about checkpoints.
				return []Option{WithRedis(srv.Client(t)), WithKillSwitch(NewMemoryKillSwitch())}
			},
			load: func(t *testing.T, job string) string {
				after, err := srv.Client(t).HGet(context.Background(), "cronguard:checkpoint", job).Result()
				if err != nil && !errors.Is(err, redis.Nil) {
					t.Fatalf("HGET checkpoint: %v", err)
				}
				return after
			},
		})
	})
}

// tally counts, per id, the items processed without error.
type tally struct {
	mu sync.Mutex
	n  map[int]int
}

func newTally() *tally { return &tally{n: map[int]int{}} }

func (c *tally) add(id int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[id]++
}

func (c *tally) get(id int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// Issue 7 item 10: with PerSecond and a deadline, rate.Limiter.Wait failed at
// once when the next token came after the deadline; the batch took that for
// its end and the checkpoint was saved past items never processed (the run
// even said "done"). Now the run ends with its deadline, reports it, and the
// cursor stays at the last item processed: a follow-up run without the
// deadline processes every other item, each exactly once.
func TestBatchCheckpointCutByDeadlineLosesNothing(t *testing.T) {
	forEachCheckpointStore(t, func(t *testing.T, cs cpStore) {
		for _, c := range []struct {
			name     string
			opts     []JobOption
			runCtx   func() (context.Context, context.CancelFunc)
			stop     string
			sentinel error
		}{
			{"Timeout", []JobOption{Timeout(250 * time.Millisecond)}, noDeadline, "timeout", ErrTimeout},
			{"caller deadline", nil, func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 250*time.Millisecond)
			}, "canceled", context.DeadlineExceeded},
		} {
			t.Run(c.name, func(t *testing.T) {
				const n = 60
				job := "walk-" + c.name // the cases share the store
				done := newTally()
				var afters []string
				walk := Batch[int]{Fetch: keysetTable(n, &afters), Key: itoa, Size: 10, Checkpoint: true,
					PerSecond: 10, // an item every 100ms: the deadline comes after about 3
					Process:   func(_ context.Context, id int) error { done.add(id); return nil }}
				a, _ := newTest(t, append(cs.opts(), WithInstanceID("a"))...)
				if err := a.Register(job, "@every 1m", walk, c.opts...); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := c.runCtx()
				defer cancel()
				r1, _ := a.RunManually(ctx, job)
				if r1.Outcome() != c.stop || !errors.Is(r1.Err, c.sentinel) {
					t.Fatalf("cut run: %v; want stop %s with %v", r1, c.stop, c.sentinel)
				}
				if r1.Processed < 1 || r1.Processed >= n {
					t.Fatalf("cut run processed %d of %d, want some but not all", r1.Processed, n)
				}
				if got := cs.load(t, job); got != itoa(r1.Processed) {
					t.Fatalf("checkpoint after the cut run = %q, want %q: the last item processed", got, itoa(r1.Processed))
				}

				rest := walk
				rest.PerSecond = 0
				b, _ := newTest(t, append(cs.opts(), WithInstanceID("b"))...)
				if err := b.Register(job, "@every 1m", rest); err != nil {
					t.Fatal(err)
				}
				r2 := tickAt(t, b, job, t0.Add(time.Minute))
				if r2.Outcome() != "done" || r1.Processed+r2.Processed != n {
					t.Fatalf("follow-up run: %v; want done with the other %d items", r2, n-r1.Processed)
				}
				for id := 1; id <= n; id++ {
					if got := done.get(id); got != 1 {
						t.Errorf("item %d processed %d times, want exactly once", id, got)
					}
				}
			})
		}
	})
}

func noDeadline() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}

// With Concurrency 4 items finish out of order: when item 7 blocks until the
// timeout, items 8-10 are done but the cursor may only reach 6. The next run
// starts at 7: 8-10 are processed again (at least once), none is lost.
func TestBatchCheckpointConcurrentBlockedItem(t *testing.T) {
	forEachCheckpointStore(t, func(t *testing.T, cs cpStore) {
		const n, job = 40, "walk"
		done := newTally()
		var afters []string
		walker := func(block int) Batch[int] {
			return Batch[int]{Fetch: keysetTable(n, &afters), Key: itoa, Size: 10, Concurrency: 4, Checkpoint: true,
				Process: func(ctx context.Context, id int) error {
					if id == block {
						<-ctx.Done()
						return ctx.Err()
					}
					done.add(id)
					return nil
				}}
		}
		a, _ := newTest(t, append(cs.opts(), WithInstanceID("a"))...)
		_ = a.Register(job, "@every 1m", walker(7), Timeout(time.Second))
		r1 := tickAt(t, a, job, t0)
		if r1.Outcome() != "timeout" || !errors.Is(r1.Err, ErrTimeout) || r1.Processed != 9 || r1.Failed != 0 {
			t.Fatalf("cut run: %v; want timeout with 9 processed, the blocked item neither processed nor failed", r1)
		}
		if got := cs.load(t, job); got != "6" {
			t.Fatalf("checkpoint = %q, want \"6\": the last key before the blocked item", got)
		}
		b, _ := newTest(t, append(cs.opts(), WithInstanceID("b"))...)
		_ = b.Register(job, "@every 1m", walker(0))
		if r2 := tickAt(t, b, job, t0.Add(time.Minute)); r2.Outcome() != "done" || r2.Processed != n-6 {
			t.Fatalf("follow-up run: %v; want done with items 7..%d", r2, n)
		}
		for id := 1; id <= n; id++ {
			want := 1
			if id >= 8 && id <= 10 {
				want = 2 // done out of order behind the blocked item: repeated, not lost
			}
			if got := done.get(id); got != want {
				t.Errorf("item %d processed %d times, want %d", id, got, want)
			}
		}
	})
}

// A failed item is handled (counted, with its event): the cursor may pass
// it. Items the error budget cut short are not: the cursor stops before them.
func TestBatchCheckpointErrorBudget(t *testing.T) {
	s, _ := newTest(t)
	var afters []string
	_ = s.Register("walk", "@every 1m", Batch[int]{Fetch: keysetTable(20, &afters), Key: itoa, Size: 10,
		Checkpoint: true, MaxFailures: 1,
		Process: func(_ context.Context, id int) error {
			if id == 3 || id == 4 {
				return errors.New("smtp down")
			}
			return nil
		}})
	r := tickAt(t, s, "walk", t0)
	if r.Outcome() != "error_budget" || r.Processed != 2 || r.Failed != 2 {
		t.Fatalf("report = %v", r)
	}
	if got, _ := s.cfg.checkpoints.Load(context.Background(), "walk"); got != "4" {
		t.Fatalf("checkpoint = %q, want \"4\": past the counted failures, before the items never started", got)
	}
}

// A run that lost its lock saves no cursor: another instance may own it.
func TestBatchCheckpointNotSavedAfterLockLost(t *testing.T) {
	s, _ := newTest(t)
	locker := s.cfg.locker.(*memoryLocker)
	var afters []string
	_ = s.Register("walk", "@every 1m", Batch[int]{Fetch: keysetTable(20, &afters), Key: itoa, Size: 10, Checkpoint: true,
		Process: func(ctx context.Context, id int) error {
			if id == 3 {
				locker.forget("walk")
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}}, LockTTL(30*time.Millisecond))
	r := tickAt(t, s, "walk", t0)
	if r.Outcome() != "lock_lost" || r.Processed != 2 {
		t.Fatalf("report = %v", r)
	}
	if got, _ := s.cfg.checkpoints.Load(context.Background(), "walk"); got != "" {
		t.Fatalf("checkpoint = %q after a lost lock, want none saved", got)
	}
}

func TestNewRedisCheckpointsNil(t *testing.T) {
	for name, rdb := range map[string]redis.UniversalClient{"nil": nil, "typed nil": (*redis.Client)(nil)} {
		cs, err := NewRedisCheckpoints(rdb, WithKeyPrefix("x:"))
		if !errors.Is(err, ErrInvalidOption) || cs != nil || !strings.Contains(err.Error(), "NewRedisCheckpoints") {
			t.Errorf("%s: NewRedisCheckpoints = %v, %v; want ErrInvalidOption", name, cs, err)
		}
	}
}

// A cursor in Redis that another writer turned into 1 MiB of junk reaches
// errors and logs clipped.
func TestCheckpointValueFromRedisIsClipped(t *testing.T) {
	srv := redistest.Start(t)
	junk := strings.Repeat("é", 1<<19) // 1 MiB, two bytes a rune
	if err := srv.Client(t).HSet(context.Background(), "cronguard:checkpoint", "walk", junk).Err(); err != nil {
		t.Fatal(err)
	}
	s, _ := newTest(t, WithRedis(srv.Client(t)), WithKillSwitch(NewMemoryKillSwitch()))
	_ = s.Register("walk", "@every 1m", Batch[int]{Key: itoa, Process: noop, Checkpoint: true,
		Fetch: func(_ context.Context, p Page) ([]int, error) {
			return nil, fmt.Errorf("bad cursor of %d bytes", len(p.After))
		}})
	r := tickAt(t, s, "walk", t0)
	if r.Err == nil || len(r.Err.Error()) > 600 || !strings.Contains(r.Err.Error(), "(1048576 bytes)") {
		t.Fatalf("error of %d bytes, want the cursor clipped and its length named: %.300s", len(errString(r.Err)), errString(r.Err))
	}
	if !strings.Contains(r.Err.Error(), "bad cursor of 1048576 bytes") {
		t.Fatalf("Fetch did not get the whole cursor: %v", r.Err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestClipBoundsOutsideValues(t *testing.T) {
	if got := clip("short"); got != "short" {
		t.Fatalf("clip(short) = %q", got)
	}
	long := strings.Repeat("a", 199) + "é" + strings.Repeat("b", 100) // é straddles byte 200
	got := clip(long)
	if !utf8.ValidString(got) || !strings.HasPrefix(got, strings.Repeat("a", 199)+"…") || !strings.HasSuffix(got, "(301 bytes)") {
		t.Fatalf("clip = %q", got)
	}
}
