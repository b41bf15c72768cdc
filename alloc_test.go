package cronguard

import (
	"context"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// quietScheduler is the setup whose cost the allocation budgets and the
// benchmarks state: memory backends unless opts say otherwise, no
// observer, a logger that drops everything; stopped when tb ends.
func quietScheduler(tb testing.TB, opts ...Option) *Scheduler {
	tb.Helper()
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler)), WithInstanceID("quiet"), WithLocation(time.UTC)}, opts...)
	s, err := New(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { stopSched(tb, s) })
	return s
}

// allocsPerTick counts the allocations of one scheduled tick of job name,
// each tick a second after the last, after a few ticks of warm-up (the
// first run of a job allocates its claim and lock state and its last
// Report once).
func allocsPerTick(t *testing.T, s *Scheduler, name string, runs int, check func(Report)) float64 {
	t.Helper()
	e, err := s.lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fire := func() {
		tick = tick.Add(time.Second)
		check(s.execute(s.base, e, TriggerSchedule, tick, nil))
	}
	for range 110 { // past the history's IDs below 100, which strconv does not allocate
		fire()
	}
	return testing.AllocsPerRun(runs, fire)
}

// TestAllocsPerScheduledRun holds runAllocBudget: a scheduled run of a
// no-op job through the whole guard chain, on the memory backends with
// nobody listening, allocates at most that many objects. Before issue 8's
// rework it allocated 43.
func TestAllocsPerScheduledRun(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; scripts/test runs this test again without -race")
	}
	s := quietScheduler(t)
	if err := s.Register("noop", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	n := allocsPerTick(t, s, "noop", 1000, func(r Report) {
		if r.Outcome() != "done" {
			t.Fatalf("run: %+v", r)
		}
	})
	t.Logf("%.1f allocations per scheduled run (budget %d)", n, runAllocBudget)
	if n > runAllocBudget {
		t.Errorf("%.1f allocations per scheduled run, over the budget of %d: see execute's doc comment", n, runAllocBudget)
	}
}

// jobStackDepth is the most bytes of stack below the top of robfig/cron's
// goroutine at which a scheduled job's body starts on the memory backends
// (cronFire.Run): the rest of the stack cronFire.Run grows is the job's.
// It was 1,472 B before issue 8's frame rework, about 600 B after (Go 1.26).
const jobStackDepth = 700

// TestAllocsStackUnderScheduledJob holds jobStackDepth: a job fired as
// robfig/cron fires it, on a goroutine of its own, finds its body at most
// that far below the goroutine's top.
func TestAllocsStackUnderScheduledJob(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes the frames; scripts/test runs this test again without -race")
	}
	s := quietScheduler(t)
	var body uintptr
	runs := 0
	job := JobFunc(func(context.Context) error {
		body = stackPointer() // the job's own frame is its business: this one is small
		runs++
		return nil
	})
	if err := s.Register("job", "* * * * * *", job); err != nil {
		t.Fatal(err)
	}
	e, err := s.lookup("job")
	if err != nil {
		t.Fatal(err)
	}
	var top uintptr
	var wg sync.WaitGroup
	wg.Go(func() {
		(*cronFire)(e).Run()
		top = stackPointer() // after the run: where the stack is once grown
	})
	wg.Wait()
	if runs != 1 {
		t.Fatalf("the job ran %d times, want 1: %+v", runs, e.lastReport())
	}
	depth := top - body
	t.Logf("the job's body starts %d B below the goroutine's top (budget %d)", depth, jobStackDepth)
	if depth > jobStackDepth {
		t.Errorf("the job's body starts %d B below the goroutine's top, over the budget of %d: see cronFire.Run", depth, jobStackDepth)
	}
}

