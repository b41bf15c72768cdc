package cgotel_test

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	cgotel "github.com/cronguard/cronguard/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// yearly fires on 1 January only: jobs run by RunManually never tick here.
const yearly = "0 0 1 1 *"

const instance = "test-1"

// harness is a Scheduler traced into an in-memory exporter.
type harness struct {
	s   *cronguard.Scheduler
	tp  *sdktrace.TracerProvider
	exp *tracetest.InMemoryExporter
	rec *recorder
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp)) // exported at End
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	rec := &recorder{}
	s, err := cronguard.New(
		cronguard.WithMiddleware(cgotel.Middleware(cgotel.WithTracerProvider(tp), cgotel.WithInstance(instance))),
		cronguard.WithObserver(rec.observe),
		cronguard.WithInstanceID(instance),
		cronguard.WithLogger(slog.New(slog.DiscardHandler)),
		cronguard.WithLocation(time.UTC),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return &harness{s: s, tp: tp, exp: exp, rec: rec}
}

// runs returns the spans of the middleware, in the order they ended.
func (h *harness) runs() tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, sp := range h.exp.GetSpans() {
		if sp.InstrumentationScope.Name == cgotel.ScopeName {
			out = append(out, sp)
		}
	}
	return out
}

type recorder struct {
	mu     sync.Mutex
	events []cronguard.Event
}

func (r *recorder) observe(ev cronguard.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) count(kind cronguard.EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

func attrs(kvs []attribute.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.String()
	}
	return m
}

func checkAttrs(t *testing.T, what string, got []attribute.KeyValue, want map[string]string) {
	t.Helper()
	if g := attrs(got); !maps.Equal(g, want) {
		t.Errorf("%s attributes:\n got %v\nwant %v", what, g, want)
	}
}

func one(t *testing.T, h *harness) tracetest.SpanStub {
	t.Helper()
	spans := h.runs()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1: %+v", len(spans), spans)
	}
	return spans[0]
}

