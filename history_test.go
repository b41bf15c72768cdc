package cronguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// historyQueue shrinks the history writer's queue, for tests that fill it.
func historyQueue(n int) Option {
	return func(c *config) error { c.history.queue = n; return nil }
}

// waitHistory polls History until it holds n entries and returns them.
func waitHistory(t *testing.T, s *Scheduler, job string, n int) []HistoryEntry {
	t.Helper()
	var got []HistoryEntry
	waitFor(t, 5*time.Second, fmt.Sprintf("%d history entries of %q", n, job), func() bool {
		var err error
		got, err = s.History(context.Background(), job, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(got) >= n
	})
	return got
}

func kinds(es []HistoryEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = string(e.Kind)
		if e.Skip != "" {
			out[i] += ":" + string(e.Skip)
		}
	}
	return out
}

func TestHistoryMemoryRingBounded(t *testing.T) {
	s, _ := newTest(t, WithHistorySize(5))
	if err := s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	ctx := WithActor(context.Background(), "alice")
	for range 12 {
		if _, err := s.RunManually(ctx, "j"); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "12th entry written", func() bool {
		h, err := s.History(ctx, "j", 1)
		return err == nil && len(h) == 1 && h[0].ID == "12"
	})
	h, err := s.History(ctx, "j", 0)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range h {
		ids = append(ids, e.ID)
		if e.Kind != EventFinished || e.Report == nil || e.By != "alice" || e.Report.By != "alice" ||
			e.Instance != "test" || e.Report.Outcome() != "done" {
			t.Errorf("entry %+v: want a done manual run by alice on instance test", e)
		}
	}
	if want := "12 11 10 9 8"; strings.Join(ids, " ") != want {
		t.Errorf("history IDs = %v; want the 5 newest, newest first: %s", ids, want)
	}
	if h, _ := s.History(ctx, "j", 2); len(h) != 2 || h[0].ID != "12" {
		t.Errorf("History(limit 2) = %v", kinds(h))
	}
	if _, err := s.History(ctx, "nope", 1); !errors.Is(err, ErrUnknownJob) {
		t.Errorf("History of an unknown job: err = %v, want ErrUnknownJob", err)
	}
}

