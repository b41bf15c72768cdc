package cronguard

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func itoa(i int) string { return strconv.Itoa(i) }

// pages returns a Fetch that serves n full batches of size ints, numbered
// from 1, by page number, then nothing.
func pages(n, size int) func(context.Context, Page) ([]int, error) {
	return func(_ context.Context, p Page) ([]int, error) {
		if p.Number >= n {
			return nil, nil
		}
		items := make([]int, size)
		for i := range items {
			items[i] = p.Number*size + i + 1
		}
		return items, nil
	}
}

func TestKillSwitchBetweenBatches(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithKillSwitch(ks))
	var fetched []int
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch: func(ctx context.Context, p Page) ([]int, error) {
			fetched = append(fetched, p.Number)
			return pages(10, 5)(ctx, p)
		},
		Process: func(ctx context.Context, i int) error {
			if i == 13 { // batch 3 of 10 (numbered 2)
				_ = ks.SetEnabled(ctx, "j", false, "operator")
			}
			return nil
		},
		Key:  itoa,
		Size: 5,
	})
	rep := tickAt(t, s, "j", t0)
	if rep.Outcome() != "killed" || !errors.Is(rep.Err, ErrKilled) {
		t.Fatalf("report = %+v, want killed", rep)
	}
	if rep.Batches != 3 || rep.Processed != 15 || len(fetched) != 3 {
		t.Fatalf("batches=%d processed=%d fetched=%v: a flip during batch 3 must stop before batch 4", rep.Batches, rep.Processed, fetched)
	}
}

// The seed's bug: Fetch forgets to exclude users already e-mailed and
// returns the same 100 users every time.
func TestRunawayGuardStopsTheSame100Users(t *testing.T) {
	ks := NewMemoryKillSwitch().(*memoryKillSwitch)
	s, rec := newTest(t, WithKillSwitch(ks))
	sent := map[int]int{}
	_ = s.Register("confirmation-emails", "@every 1m", Batch[int]{
		Fetch:   func(ctx context.Context, p Page) ([]int, error) { p.Number = 0; return pages(10, 100)(ctx, p) }, // always users 1..100
		Process: func(_ context.Context, u int) error { sent[u]++; return nil },
		Key:     itoa,
	})
	rep := tickAt(t, s, "confirmation-emails", t0)
	if rep.Outcome() != "runaway" || !errors.Is(rep.Err, ErrRunaway) {
		t.Fatalf("report = %+v, want runaway", rep)
	}
	if len(sent) != 100 || rep.Processed != 100 {
		t.Fatalf("%d users e-mailed, processed=%d, want 100", len(sent), rep.Processed)
	}
	for u, n := range sent {
		if n != 1 {
			t.Fatalf("user %d e-mailed %d times", u, n)
		}
	}
	if !rep.Tripped {
		t.Fatal("report does not say the runaway guard switched the job off")
	}
	if st := ks.State("confirmation-emails"); st.Enabled || st.By != "runaway-guard" {
		t.Fatalf("flag state = %+v, want switched off by the runaway guard", st)
	}
	if ev, ok := rec.find(EventRunaway); !ok || ev.Item != "1" || ev.Batch != 1 {
		t.Fatalf("runaway event = %+v", ev)
	}
	if r := tickAt(t, s, "confirmation-emails", t0.Add(time.Minute)); skipOf(r) != "killed" {
		t.Fatalf("next tick: %+v, want skipped killed", r)
	}
}

func TestRunawayDuplicateInOneBatch(t *testing.T) {
	s, _ := newTest(t)
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch:   func(context.Context, Page) ([]int, error) { return []int{1, 2, 2}, nil },
		Process: func(context.Context, int) error { return nil },
		Key:     itoa,
	})
	rep := tickAt(t, s, "j", t0)
	if !errors.Is(rep.Err, ErrRunaway) || rep.Processed != 0 {
		t.Fatalf("report = %+v, want runaway before processing", rep)
	}
}