// TestSuccessfulRun: one span, the job's context carries it, and it is a
// child of the span in RunManually's context.
func TestSuccessfulRun(t *testing.T) {
	h := newHarness(t)
	var inJob trace.SpanContext
	if err := h.s.Register("ok", yearly, cronguard.JobFunc(func(ctx context.Context) error {
		inJob = trace.SpanFromContext(ctx).SpanContext()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	ctx, caller := h.tp.Tracer("test").Start(context.Background(), "caller")
	if _, err := h.s.RunManually(ctx, "ok"); err != nil {
		t.Fatal(err)
	}
	caller.End()

	sp := one(t, h)
	name, want := expect("ok", map[string]string{
		"cronguard.trigger": "manual", "cronguard.instance": instance, "cronguard.outcome": "ok",
	}, map[string]string{
		"cronguard.stop": "done", "cronguard.batches": "0", "cronguard.items.processed": "0", "cronguard.items.failed": "0",
	})
	if sp.Name != name || sp.SpanKind != trace.SpanKindInternal {
		t.Errorf("span %q kind %v, want %q internal", sp.Name, sp.SpanKind, name)
	}
	if !inJob.IsValid() || !inJob.Equal(sp.SpanContext) {
		t.Errorf("job's ctx carries span %v, recorded %v", inJob, sp.SpanContext)
	}
	if sp.Parent.SpanID() != caller.SpanContext().SpanID() || sp.Parent.TraceID() != caller.SpanContext().TraceID() {
		t.Errorf("parent %v, want the caller's span %v", sp.Parent, caller.SpanContext())
	}
	checkAttrs(t, "ok", sp.Attributes, want)
	if sp.Status.Code != codes.Unset || len(sp.Events) != 0 || sp.EndTime.IsZero() {
		t.Errorf("status %v, events %v, end %v", sp.Status, sp.Events, sp.EndTime)
	}
}

// TestFailingRun: status Error with the message, cut to 200 bytes, and an
// exception event.
func TestFailingRun(t *testing.T) {
	h := newHarness(t)
	long := "boom " + strings.Repeat("x", 1000)
	if err := h.s.Register("failing", yearly, cronguard.JobFunc(func(context.Context) error {
		return errors.New(long)
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.RunManually(context.Background(), "failing"); err == nil {
		t.Fatal("no error")
	}
	sp := one(t, h)
	name, want := expect("failing", map[string]string{
		"cronguard.trigger": "manual", "cronguard.instance": instance, "cronguard.outcome": "error",
	}, map[string]string{
		"cronguard.stop": "error", "cronguard.batches": "0", "cronguard.items.processed": "0", "cronguard.items.failed": "0",
	})
	if sp.Name != name {
		t.Errorf("span %q, want %q", sp.Name, name)
	}
	checkAttrs(t, "failing", sp.Attributes, want)
	wantMsg := long[:200] + "…(1005 bytes)"
	if sp.Status.Code != codes.Error || sp.Status.Description != wantMsg {
		t.Errorf("status %v %q", sp.Status.Code, sp.Status.Description)
	}
	if len(sp.Events) != 1 || sp.Events[0].Name != "exception" {
		t.Fatalf("events %+v", sp.Events)
	}
	checkAttrs(t, "exception", sp.Events[0].Attributes, map[string]string{
		"exception.type": "*errors.errorString", "exception.message": wantMsg,
	})
}

// TestKillSwitchSkip: a switched-off job is skipped at real ticks; each
// skip is one span with the tick and a "skipped" event naming the reason.
func TestKillSwitchSkip(t *testing.T) {
	h := newHarness(t)
	var ran atomic.Int32
	if err := h.s.Register("off", "* * * * * *", cronguard.JobFunc(func(context.Context) error {
		ran.Add(1)
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := h.s.SetEnabled(context.Background(), "off", false, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second) // one tick a second
	for len(h.runs()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := h.s.Stop(context.Background()); err != nil { // no more ticks: the counts are final
		t.Fatal(err)
	}
	spans := h.runs()
	if len(spans) == 0 || len(spans) != h.rec.count(cronguard.EventSkipped) || ran.Load() != 0 {
		t.Fatalf("%d spans, %d skip events, %d runs", len(spans), h.rec.count(cronguard.EventSkipped), ran.Load())
	}
	for _, sp := range spans {
		tick := attrs(sp.Attributes)["cronguard.tick"]
		tt, err := time.Parse(time.RFC3339Nano, tick)
		if err != nil || !tt.Equal(tt.Truncate(time.Second)) || !strings.HasSuffix(tick, "Z") {
			t.Errorf("tick %q: want a whole second in UTC (%v)", tick, err)
		}
		name, want := expect("off", map[string]string{
			"cronguard.trigger": "schedule", "cronguard.tick": tick,
			"cronguard.instance": instance, "cronguard.outcome": "skipped",
		}, nil)
		if sp.Name != name {
			t.Errorf("span %q, want %q", sp.Name, name)
		}
		checkAttrs(t, "skip", sp.Attributes, want)
		if sp.Status.Code != codes.Unset {
			t.Errorf("a kill switch skip has status %v", sp.Status)
		}
		if len(sp.Events) != 1 || sp.Events[0].Name != "skipped" {
			t.Fatalf("events %+v", sp.Events)
		}
		checkAttrs(t, "skipped event", sp.Events[0].Attributes, map[string]string{"cronguard.skip_reason": "killed"})
	}
}

// TestLockedSkip: a manual run that finds the lock held is a skip, not a
// failure, and the run that holds the lock is a separate span.
func TestLockedSkip(t *testing.T) {
	h := newHarness(t)
	started, release := make(chan struct{}), make(chan struct{})
	if err := h.s.Register("busy", yearly, cronguard.JobFunc(func(context.Context) error {
		close(started)
		<-release
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := h.s.RunManually(context.Background(), "busy")
		done <- err
	}()
	<-started
	if _, err := h.s.RunManually(context.Background(), "busy"); !errors.Is(err, cronguard.ErrLocked) {
		t.Fatalf("second run: %v, want ErrLocked", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	spans := h.runs() // in the order they ended: the skip first
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2", len(spans))
	}
	if o := attrs(spans[0].Attributes)["cronguard.outcome"]; o != "skipped" || len(spans[0].Events) != 1 ||
		attrs(spans[0].Events[0].Attributes)["cronguard.skip_reason"] != "locked" || spans[0].Status.Code != codes.Unset {
		t.Errorf("skip span: outcome %q, events %+v, status %v", o, spans[0].Events, spans[0].Status)
	}
	if o := attrs(spans[1].Attributes)["cronguard.outcome"]; o != "ok" {
		t.Errorf("run span: outcome %q", o)
	}
}

func panicSite() { panic("oops") }

// TestPanicRecorded: a panicking job's span ends with status Error, and
// the panic still reaches the Scheduler, which fails the run and records a
// stack that shows where the job panicked.
func TestPanicRecorded(t *testing.T) {
	h := newHarness(t)
	if err := h.s.Register("panics", yearly, cronguard.JobFunc(func(context.Context) error {
		panicSite()
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.RunManually(context.Background(), "panics"); !errors.Is(err, cronguard.ErrPanic) {
		t.Fatalf("err %v, want ErrPanic", err)
	}
	sp := one(t, h)
	if sp.Status.Code != codes.Error || sp.Status.Description != "panic: oops" ||
		attrs(sp.Attributes)["cronguard.outcome"] != "error" {
		t.Errorf("status %v %q, attributes %v", sp.Status.Code, sp.Status.Description, attrs(sp.Attributes))
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for _, ev := range h.rec.events {
		if ev.Kind == cronguard.EventFinished && !strings.Contains(ev.Stack, "otel_test.panicSite") {
			t.Errorf("the run's stack does not show the panic site:\n%s", ev.Stack)
		}
	}
}