// TestHistoryKinds: a scheduled run, a skipped tick with its reason, a flip
// with who and why, a manual run while switched off, a failed run with its
// error text; a tick taken by another instance is not a skip.
func TestHistoryKinds(t *testing.T) {
	s, _ := newTest(t)
	fail := errors.New("smtp down")
	var calls int
	job := JobFunc(func(context.Context) error {
		calls++
		if calls == 3 {
			return fail
		}
		return nil
	})
	if err := s.Register("j", "@every 1m", job); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tickAt(t, s, "j", t0)
	tickAt(t, s, "j", t0) // the same tick again: taken (by ourselves), not a skip
	if err := s.SetEnabled(WithActor(ctx, "bob"), "j", false, "bad template"); err != nil {
		t.Fatal(err)
	}
	tickAt(t, s, "j", t0.Add(time.Minute))
	if _, err := s.RunManually(WithActor(ctx, "carol"), "j"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetEnabled(WithActor(ctx, "bob"), "j", true, "fixed"); err != nil {
		t.Fatal(err)
	}
	tickAt(t, s, "j", t0.Add(2*time.Minute)) // fails
	h := waitHistory(t, s, "j", 6)
	want := "finished flag skipped:killed finished flag finished"
	if got := strings.Join(kinds(h), " "); got != "finished flag finished skipped:killed flag finished" {
		t.Fatalf("history, newest first = %q; want reversed %q", got, want)
	}
	if r := h[0].Report; r.Outcome() != "error" || r.Err == nil || r.Err.Error() != "smtp down" || h[0].Error != "smtp down" {
		t.Errorf("failed run entry: %+v report %+v; want stop error with its text", h[0], r)
	}
	if e := h[1]; e.By != "bob" || e.Reason != "fixed" || e.Enabled == nil || !*e.Enabled {
		t.Errorf("flip on: %+v", e)
	}
	if e := h[2]; e.By != "carol" || e.Trigger != TriggerManual || e.Report.Processed != 0 || e.Report.Outcome() != "done" {
		t.Errorf("manual run while off: %+v", e)
	}
	if e := h[3]; !e.Tick.Equal(t0.Add(time.Minute)) || e.Trigger != TriggerSchedule || !strings.Contains(e.Error, "switched off") {
		t.Errorf("skip: %+v", e)
	}
	if e := h[4]; e.By != "bob" || e.Reason != "bad template" || e.Enabled == nil || *e.Enabled {
		t.Errorf("flip off: %+v", e)
	}
	if e := h[5]; !e.Tick.Equal(t0) || e.Report.By != "" {
		t.Errorf("first scheduled run: %+v", e)
	}
}

// stuckStore blocks every Append until released or its context ends.
type stuckStore struct {
	HistoryStore
	release chan struct{}
	mu      sync.Mutex
	calls   int
}

func (b *stuckStore) Append(ctx context.Context, e HistoryEntry) error {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	select {
	case <-b.release:
		return b.HistoryStore.Append(ctx, e)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestHistoryFullQueueNeverSlowsRun: with the store stuck and the queue
// full, runs still finish at once and succeed; each dropped entry is an
// EventHistory wrapping ErrBackend, logged at warn.
func TestHistoryFullQueueNeverSlowsRun(t *testing.T) {
	store := &stuckStore{HistoryStore: newMemoryHistory(100), release: make(chan struct{})}
	var logs bytes.Buffer
	var logMu sync.Mutex
	s, rec := newTest(t, WithHistoryStore(store), historyQueue(2), WithCallBudget(time.Hour),
		WithLogger(slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))))
	if err := s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 10 {
		if rep, err := s.RunManually(context.Background(), "j"); err != nil || rep.Outcome() != "done" {
			t.Fatalf("run with the history stuck: %v, %v", rep, err)
		}
		if i == 0 { // the writer holds the first entry, stuck: the queue is empty
			waitFor(t, 5*time.Second, "the writer stuck on the first entry", func() bool {
				store.mu.Lock()
				defer store.mu.Unlock()
				return store.calls == 1
			})
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("10 runs took %s with the history store stuck; want no wait on it", took)
	}
	// 1 entry in the writer's hands, 2 queued, 7 dropped.
	drops := rec.kind(EventHistory)
	if len(drops) != 7 {
		t.Errorf("%d EventHistory for 10 runs, a writer stuck on 1 and a queue of 2; want 7", len(drops))
	}
	for _, ev := range drops {
		if !errors.Is(ev.Err, ErrBackend) || ev.Job != "j" || !strings.Contains(ev.Err.Error(), "dropped") {
			t.Errorf("EventHistory %+v: want ErrBackend naming job j", ev)
		}
	}
	logMu.Lock()
	if !strings.Contains(logs.String(), "level=WARN msg=\"cronguard: history\"") {
		t.Errorf("drops not logged at warn:\n%s", logs.String())
	}
	logMu.Unlock()
	close(store.release)
	h := waitHistory(t, s, "j", 3)
	if len(h) != 3 {
		t.Errorf("history has %d entries; want the 3 that were not dropped", len(h))
	}
}

// failStore fails every Append.
type failStore struct{ HistoryStore }

func (failStore) Append(context.Context, HistoryEntry) error { return errors.New("disk full") }

func TestHistoryStoreErrorIsAnEventNotAFailedRun(t *testing.T) {
	s, rec := newTest(t, WithHistoryStore(failStore{newMemoryHistory(10)}))
	if err := s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	rep, err := s.RunManually(context.Background(), "j")
	if err != nil || rep.Outcome() != "done" {
		t.Fatalf("run = %v, %v; want done", rep, err)
	}
	waitFor(t, 5*time.Second, "EventHistory", func() bool { return len(rec.kind(EventHistory)) == 1 })
	ev := rec.kind(EventHistory)[0]
	if !errors.Is(ev.Err, ErrBackend) || !strings.Contains(ev.Err.Error(), "disk full") || !strings.Contains(ev.Err.Error(), `history: job "j"`) || ev.Job != "j" {
		t.Errorf("EventHistory = %+v (err %v); want ErrBackend with the store's error", ev, ev.Err)
	}
}

// TestHistoryStopFlushesAndIsBounded: Stop writes what is queued, and a
// store that hangs holds Stop no longer than its context.
func TestHistoryStopFlushesAndIsBounded(t *testing.T) {
	t.Run("flush", func(t *testing.T) {
		store := &stuckStore{HistoryStore: newMemoryHistory(100), release: make(chan struct{})}
		s, _ := newTest(t, WithHistoryStore(store))
		_ = s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil }))
		for range 3 {
			_, _ = s.RunManually(context.Background(), "j")
		}
		close(store.release)
		if err := s.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if h, _ := store.History(context.Background(), "j", 10); len(h) != 3 {
			t.Errorf("after Stop the store has %d entries; want the 3 queued", len(h))
		}
	})
	t.Run("bounded", func(t *testing.T) {
		store := &stuckStore{HistoryStore: newMemoryHistory(100), release: make(chan struct{})}
		s, _ := newTest(t, WithHistoryStore(store), WithCallBudget(time.Hour))
		_ = s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil }))
		for range 3 {
			_, _ = s.RunManually(context.Background(), "j")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := s.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("Stop took %s with a hung history store; want about its 300ms context", took)
		}
		_, _ = s.RunManually(context.Background(), "j") // after Stop: dropped quietly, no panic
	})
}

// TestHistoryNoWriterWithoutEntries: a scheduler that records nothing starts
// no goroutine (TestMain's goleak would see a leak of one never stopped).
func TestHistoryNoWriterWithoutEntries(t *testing.T) {
	s, err := New(WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	if s.history.queue != nil {
		t.Fatal("writer started before any entry")
	}
	_ = s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil }))
	if _, err := s.History(context.Background(), "j", 5); err != nil {
		t.Fatal(err)
	}
	if s.history.queue != nil {
		t.Fatal("reading the history started the writer")
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestHistoryMissedEvent: ticks that no instance claimed (the claim mark
// jumped over them) land in the history once, as kind missed, with their
// count and first and last tick.
func TestHistoryMissedEvent(t *testing.T) {
	s, _ := newTest(t)
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil }))
	tickAt(t, s, "j", t0)
	tickAt(t, s, "j", t0.Add(4*time.Minute)) // t0+1m, +2m and +3m were never claimed
	var missed []HistoryEntry
	waitFor(t, 5*time.Second, "the missed entry", func() bool {
		h, _ := s.History(context.Background(), "j", 0)
		missed = missed[:0]
		for _, e := range h {
			if e.Kind == EventMissed {
				missed = append(missed, e)
			}
		}
		return len(missed) > 0
	})
	if len(missed) != 1 || missed[0].Missed != 3 || !missed[0].First.Equal(t0.Add(time.Minute)) ||
		!missed[0].Last.Equal(t0.Add(3*time.Minute)) || !missed[0].Tick.Equal(t0.Add(4*time.Minute)) {
		t.Errorf("missed entries = %+v; want one of 3 ticks, t0+1m to t0+3m, at tick t0+4m", missed)
	}
}
