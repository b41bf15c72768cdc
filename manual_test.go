package cronguard

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

// RunManually with the same item twice processes it once, and the report
// says how many copies it dropped.
func TestManualItemsDuplicatesProcessedOnce(t *testing.T) {
	s, _ := newTest(t)
	var mu sync.Mutex
	got := map[int]int{}
	_ = s.Register("mail", "@every 1m", Batch[int]{Fetch: pages(0, 0), Key: itoa, Concurrency: 4,
		Process: func(_ context.Context, u int) error {
			mu.Lock()
			defer mu.Unlock()
			got[u]++
			return nil
		}})
	rep, err := s.RunManually(context.Background(), "mail", 7, 7, []int{8, 7}, 9, []int{9})
	if err != nil || rep.Processed != 3 || rep.Duplicates != 3 || rep.Outcome() != "done" {
		t.Fatalf("report = %+v, err = %v; want 3 processed, 3 duplicates dropped", rep, err)
	}
	for _, u := range []int{7, 8, 9} {
		if got[u] != 1 {
			t.Fatalf("item %d processed %d times, want once (%v)", u, got[u], got)
		}
	}
}

// RunManually's items go in batches of Size, each a batch_done event.
func TestManualItemsHonourSize(t *testing.T) {
	s, rec := newTest(t)
	var order []int
	_ = s.Register("mail", "@every 1m", Batch[int]{Fetch: pages(0, 0), Key: itoa, Size: 3,
		Process: func(_ context.Context, u int) error { order = append(order, u); return nil }})
	rep, err := s.RunManually(context.Background(), "mail", []int{1, 2, 3, 4, 5, 6, 7, 8})
	if err != nil || rep.Batches != 3 || rep.Processed != 8 {
		t.Fatalf("report = %+v, err = %v; want 8 items in 3 batches of at most 3", rep, err)
	}
	var sizes []int
	for _, ev := range rec.kind(EventBatchDone) {
		sizes = append(sizes, ev.Items)
	}
	if !slices.Equal(sizes, []int{3, 3, 2}) || !slices.Equal(order, []int{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("batch sizes %v, order %v; want [3 3 2] in the order given", sizes, order)
	}
}

// A manual run bypasses the kill switch for its whole length: it does not
// re-read it between batches, whether it runs the given items or a whole
// run of the job, and whether the flag was off before or goes off during it.
func TestManualRunDoesNotRecheckKillSwitchBetweenBatches(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		items []any
	}{
		{"whole run", nil},
		{"items", []any{[]int{1, 2, 3, 4, 5, 6}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ks := NewMemoryKillSwitch()
			s, _ := newTest(t, WithKillSwitch(ks))
			_ = s.Register("mail", "@every 1m", Batch[int]{Fetch: pages(3, 2), Key: itoa, Size: 2,
				Process: func(ctx context.Context, u int) error {
					if u == 1 { // during the first batch, on top of being off already
						return ks.SetEnabled(ctx, "mail", false, "operator")
					}
					return nil
				}})
			_ = ks.SetEnabled(ctx, "mail", false, "maintenance")
			rep, err := s.RunManually(ctx, "mail", c.items...)
			if err != nil || rep.Outcome() != "done" || rep.Batches != 3 || rep.Processed != 6 {
				t.Fatalf("report = %+v, err = %v; want all 3 batches despite the switch", rep, err)
			}
			// The scheduled run of the same job does honour it.
			if r := tickAt(t, s, "mail", t0); skipOf(r) != "killed" {
				t.Fatalf("scheduled tick: %+v, want skipped killed", r)
			}
		})
	}
}

// The error budget spans the batches of RunManually's items: past it the
// run stops before the next batch.
func TestManualItemsErrorBudgetAcrossBatches(t *testing.T) {
	s, _ := newTest(t)
	_ = s.Register("mail", "@every 1m", Batch[int]{Fetch: pages(0, 0), Key: itoa, Size: 2, MaxFailures: 2,
		Process: func(context.Context, int) error { return errors.New("smtp down") }})
	rep, err := s.RunManually(context.Background(), "mail", []int{1, 2, 3, 4, 5, 6})
	if !errors.Is(err, ErrErrorBudget) || rep.Failed != 3 || rep.Batches != 2 {
		t.Fatalf("report = %+v; want error_budget at the 3rd failure, in batch 2", rep)
	}
}
