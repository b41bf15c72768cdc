package cronguard

import (
	"context"
	"fmt"
	"testing"

	"github.com/cronguard/cronguard/internal/redistest"
)

// The history writer hands RedisHistory what queued up as one pipeline: the
// entries land in order, and a Redis that lost the script (SCRIPT FLUSH)
// gets the batch entry by entry, which loads it again. A scheduled skip
// already recorded is not added twice within a batch either.
func TestRedisHistoryAppendBatch(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	hs, err := NewRedisHistory(c, WithHistorySize(100))
	if err != nil {
		t.Fatal(err)
	}
	h := hs.(*redisHistory)
	batch := func(from, n int) []HistoryEntry {
		es := make([]HistoryEntry, n)
		for i := range es {
			es[i] = HistoryEntry{Kind: EventFinished, Job: "j", Time: t0, Instance: fmt.Sprintf("i%d", from+i),
				Report: &Report{Job: "j"}}
		}
		return es
	}
	if errs := h.appendBatch(ctx, batch(0, 2)); errs != nil { // the script is not loaded yet
		t.Fatalf("first batch: %v", errs)
	}
	if errs := h.appendBatch(ctx, batch(2, 4)); errs != nil { // one pipeline
		t.Fatalf("batch: %v", errs)
	}
	if err := c.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if errs := h.appendBatch(ctx, batch(6, 2)); errs != nil {
		t.Fatalf("batch after SCRIPT FLUSH: %v", errs)
	}
	skip := HistoryEntry{Kind: EventSkipped, Job: "j", Trigger: TriggerSchedule, Tick: t0, Skip: "killed"}
	if errs := h.appendBatch(ctx, []HistoryEntry{skip, skip}); errs != nil {
		t.Fatalf("skips: %v", errs)
	}
	got, err := h.History(ctx, "j", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 9 {
		t.Fatalf("%d entries, want 8 runs and one skip: %+v", len(got), got)
	}
	if got[0].Kind != EventSkipped {
		t.Errorf("newest = %+v, want the skip", got[0])
	}
	for i, e := range got[1:] {
		if want := fmt.Sprintf("i%d", 7-i); e.Instance != want {
			t.Errorf("entry %d from the newest: instance %q, want %q (in the order given)", i+1, e.Instance, want)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if errs := h.appendBatch(canceled, batch(0, 2)); len(errs) != 2 || errs[0] == nil || errs[1] == nil {
		t.Errorf("canceled batch: %v, want an error per entry", errs)
	}
}

// A scheduler on Redis records a burst of runs through batches: every run
// of the burst is in the history once Stop has flushed the writer.
func TestRedisHistoryBurstBatched(t *testing.T) {
	srv := redistest.Start(t)
	s, _ := histSched(t, srv, "b", 10) // registers "j" and waits for the kill switch
	const jobs = 50
	for i := range jobs {
		if err := s.Register(fmt.Sprintf("j%d", i), "@every 1m", JobFunc(func(context.Context) error { return nil })); err != nil {
			t.Fatal(err)
		}
	}
	reps := make(chan Report, jobs)
	for i := range jobs {
		e, _ := s.lookup(fmt.Sprintf("j%d", i))
		go func() { reps <- s.execute(s.base, e, TriggerSchedule, t0, nil) }()
	}
	for range jobs {
		if r := <-reps; r.Outcome() != "done" {
			t.Fatalf("run: %+v", r)
		}
	}
	stopSched(t, s) // flushes the writer
	hs, err := NewRedisHistory(srv.Client(t), WithHistorySize(10))
	if err != nil {
		t.Fatal(err)
	}
	for i := range jobs {
		h, err := hs.History(context.Background(), fmt.Sprintf("j%d", i), 10)
		if err != nil || len(h) != 1 || h[0].Kind != EventFinished {
			t.Fatalf("history of j%d: %+v, %v; want its one run", i, h, err)
		}
	}
}
