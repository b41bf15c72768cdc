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

// allocsPerTick counts the allocations of one scheduled fire of job name
// as robfig/cron makes it (the job's Next asked after the last fire, then
// the fire, on time), each tick a second after the last, after a few ticks
// of warm-up (the first run of a job allocates its claim and lock state
// and its history ring). check is given the report of every measured run
// the job's history still holds (the last 100), the last being the last
// tick's.
func allocsPerTick(t *testing.T, s *Scheduler, name string, runs int, check func(Report)) float64 {
	t.Helper()
	e, err := s.lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fire := func() {
		prev := tick
		tick = tick.Add(time.Second)
		e.ticks.Next(prev)
		s.fireAt(e, tick.Add(time.Millisecond))
	}
	for range 110 { // past the history's IDs below 100, which strconv does not allocate
		fire()
	}
	n := testing.AllocsPerRun(runs, fire)
	if last := e.lastReport(); last == nil || !last.Tick.Equal(tick) {
		t.Fatalf("the last run: %+v, want the one of tick %s", last, tick)
	}
	h, err := s.History(context.Background(), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range h[max(0, len(h)-runs-1):] { // AllocsPerRun runs fire once more than runs
		if entry.Kind != EventFinished || entry.Report == nil {
			t.Fatalf("history entry %+v, want a finished run", entry)
		}
		check(*entry.Report)
	}
	return n
}

// skipAllocBudget is the most objects a scheduled fire of a switched-off
// job allocates on the memory backends with nobody listening: the run, its
// context, the SkipError and what the skipped event and its history entry
// need (the event carries the skip's error, not a copy of the Report).
const skipAllocBudget = 9

// TestAllocsPerSkippedFire holds skipAllocBudget: every tick of a job
// switched off for the night is a skip, and skips must not cost more than
// they did before the run's Report left the run.
func TestAllocsPerSkippedFire(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; scripts/test runs this test again without -race")
	}
	ks := NewMemoryKillSwitch()
	s := quietScheduler(t, WithKillSwitch(ks))
	if err := s.Register("off", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if err := ks.SetEnabled(context.Background(), "off", false, "test"); err != nil {
		t.Fatal(err)
	}
	e, err := s.lookup("off")
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fire := func() { // as allocsPerTick's
		prev := tick
		tick = tick.Add(time.Second)
		e.ticks.Next(prev)
		s.fireAt(e, tick.Add(time.Millisecond))
	}
	for range 200 {
		fire()
	}
	n := testing.AllocsPerRun(500, fire)
	t.Logf("%.1f allocations per skipped fire (budget %d)", n, skipAllocBudget)
	if n > skipAllocBudget {
		t.Errorf("%.1f allocations per skipped fire, over the budget of %d: see run.finishEvent", n, skipAllocBudget)
	}
	h, err := s.History(context.Background(), "off", 1)
	if err != nil || len(h) != 1 || h[0].Kind != EventSkipped || !h[0].Tick.Equal(tick) || h[0].Skip != "killed" {
		t.Fatalf("the last fire's history: %+v, %v; want tick %s skipped as killed", h, err, tick)
	}
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
// (cronFire.Run): the rest of the goroutine's stack, as it starts or as
// grown for a job that needs it (stack.go), is the job's.
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
		t.Errorf("the job's body starts %d B below the goroutine's top, over the budget of %d: see stack.go", depth, jobStackDepth)
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

// TestScheduledReportsKeptAreTheirOwn: a scheduled fire's Report is made
// on its goroutine's stack (run.finish); whoever is given one to keep (an
// observer, a history store) must get a copy that later runs do not
// overwrite.
func TestScheduledReportsKeptAreTheirOwn(t *testing.T) {
	var mu sync.Mutex
	var seen []*Report
	observer := WithObserver(func(ev Event) {
		if ev.Kind == EventFinished {
			mu.Lock()
			seen = append(seen, ev.Report)
			mu.Unlock()
		}
	})
	store := &keepingStore{}
	s := quietScheduler(t, observer, WithHistoryStore(store))
	if err := s.Register("job", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	e, err := s.lookup("job")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	const runs = 3
	for i := 1; i <= runs; i++ {
		var wg sync.WaitGroup
		wg.Go(func() { s.fireAt(e, base.Add(time.Duration(i)*time.Second)) }) // a goroutine of its own, as robfig/cron's
		wg.Wait()
	}
	s.Stop(context.Background()) // the history writer has written every entry
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != runs {
		t.Fatalf("the observer saw %d finished runs, want %d", len(seen), runs)
	}
	for i, rep := range seen {
		if want := base.Add(time.Duration(i+1) * time.Second); !rep.Tick.Equal(want) || rep.Outcome() != "done" {
			t.Errorf("the observer's report %d: tick %s, %s; want tick %s, done", i, rep.Tick, rep.Outcome(), want)
		}
	}
	h, _ := store.History(context.Background(), "job", 0)
	if len(h) != runs {
		t.Fatalf("the store kept %d entries, want %d", len(h), runs)
	}
	for i, entry := range h {
		if want := base.Add(time.Duration(i+1) * time.Second); entry.Report == nil || !entry.Report.Tick.Equal(want) {
			t.Errorf("the store's entry %d: %+v, want the report of tick %s", i, entry.Report, want)
		}
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
