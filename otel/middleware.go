// Package cgotel traces cronguard runs with OpenTelemetry: one span per run
// attempt, put in the job's context so that the job's own spans (SQL, HTTP)
// are its children.
//
//	s, _ := cronguard.New(cronguard.WithMiddleware(cgotel.Middleware(
//		cgotel.WithTracerProvider(tp), // default otel.GetTracerProvider()
//		cgotel.WithInstance("api-7"),
//	)))
//
// It is a module of its own (github.com/cronguard/cronguard/otel), so a
// service that imports cronguard pulls in OpenTelemetry only when it wants
// traces.
//
// # The span
//
// A middleware given with cronguard.WithMiddleware wraps every job outside
// the guards, so it sees every attempt, including those the kill switch,
// the tick claim, the overlap guard or the run lock then skip. Each attempt
// is one span of kind internal, named "cronguard.run <job>" (or
// "cronguard.run" for a Job run outside a Scheduler), with:
//
//   - cronguard.trigger: "schedule" or "manual";
//   - cronguard.tick: the scheduled tick, RFC 3339 in UTC (scheduled runs);
//   - cronguard.instance: the instance (WithInstance);
//   - cronguard.outcome: "ok", "error" or "skipped";
//   - for a skip, a span event "skipped" with cronguard.skip_reason
//     (killed, tick_taken, overlap, locked, backend, stopped);
//   - for an error, status Error with the message (cut to 200 bytes) and an
//     "exception" event; a skip is not an error, except a "backend" skip (the
//     lock or flag store could not answer), whose status is Error too.
//
// A scheduled run's span is the root of its trace; a manual run's span is a
// child of the span in RunManually's context. A panic in the job is recorded
// (status Error, outcome error) and passed on to the Scheduler, which turns
// it into a failed run.
//
// # What it reads from the core
//
// The middleware reads the run it wraps with cronguard.ReportFrom: the
// job's name, trigger, tick and instance before the run, and after it
// whether the guards skipped it and why, its stop reason, batches and items
// (cronguard.stop, cronguard.batches, cronguard.items.processed,
// cronguard.items.failed, cronguard.tripped). A run that started and was
// then stopped (the kill switch between batches, Stop) is a run with a stop
// reason, not a skip.
package cgotel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cronguard/cronguard"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the spans.
const ScopeName = "github.com/cronguard/cronguard/otel"

// Attribute keys and outcomes.
const (
	AttrJob        = attribute.Key("cronguard.job")
	AttrTrigger    = attribute.Key("cronguard.trigger")
	AttrTick       = attribute.Key("cronguard.tick")
	AttrInstance   = attribute.Key("cronguard.instance")
	AttrOutcome    = attribute.Key("cronguard.outcome")
	AttrSkipReason = attribute.Key("cronguard.skip_reason")

	OutcomeOK      = "ok"
	OutcomeError   = "error"
	OutcomeSkipped = "skipped"
)

// Option configures Middleware.
type Option func(*config)

type config struct {
	tp       trace.TracerProvider
	instance string
}

// WithTracerProvider sets the provider of the tracer (default
// otel.GetTracerProvider(), which follows a provider set later with
// otel.SetTracerProvider). nil keeps the default.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) {
		if tp != nil {
			c.tp = tp
		}
	}
}

// WithInstance sets cronguard.instance on every span; give it the
// Scheduler's WithInstanceID. Empty (the default) leaves the attribute out,
// unless the core tells the instance (core_report.go).
func WithInstance(id string) Option {
	return func(c *config) { c.instance = id }
}

// Middleware returns a cronguard.Middleware that makes one span per run
// attempt; see the package documentation.
func Middleware(opts ...Option) cronguard.Middleware {
	cfg := config{tp: otel.GetTracerProvider()}
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	tracer := cfg.tp.Tracer(ScopeName)
	return func(next cronguard.Job) cronguard.Job {
		return cronguard.JobFunc(func(ctx context.Context) error {
			return traced(ctx, tracer, cfg.instance, next)
		})
	}
}

// traced runs next inside a span.
func traced(ctx context.Context, tracer trace.Tracer, instance string, next cronguard.Job) (err error) {
	info := before(ctx)
	if instance != "" {
		info.instance = instance
	}
	ctx, span := tracer.Start(ctx, spanName(info.job), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(info.attributes()...))
	defer span.End()
	panicked := true
	defer func() {
		if !panicked {
			return
		}
		span.SetAttributes(AttrOutcome.String(OutcomeError))
		r := recover()
		if r == nil { // runtime.Goexit, not a panic: let it go on
			fail(span, errGoexit)
			return
		}
		fail(span, fmt.Errorf("panic: %v", r))
		// Re-panicked from this deferred call, before the stack unwinds: the
		// stack the Scheduler records still shows where the job panicked.
		panic(r) // the Scheduler recovers it and fails the run
	}()
	err = next.Run(ctx)
	panicked = false
	record(span, after(ctx, err))
	return err
}

var errGoexit = errors.New("the job called runtime.Goexit")

func spanName(job string) string {
	if job == "" {
		return "cronguard.run"
	}
	return "cronguard.run " + job
}

// runInfo is what the middleware knows of the attempt before it runs.
type runInfo struct {
	job      string // "" when the core does not say
	trigger  cronguard.Trigger
	tick     time.Time
	instance string
}

func (r runInfo) attributes() []attribute.KeyValue {
	attrs := []attribute.KeyValue{AttrTrigger.String(string(r.trigger))}
	if r.job != "" {
		attrs = append(attrs, AttrJob.String(r.job))
	}
	if !r.tick.IsZero() {
		attrs = append(attrs, AttrTick.String(r.tick.UTC().Format(time.RFC3339Nano)))
	}
	if r.instance != "" {
		attrs = append(attrs, AttrInstance.String(r.instance))
	}
	return attrs
}

// result is how the attempt ended.
type result struct {
	outcome string
	skip    string               // when skipped: the Report.Outcome of the skip
	backend bool                 // a skip because a store could not answer (ErrBackend)
	err     error                // the error to record, when outcome is error or a backend skip
	attrs   []attribute.KeyValue // what the core's report adds
}

// record puts the attempt's result on its span.
func record(span trace.Span, r result) {
	span.SetAttributes(AttrOutcome.String(r.outcome))
	span.SetAttributes(r.attrs...)
	if r.outcome == OutcomeSkipped {
		span.AddEvent("skipped", trace.WithAttributes(AttrSkipReason.String(r.skip)))
	}
	if r.err != nil && (r.outcome == OutcomeError || r.backend) {
		fail(span, r.err)
	}
}

// fail records err as the span's exception and error status. Its message
// may carry outside data (an item key, a Redis reply): it is cut.
func fail(span trace.Span, err error) {
	msg := clip(err.Error())
	span.AddEvent("exception", trace.WithAttributes(
		attribute.String("exception.type", fmt.Sprintf("%T", err)),
		attribute.String("exception.message", msg),
	))
	span.SetStatus(codes.Error, msg)
}
