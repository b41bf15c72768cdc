package cronguard

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
)

// With Concurrency 1 (the default) items run on the run's goroutine, not
// one goroutine each, and a panicking Process is still one failed item: the
// run goes on with the next item and reports the panic with its stack.
func TestInlineItemsPanicIsOneFailure(t *testing.T) {
	s, rec := newTest(t)
	var elsewhere []int
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch: pages(2, 3),
		Process: func(_ context.Context, i int) error {
			if !onRunGoroutine() {
				elsewhere = append(elsewhere, i)
			}
			if i == 2 {
				panic("bad item")
			}
			return nil
		},
		Key: itoa, Size: 3,
	})
	rep := tickAt(t, s, "j", t0)
	if rep.Processed != 5 || rep.Failed != 1 || rep.Outcome() != "done" || rep.Err != nil {
		t.Fatalf("report = %+v, want 5 processed, the panic counted failed, the run done", rep)
	}
	if ev, ok := rec.find(EventItemFailed); !ok || !errors.Is(ev.Err, ErrPanic) || ev.Item != "2" || ev.Stack == "" {
		t.Fatalf("item_failed for the panic = %+v", ev)
	}
	if len(elsewhere) > 0 {
		t.Fatalf("items %v ran on a goroutine of their own: Concurrency 1 must not start one per item", elsewhere)
	}
}

// onRunGoroutine reports whether the caller runs on the goroutine of a run
// (tickAt's call of execute is on its stack).
func onRunGoroutine() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, ".(*Scheduler).execute") {
			return true
		}
		if !more {
			return false
		}
	}
}

// A failed item may come back in a later batch without tripping the
// runaway guard (TestFailedItemsComingBackAreNotRetried), but not twice in
// one batch: that is a duplicate like any other.
func TestRunawayFailedItemTwiceInOneBatch(t *testing.T) {
	s, _ := newTest(t)
	batches := [][]int{{1, 2}, {2, 3, 2}}
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch: func(_ context.Context, p Page) ([]int, error) {
			if p.Number < len(batches) {
				return batches[p.Number], nil
			}
			return nil, nil
		},
		Process: func(_ context.Context, i int) error {
			if i == 2 {
				return errors.New("mailbox full")
			}
			return nil
		},
		Key: itoa, Size: 3,
	})
	rep := tickAt(t, s, "j", t0)
	if !errors.Is(rep.Err, ErrRunaway) || rep.Processed != 1 || rep.Failed != 1 || rep.Batches != 1 {
		t.Fatalf("report = %+v, want runaway at batch 1 before processing it", rep)
	}
}

// The runaway guard's room for keys: a short first batch reserves for
// itself, a full one for Size × MaxBatches, bounded by maxKeysHint even
// when Size × MaxBatches overflows.
func TestBatchKeysHint(t *testing.T) {
	for _, c := range []struct {
		b     Batch[int]
		first int
		want  int
	}{
		{Batch[int]{}, 3, 3},
		{Batch[int]{}, defaultBatchSize, defaultBatchSize * defaultMaxBatches},
		{Batch[int]{Size: 1000, MaxBatches: 5000}, 1000, maxKeysHint},
		{Batch[int]{Size: 1 << 62, MaxBatches: 1 << 10}, 1 << 62, maxKeysHint},
	} {
		if got := c.b.keysHint(c.first); got != c.want {
			t.Errorf("Size %d MaxBatches %d, first batch %d: hint %d, want %d", c.b.Size, c.b.MaxBatches, c.first, got, c.want)
		}
	}
}