func TestFailedItemsComingBackAreNotRetried(t *testing.T) {
	s, _ := newTest(t)
	tries := map[int]int{}
	_ = s.Register("j", "@every 1m", Batch[int]{
		// Drain mode: user 2 keeps failing and so stays in the query.
		Fetch: func(_ context.Context, p Page) ([]int, error) {
			var out []int
			for u := 1; u <= 4 && len(out) < p.Size; u++ {
				if tries[u] == 0 || u == 2 {
					out = append(out, u)
				}
			}
			return out, nil
		},
		Process: func(_ context.Context, u int) error {
			tries[u]++
			if u == 2 {
				return errors.New("mailbox full")
			}
			return nil
		},
		Key:  itoa,
		Size: 2,
	})
	rep := tickAt(t, s, "j", t0)
	if rep.Err != nil || rep.Outcome() != "done" {
		t.Fatalf("report = %+v", rep)
	}
	if tries[2] != 1 || rep.Processed != 3 || rep.Failed != 1 {
		t.Fatalf("tries=%v processed=%d failed=%d", tries, rep.Processed, rep.Failed)
	}
}

func TestMaxBatches(t *testing.T) {
	s, _ := newTest(t)
	_ = s.Register("j", "@every 1m", Batch[int]{Fetch: pages(10, 3), Process: noop, Key: itoa, Size: 3, MaxBatches: 4})
	rep := tickAt(t, s, "j", t0)
	if rep.Outcome() != "max_batches" || rep.Err != nil || rep.Batches != 4 || rep.Processed != 12 {
		t.Fatalf("report = %+v, want max_batches after 4 batches", rep)
	}
}

func noop(context.Context, int) error { return nil }

func TestDefaults(t *testing.T) {
	s, _ := newTest(t)
	var sizes []int
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch: func(ctx context.Context, p Page) ([]int, error) {
			sizes = append(sizes, p.Size)
			return pages(1000, p.Size)(ctx, p)
		},
		Process: noop, Key: itoa,
	})
	rep := tickAt(t, s, "j", t0)
	if sizes[0] != defaultBatchSize || rep.Batches != defaultMaxBatches || rep.Outcome() != "max_batches" {
		t.Fatalf("size=%d batches=%d stop=%s, want defaults 100 and 100", sizes[0], rep.Batches, rep.Outcome())
	}
}

func TestErrorBudget(t *testing.T) {
	s, _ := newTest(t)
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch:       pages(5, 4),
		Process:     func(context.Context, int) error { return errors.New("smtp down") },
		Key:         itoa,
		Size:        4,
		MaxFailures: 2,
	})
	rep := tickAt(t, s, "j", t0)
	if rep.Outcome() != "error_budget" || !errors.Is(rep.Err, ErrErrorBudget) || rep.Failed != 3 || rep.Batches != 1 {
		t.Fatalf("report = %+v, want error_budget after the 3rd failure", rep)
	}
}

func TestKeysetAndCheckpoint(t *testing.T) {
	s, _ := newTest(t)
	var afters []string
	fetch := keysetTable(10, &afters)
	_ = s.Register("j", "@every 1m", Batch[int]{Fetch: fetch, Process: noop, Key: itoa, Size: 3, MaxBatches: 2, Checkpoint: true})
	r1 := tickAt(t, s, "j", t0)
	r2 := tickAt(t, s, "j", t0.Add(time.Minute))
	if r1.Processed != 6 || r1.Outcome() != "max_batches" || r2.Processed != 4 || r2.Outcome() != "done" {
		t.Fatalf("runs: %+v / %+v", r1, r2)
	}
	want := []string{"", "3", "6", "9"}
	if len(afters) != len(want) {
		t.Fatalf("afters = %q, want %q", afters, want)
	}
	for i := range want {
		if afters[i] != want[i] {
			t.Fatalf("afters = %q, want %q", afters, want)
		}
	}
}

