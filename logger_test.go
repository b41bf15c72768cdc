package cronguard

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
)

// panicHandler is a slog.Handler that panics in Handle, or in Enabled.
type panicHandler struct{ inEnabled bool }

func (h panicHandler) Enabled(context.Context, slog.Level) bool {
	if h.inEnabled {
		panic("slog handler: Enabled")
	}
	return true
}

func (panicHandler) Handle(context.Context, slog.Record) error { panic("slog handler: Handle") }
func (h panicHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h panicHandler) WithGroup(string) slog.Handler           { return h }

// Item failures are logged from a Batch's worker goroutines, where a panic
// would end the process: a logger whose handler panics loses its records,
// not the process, and the run reports as usual. The observer panics too,
// and its panic is logged through the same broken logger.
func TestSlogHandlerPanicIsContained(t *testing.T) {
	for name, h := range map[string]panicHandler{"Handle": {}, "Enabled": {inEnabled: true}} {
		t.Run(name, func(t *testing.T) {
			rec := &recorder{}
			s, _ := newTest(t, WithLogger(slog.New(h)),
				WithObserver(func(e Event) { rec.observe(e); panic("observer") }))
			_ = s.Register("j", "@hourly", Batch[int]{Fetch: pages(2, 4), Key: itoa, Size: 4, Concurrency: 4,
				Process: func(context.Context, int) error { return errors.New("smtp down") }})
			rep := tickAt(t, s, "j", t0)
			if rep.Outcome() != "done" || rep.Failed != 8 || rep.Batches != 2 {
				t.Fatalf("scheduled run: %+v", rep)
			}
			mrep, _ := s.RunManually(context.Background(), "j", []int{1, 2, 3, 4, 5, 6})
			if mrep.Outcome() != "done" || mrep.Failed != 6 {
				t.Fatalf("manual run: %+v", mrep)
			}
			if got := len(rec.kind(EventItemFailed)); got != 14 {
				t.Fatalf("observer saw %d item failures, want 14", got)
			}
		})
	}
}

// Observers add up: each gets every event, and a panicking one reaches
// neither the run nor the observers after it.
func TestObserversAddUp(t *testing.T) {
	var a, b []EventKind
	var mu sync.Mutex
	s, err := New(WithLogger(slog.New(slog.DiscardHandler)),
		WithObserver(func(ev Event) { mu.Lock(); a = append(a, ev.Kind); mu.Unlock() }),
		WithObserver(func(Event) { panic("observer bug") }),
		WithObserver(func(ev Event) { mu.Lock(); b = append(b, ev.Kind); mu.Unlock() }))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	if err := s.Register("obs", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RunManually(context.Background(), "obs"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(a) == 0 || !slices.Equal(a, b) {
		t.Fatalf("observers saw %v and %v, want the same non-empty events", a, b)
	}
	if _, err := New(WithObserver(nil)); !errors.Is(err, ErrInvalidOption) {
		t.Fatalf("WithObserver(nil): %v, want ErrInvalidOption", err)
	}
}

// ReportFrom lets middleware read the run it wraps, with the outcome.
func TestReportFromInMiddleware(t *testing.T) {
	var got Report
	var ok bool
	mw := func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			err := next.Run(ctx)
			got, ok = ReportFrom(ctx, err)
			return err
		})
	}
	s, _ := newTest(t, WithMiddleware(mw))
	boom := errors.New("boom")
	if err := s.Register("rf", "@hourly", JobFunc(func(context.Context) error { return boom })); err != nil {
		t.Fatal(err)
	}
	_, _ = s.RunManually(context.Background(), "rf")
	if !ok || got.Job != "rf" || got.Trigger != TriggerManual || got.Outcome() != "error" || !errors.Is(got.Err, boom) {
		t.Fatalf("ReportFrom = %+v, %t; want job rf, manual, stopped on error boom", got, ok)
	}
	if _, ok := ReportFrom(context.Background(), nil); ok {
		t.Fatal("ReportFrom outside a run: ok")
	}
}
