package cgotel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"go.opentelemetry.io/otel/codes"
)

type item struct{ id string }

// keyset walks ids in key order, two a batch, calling each for every item.
func keyset(ids []string, each func(id string) error) cronguard.Batch[item] {
	return cronguard.Batch[item]{
		Fetch: func(_ context.Context, p cronguard.Page) ([]item, error) {
			var out []item
			for _, id := range ids {
				if id > p.After && len(out) < p.Size {
					out = append(out, item{id})
				}
			}
			return out, nil
		},
		Process: func(_ context.Context, it item) error { return each(it.id) },
		Key:     func(it item) string { return it.id },
		Size:    2,
		Keyset:  true,
	}
}

// TestReportAttributes: with the core's report the span names the job and
// carries the stop reason, batches and items.
func TestReportAttributes(t *testing.T) {
	h := newHarness(t)
	if err := h.s.Register("batch", yearly, keyset([]string{"1", "2", "3", "4", "5"}, func(id string) error {
		if id == "3" {
			return errors.New("bounce")
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.s.RunManually(context.Background(), "batch"); err != nil {
		t.Fatal(err)
	}
	sp := one(t, h)
	if sp.Name != "cronguard.run batch" {
		t.Errorf("name %q", sp.Name)
	}
	checkAttrs(t, "batch", sp.Attributes, map[string]string{
		"cronguard.job": "batch", "cronguard.trigger": "manual", "cronguard.instance": instance,
		"cronguard.outcome": "ok", "cronguard.stop": "done", "cronguard.batches": "3",
		"cronguard.items.processed": "4", "cronguard.items.failed": "1",
	})
}

// TestKilledBetweenBatchesIsNoSkip: a run that started and was stopped by
// the kill switch before its second batch is a run (outcome error, stop
// killed), not a skip; the ticks after it are skips.
func TestKilledBetweenBatchesIsNoSkip(t *testing.T) {
	h := newHarness(t)
	if err := h.s.Register("emails", "* * * * * *", keyset([]string{"1", "2", "3", "4"}, func(id string) error {
		if id == "1" {
			return h.s.SetEnabled(context.Background(), "emails", false, "operator")
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.rec.count(cronguard.EventFinished) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := h.s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := h.runs()
	if len(spans) == 0 || h.rec.count(cronguard.EventFinished) != 1 {
		t.Fatalf("%d spans, %d finished runs", len(spans), h.rec.count(cronguard.EventFinished))
	}
	run := spans[0]
	tick := attrs(run.Attributes)["cronguard.tick"]
	checkAttrs(t, "killed run", run.Attributes, map[string]string{
		"cronguard.job": "emails", "cronguard.trigger": "schedule", "cronguard.tick": tick,
		"cronguard.instance": instance, "cronguard.outcome": "error", "cronguard.stop": "killed",
		"cronguard.batches": "1", "cronguard.items.processed": "2", "cronguard.items.failed": "0",
	})
	if run.Status.Code != codes.Error {
		t.Errorf("status %v", run.Status)
	}
	for _, sp := range spans[1:] {
		if o := attrs(sp.Attributes)["cronguard.outcome"]; o != "skipped" {
			t.Errorf("later tick: outcome %q", o)
		}
	}
}
