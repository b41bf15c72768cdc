package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/cronguard/cronguard"
)

// batchShape is how a no-op Batch works through the items: in one run, or
// in runs of the default size.
type batchShape struct {
	Name             string `json:"shape"`
	Size, MaxBatches int
}

var batchShapes = []batchShape{
	{"defaults (Size 100, MaxBatches 100: runs of 10,000)", 100, 100}, // Batch's defaults
	{"one run (Size 1,000, MaxBatches 1,001)", 1000, 1001},
}

// batchResult is what a Batch adds per item over a hand-written loop.
type batchResult struct {
	Shape    string    `json:"shape"`
	Items    int       `json:"items"`
	Runs     int       `json:"runs_per_rep"`
	BatchNs  []float64 `json:"batch_ns_per_item"` // per rep
	LoopNs   []float64 `json:"loop_ns_per_item"`  // per rep
	Overhead []float64 `json:"overhead_ns_per_item"`
}

type batchItem struct {
	id  int
	key string
}

// batchCost measures, for every shape, a no-op Batch (drain mode) over n
// in-memory items against a hand-written loop making the same Fetch, Key
// and Process calls, interleaved in each rep: RunManually whole runs until
// the n items are done, then the loop over the same n.
func batchCost(n, reps int) ([]batchResult, error) {
	items := make([]batchItem, n)
	for i := range items {
		items[i] = batchItem{i, strconv.Itoa(i)}
	}
	var out []batchResult
	for _, shape := range batchShapes {
		r, err := batchShapeCost(items, shape, reps)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "batch %-52s %d items: overhead %.0f ns/item (batch %.0f, loop %.1f)\n",
			shape.Name, n, median(r.Overhead), median(r.BatchNs), median(r.LoopNs))
		out = append(out, r)
	}
	return out, nil
}

func batchShapeCost(items []batchItem, shape batchShape, reps int) (batchResult, error) {
	res := batchResult{Shape: shape.Name, Items: len(items)}
	pos := 0
	b := cronguard.Batch[batchItem]{
		Fetch: func(_ context.Context, p cronguard.Page) ([]batchItem, error) {
			end := min(pos+p.Size, len(items))
			next := items[pos:end]
			pos = end
			return next, nil
		},
		Process:    func(context.Context, batchItem) error { return nil },
		Key:        func(it batchItem) string { return it.key },
		Size:       shape.Size,
		MaxBatches: shape.MaxBatches,
	}
	s, err := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)), cronguard.WithInstanceID("schedbench"))
	if err != nil {
		return res, err
	}
	defer func() { _ = s.Stop(context.Background()) }()
	if err := s.Register("batch", specIdle, b); err != nil {
		return res, err
	}
	ctx := context.Background()
	for range reps + 1 { // the first is warm-up
		pos = 0
		t0 := time.Now()
		runs := 0
		for done := 0; done < len(items); runs++ {
			rep, err := s.RunManually(ctx, "batch")
			if err != nil || rep.Processed == 0 {
				return res, fmt.Errorf("batch run: processed %d, stop %s, err %v", rep.Processed, rep.Outcome(), err)
			}
			done += rep.Processed
		}
		lib := time.Since(t0)
		pos = 0
		t1 := time.Now()
		if got := handLoop(ctx, b); got != len(items) {
			return res, fmt.Errorf("hand loop: %d items", got)
		}
		loop := time.Since(t1)
		per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(len(items)) }
		res.Runs = runs
		res.BatchNs = append(res.BatchNs, per(lib))
		res.LoopNs = append(res.LoopNs, per(loop))
		res.Overhead = append(res.Overhead, per(lib)-per(loop))
	}
	res.BatchNs, res.LoopNs, res.Overhead = res.BatchNs[1:], res.LoopNs[1:], res.Overhead[1:]
	return res, nil
}

// handLoop is what a user would write without the library: fetch a batch,
// key and process each item, until an empty batch.
func handLoop(ctx context.Context, b cronguard.Batch[batchItem]) int {
	n := 0
	for number := 0; ; number++ {
		items, err := b.Fetch(ctx, cronguard.Page{Number: number, Size: b.Size})
		if err != nil || len(items) == 0 {
			return n
		}
		for _, it := range items {
			if b.Key(it) == "" {
				return n
			}
			if b.Process(ctx, it) == nil {
				n++
			}
		}
	}
}