// TestAllocsPerBatchItem holds batchAllocBudget: a scheduled run of a no-op
// Batch over 10,000 in-memory items (the default Size and MaxBatches)
// allocates a number of objects that does not grow with its items.
func TestAllocsPerBatchItem(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; scripts/test runs this test again without -race")
	}
	const items = defaultBatchSize * defaultMaxBatches
	keys := make([]string, items)
	all := make([]int, items)
	for i := range all {
		all[i], keys[i] = i, strconv.Itoa(i)
	}
	s := quietScheduler(t)
	err := s.Register("batch", "* * * * * *", Batch[int]{
		Fetch: func(_ context.Context, p Page) ([]int, error) {
			return all[p.Number*p.Size : (p.Number+1)*p.Size], nil
		},
		Process: func(context.Context, int) error { return nil },
		Key:     func(i int) string { return keys[i] },
	})
	if err != nil {
		t.Fatal(err)
	}
	n := allocsPerTick(t, s, "batch", 20, func(r Report) {
		if r.Processed != items || r.Outcome() != "max_batches" {
			t.Fatalf("run: %+v", r)
		}
	})
	t.Logf("%.1f allocations per run of %d items (budget %d): %.4f per item", n, items, batchAllocBudget, n/items)
	if n > batchAllocBudget {
		t.Errorf("%.1f allocations per run of %d items, over the budget of %d: see Batch's doc comment", n, items, batchAllocBudget)
	}
}

// heapPerJobBudget is issue 8's bound on the live heap a registered job
// costs, robfig/cron's entry and parsed spec included (453 B when written:
// 185 B of them robfig/cron's, 224 B the entry).
const heapPerJobBudget = 500

// TestHeapPerRegisteredJob holds heapPerJobBudget over 10,000 jobs
// registered on one scheduler, names made beforehand.
func TestHeapPerRegisteredJob(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; scripts/test runs this test again without -race")
	}
	const jobs = 10_000
	names := make([]string, jobs)
	for i := range names {
		names[i] = "job-" + strconv.Itoa(i)
	}
	job := JobFunc(func(context.Context) error { return nil })
	before := liveHeap()
	s := quietScheduler(t)
	for _, n := range names {
		if err := s.Register(n, "0 0 0 1 1 *", job); err != nil {
			t.Fatal(err)
		}
	}
	per := float64(liveHeap()-before) / jobs
	runtime.KeepAlive(s)
	t.Logf("%.0f B of live heap per registered job (budget %d)", per, heapPerJobBudget)
	if per > heapPerJobBudget {
		t.Errorf("%.0f B per registered job, over the budget of %d B: see entry", per, heapPerJobBudget)
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestAllocsReportInRunOnlyWhenUnkept: a finished run's Report lives in
// the run (one allocation less) only when nothing is given its pointer to
// keep: with an observer, or a history store other than the memory one,
// the Report is an object of its own, so that keeping it does not keep
// the run and its context.
func TestAllocsReportInRunOnlyWhenUnkept(t *testing.T) {
	cases := []struct {
		name  string
		opts  []Option
		inRun bool
	}{
		{"quiet", nil, true},
		{"observer", []Option{WithObserver(func(Event) {})}, false},
		{"other store", []Option{WithHistoryStore(&keepingStore{})}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := quietScheduler(t, c.opts...)
			if err := s.Register("job", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
				t.Fatal(err)
			}
			e, err := s.lookup("job")
			if err != nil {
				t.Fatal(err)
			}
			r := s.runOnce(s.base, e, TriggerSchedule, time.Date(2030, 1, 1, 0, 0, 1, 0, time.UTC), nil)
			if r.rep.Outcome() != "done" {
				t.Fatalf("run: %+v", r.rep)
			}
			if got := r.rep == &r.report; got != c.inRun {
				t.Errorf("the Report is in the run: %v, want %v", got, c.inRun)
			}
		})
	}
}

// keepingStore is a HistoryStore that keeps what it is given, pointers
// and all, as a user's might.
type keepingStore struct {
	mu      sync.Mutex
	entries []HistoryEntry
}

func (k *keepingStore) Append(_ context.Context, e HistoryEntry) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.entries = append(k.entries, e)
	return nil
}

func (k *keepingStore) History(context.Context, string, int) ([]HistoryEntry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.entries), nil
}