func TestConcurrencyAndItemPanic(t *testing.T) {
	s, rec := newTest(t)
	var inFlight, peak atomic.Int32
	var mu sync.Mutex
	done := map[int]bool{}
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch: pages(2, 8),
		Process: func(_ context.Context, i int) error {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(5 * time.Millisecond)
			if i == 5 {
				panic("bad item")
			}
			mu.Lock()
			done[i] = true
			mu.Unlock()
			return nil
		},
		Key: itoa, Size: 8, Concurrency: 4,
	})
	rep := tickAt(t, s, "j", t0)
	if rep.Processed != 15 || rep.Failed != 1 || len(done) != 15 {
		t.Fatalf("report = %+v, done=%d", rep, len(done))
	}
	if p := peak.Load(); p < 2 || p > 4 {
		t.Fatalf("peak concurrency = %d, want 2..4", p)
	}
	if ev, ok := rec.find(EventItemFailed); !ok || !errors.Is(ev.Err, ErrPanic) || ev.Item != "5" || ev.Stack == "" {
		t.Fatalf("item_failed for the panic = %+v", ev)
	}
}

func TestPerSecond(t *testing.T) {
	s, _ := newTest(t)
	var times []time.Time
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch:   pages(1, 5),
		Process: func(context.Context, int) error { times = append(times, time.Now()); return nil },
		Key:     itoa, Size: 5, PerSecond: 50,
	})
	tickAt(t, s, "j", t0)
	// 5 items at 50/s with a burst of 1: at least 4 gaps of 20ms. The lower
	// bound is what a limiter guarantees; no upper bound is asserted.
	if got := times[len(times)-1].Sub(times[0]); got < 75*time.Millisecond {
		t.Fatalf("5 items took %s at 50/s, want >= 80ms", got)
	}
}

func TestBatchOutsideScheduler(t *testing.T) {
	n := 0
	b := Batch[int]{Fetch: pages(3, 2), Process: func(context.Context, int) error { n++; return nil }, Key: itoa, Size: 2}
	if err := b.Run(context.Background()); err != nil || n != 6 {
		t.Fatalf("err=%v n=%d", err, n)
	}
	if err := (Batch[int]{}).Run(context.Background()); !errors.Is(err, ErrInvalidJob) {
		t.Fatalf("empty Batch: %v", err)
	}
}

func TestCanceledBatchItemsAreNotFailures(t *testing.T) {
	s, _ := newTest(t)
	b := newBlocker()
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch:   pages(1, 3),
		Process: func(ctx context.Context, _ int) error { return b.Run(ctx) },
		Key:     itoa, Size: 3,
	}, Timeout(30*time.Millisecond))
	rep := tickAt(t, s, "j", t0)
	if rep.Outcome() != "timeout" || rep.Failed != 0 || rep.Processed != 0 {
		t.Fatalf("report = %+v: items cut short by the timeout are not failures", rep)
	}
}

// A Fetch that keeps returning a few handled items — fewer than Size — is a
// runaway too: drain mode asks again until the query returns nothing.
func TestRunawayGuardWithShortRepeatedBatch(t *testing.T) {
	s, _ := newTest(t)
	sent := map[int]int{}
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch:   func(ctx context.Context, p Page) ([]int, error) { return pages(1, 99)(ctx, Page{Size: 99}) },
		Process: func(_ context.Context, u int) error { sent[u]++; return nil },
		Key:     itoa,
	})
	rep := tickAt(t, s, "j", t0)
	if !errors.Is(rep.Err, ErrRunaway) || rep.Processed != 99 || sent[1] != 1 {
		t.Fatalf("report = %+v, sent[1] = %d", rep, sent[1])
	}
	if r := tickAt(t, s, "j", t0.Add(time.Minute)); skipOf(r) != "killed" || sent[1] != 1 {
		t.Fatalf("next tick: %+v; user 1 e-mailed %d times", r, sent[1])
	}
}

// keysetTable returns a keyset Fetch over ids 1..n that records each
// Page.After it is asked for in afters.
func keysetTable(n int, afters *[]string) func(context.Context, Page) ([]int, error) {
	return func(_ context.Context, p Page) ([]int, error) {
		*afters = append(*afters, p.After)
		after, _ := strconv.Atoi(p.After)
		var out []int
		for id := after + 1; id <= n && len(out) < p.Size; id++ {
			out = append(out, id)
		}
		return out, nil
	}
}
