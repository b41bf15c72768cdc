package cronguard

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// A middleware that runs the rest of the chain with a context that does not
// derive from the one it was given (context.Background(), say) cuts the run
// off from its guards: the run fails with ErrInvalidOption naming the job,
// and the job does not run unguarded.
func TestMiddlewareDroppingTheRunContext(t *testing.T) {
	mw := func(next Job) Job {
		return JobFunc(func(context.Context) error { return next.Run(context.Background()) })
	}
	s, _ := newTest(t, WithMiddleware(mw))
	ran := false
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error { ran = true; return nil }))
	for _, run := range []func() Report{
		func() Report { return tickAt(t, s, "j", t0) },
		func() Report { r, _ := s.RunManually(context.Background(), "j"); return r },
	} {
		r := run()
		if !errors.Is(r.Err, ErrInvalidOption) || !strings.Contains(r.Err.Error(), `"j"`) || ran {
			t.Fatalf("report %+v, job ran: %v; want ErrInvalidOption naming the job, and no run", r, ran)
		}
	}
}

// One middleware chain serves both triggers: the middleware sees which one
// through ReportFrom, and each run goes through the guards of its trigger.
func TestMiddlewareSharedByBothTriggers(t *testing.T) {
	var seen []Trigger
	wraps := 0
	mw := func(next Job) Job {
		wraps++
		return JobFunc(func(ctx context.Context) error {
			err := next.Run(ctx)
			r, _ := ReportFrom(ctx, err)
			seen = append(seen, r.Trigger)
			return err
		})
	}
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithMiddleware(mw), WithKillSwitch(ks))
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil }))
	_ = ks.SetEnabled(context.Background(), "j", false, "")
	if r := tickAt(t, s, "j", t0); skipOf(r) != "killed" {
		t.Fatalf("scheduled run while off: %+v", r)
	}
	if r, err := s.RunManually(context.Background(), "j"); err != nil || r.Outcome() != "done" {
		t.Fatalf("manual run while off (it bypasses the switch): %+v, %v", r, err)
	}
	if wraps != 1 || len(seen) != 2 || seen[0] != TriggerSchedule || seen[1] != TriggerManual {
		t.Fatalf("wrapped %d times, saw %v", wraps, seen)
	}
}
