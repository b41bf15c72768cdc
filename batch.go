package cronguard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"reflect"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of Batch.
const (
	defaultBatchSize  = 100
	defaultMaxBatches = 100
)

// Page tells Fetch which batch to return.
type Page struct {
	// Number counts the batches of this run, from 0.
	Number int
	// Size is the most items to return (LIMIT Size).
	Size int
	// After is, with Keyset, the key of the last item of the previous batch
	// (or the saved checkpoint, or "" at the start): return the items whose
	// key sorts after it. Without Keyset it is always "".
	After string
}

// Batch is a Job that works through items a batch at a time, so no run
// loads a whole table, with the kill switch re-read before every batch and a
// runaway guard.
//
// Drain mode (the default) fits "select the rows still to do": each batch is
// a fresh query, and processing an item must take it out of that query (mark
// the user as e-mailed). Keyset mode fits "walk the table in key order":
// Page.After carries the last key and Fetch returns the rows after it.
//
// A run ends at an empty batch (in drain mode the query is asked again
// until it returns nothing, so a Fetch that keeps returning a few handled
// items is caught), a short batch in keyset mode, MaxBatches (the rest waits
// for the next run), the kill switch, the error budget or a canceled
// context.
//
// The runaway guard: if Fetch returns an item whose Key was already
// processed in this run (or twice in one batch), the query is not making
// progress — the "same 100 users every minute" bug. The run stops with
// ErrRunaway before processing any of that batch, and the job's kill switch
// is turned off where it can be flipped, so the next tick does not repeat
// the harm. An item that failed earlier in the run and comes back is not
// retried in the same run, and does not trip the guard.
//
// Cost: with Concurrency 1 (the default) items are processed one after
// another on the run's goroutine, with no goroutine, context or allocation
// per item (batchAllocBudget). The runaway guard remembers every key a run
// fetches, exactly (keySet): 22 to 27 bytes a key, 24 at 1,000,000 keys,
// plus the key's own bytes, which stay alive until the run ends. A run
// whose first batch is full reserves room for Size × MaxBatches keys at
// once (10,000 by default, 224 KB; at most 1M, 24 MB). Over a no-op Process
// that is about 75 ns per item at the defaults on a 2-core VM, and about 90
// ns for a run of 1,000,000 items, whose keys outgrow the CPU caches
// (README, "Cost per job").
type Batch[T any] struct {
	// Fetch returns the next batch, at most p.Size items. Required.
	Fetch func(ctx context.Context, p Page) ([]T, error)
	// Process handles one item. An error counts the item as failed and the
	// run goes on (see MaxFailures). Required.
	Process func(ctx context.Context, item T) error
	// Key identifies an item, for the runaway guard, events and keyset
	// paging. Required.
	Key func(item T) string

	// Size is the batch size (default 100). RunManually's items are
	// processed in batches of Size too.
	Size int
	// MaxBatches bounds the batches of one run (default 100). It does not
	// bound RunManually's items: the caller chose every one.
	MaxBatches int
	// Keyset makes Page.After carry the last key of the previous batch.
	Keyset bool
	// Checkpoint saves the keyset cursor after each batch in the scheduler's
	// CheckpointStore and starts the next run from it. It implies Keyset.
	// The cursor is never reset: it suits tables that grow at the end.
	//
	// The cursor never passes an item that was neither processed nor
	// counted failed: after a batch it moves to the last key of the batch's
	// handled prefix, the items before the first one a timeout, a cancel or
	// the error budget cut short or kept from starting. A run cut short
	// thus saves what it did, and the next run starts at the first item it
	// did not do. With Concurrency > 1, items after that one that finished
	// out of order are processed again by the next run: at least once, never
	// lost. Failed items are behind the cursor (their item_failed events
	// name them); a run that lost its lock saves nothing.
	Checkpoint bool
	// PerSecond limits items processed per second (0: no limit; NaN, Inf
	// and negative values are ErrInvalidJob). A run whose next token would
	// come after its deadline waits for the deadline and ends with it
	// (Outcome "timeout" or "canceled"); it never skips the items left.
	PerSecond float64
	// Concurrency is how many items of a batch are processed at once
	// (default 1). Process must then be safe for concurrent use. Any value
	// is safe: no more goroutines than the batch has items are started.
	Concurrency int
	// MaxFailures is the item error budget of one run: the run stops with
	// ErrErrorBudget when more items fail (0: no budget).
	MaxFailures int
}

// batchJob is what the Scheduler needs of a Batch beyond Job, whatever T.
type batchJob interface {
	Job
	validate(job string) error
	checkItems(job string, items []any) ([]any, error)
	runItems(ctx context.Context, items []any) error
}

func (b Batch[T]) validate(job string) error {
	missing := func(field string) error {
		return fmt.Errorf("%w: job %q: Batch[%s].%s is nil", ErrInvalidJob, job, typeName[T](), field)
	}
	switch {
	case b.Fetch == nil:
		return missing("Fetch")
	case b.Process == nil:
		return missing("Process")
	case b.Key == nil:
		return missing("Key")
	}
	if math.IsNaN(b.PerSecond) || math.IsInf(b.PerSecond, 0) {
		return fmt.Errorf("%w: job %q: Batch.PerSecond is %v, must be a finite number (0: no limit)", ErrInvalidJob, job, b.PerSecond)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"Size", float64(b.Size)}, {"MaxBatches", float64(b.MaxBatches)}, {"PerSecond", b.PerSecond},
		{"Concurrency", float64(b.Concurrency)}, {"MaxFailures", float64(b.MaxFailures)},
	} {
		if f.v < 0 {
			return fmt.Errorf("%w: job %q: Batch.%s is %v, must not be negative", ErrInvalidJob, job, f.name, f.v)
		}
	}
	return nil
}

func typeName[T any]() string { return reflect.TypeFor[T]().String() }

func (b Batch[T]) size() int       { return cmp.Or(b.Size, defaultBatchSize) }
func (b Batch[T]) maxBatches() int { return cmp.Or(b.MaxBatches, defaultMaxBatches) }

// maxKeysHint bounds the room the runaway guard reserves for a run's keys
// up front: 1M keys, 24 MB (keySet).
const maxKeysHint = 1 << 20

// keysHint is the room the runaway guard reserves for the keys of a run
// whose first batch has n items. A short first batch is likely the last:
// room for it. A full one likely has more behind it: room for the most the
// run may fetch, Size × MaxBatches, up to maxKeysHint (default 10,000 keys,
// 224 KB) — a set that grows instead hashes every key again at each
// doubling.
func (b Batch[T]) keysHint(n int) int {
	size := b.size()
	if n < size {
		return n
	}
	if size > maxKeysHint/b.maxBatches() {
		return maxKeysHint
	}
	return size * b.maxBatches()
}

// Run implements Job: one run over the batches.
func (b Batch[T]) Run(ctx context.Context) error {
	run := runFrom(ctx)
	if err := b.validate(run.job); err != nil {
		return err
	}
	w := b.newWorker(run)
	keyset := b.Keyset || b.Checkpoint
	after, err := w.loadCheckpoint(ctx)
	if err != nil {
		return err
	}
	var handled *runKeys // every key fetched in this run; made with the first batch
	for n := 0; n < b.maxBatches(); n++ {
		if err := run.checkKill(ctx, n); err != nil { // killswitch.go; from the local cache: no round trip
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		p := Page{Number: n, Size: b.size()}
		if keyset {
			p.After = after
		}
		items, err := b.Fetch(ctx, p)
		if err != nil {
			return fmt.Errorf("cronguard: job %q: fetch batch %d (after %q): %w", run.job, n, clip(p.After), err)
		}
		if len(items) == 0 {
			return nil
		}
		if handled == nil {
			handled = newRunKeys(b.keysHint(len(items)))
		}
		keys, fresh, err := w.runawayGuard(ctx, n, items, handled)
		if err != nil {
			return err
		}
		run.batches.Add(1)
		if after, err = w.step(ctx, n, keys, fresh, handled, after); err != nil {
			return err
		}
		if len(fresh) == 0 {
			return nil // only items that failed earlier in this run: nothing new to do
		}
		if keyset && len(items) < b.size() {
			return nil // the cursor has passed the last row
		}
	}
	run.setMore()
	return nil
}

// step processes the fresh items of batch n (whose keys, in Fetch order,
// are keys) and moves the cursor. It returns the cursor the next batch
// starts after and the error that ends the run, if any.
//
// The cursor moves only to the last key of the batch's handled prefix: the
// items up to the first one that was neither processed nor counted failed
// (cut short by a timeout, a cancel or the error budget, or never started).
// With Concurrency > 1 items finish out of order, so items after that one
// may be done already; they are processed again by the next run, which
// starts at the unhandled item. No item is ever left behind the cursor.
func (w *worker[T]) step(ctx context.Context, n int, keys []string, fresh []keyed[T], handled *runKeys, after string) (string, error) {
	outs, err := w.processAll(ctx, fresh)
	w.settle(keys, fresh, outs, handled)
	run := w.run
	ev := run.event(EventBatchDone, nil)
	ev.Batch, ev.Items = n, len(keys)
	run.emit(&ev)
	last, moved := handledPrefix(keys, fresh, outs)
	if !moved {
		return after, err
	}
	if saveErr := w.saveCheckpoint(ctx, last); saveErr != nil {
		return last, errors.Join(err, saveErr)
	}
	return last, err
}

// settle records the outcome of batch keys in handled: a fresh item that
// failed, or was cut short, may come back (it is not retried); the rest
// stay taken. Only the failures cost a map write.
func (w *worker[T]) settle(keys []string, fresh []keyed[T], outs []outcome, handled *runKeys) {
	j := 0
	for _, k := range keys {
		if j < len(fresh) && fresh[j].key == k {
			if outs[j] != succeeded {
				handled.fail(k)
			}
			j++
			continue
		}
		handled.fail(k) // failed in an earlier batch, back in this one
	}
}

// handledPrefix returns the last key of keys before the first one that was
// neither processed nor counted failed, and whether there is one. keys are
// the batch's in Fetch order; fresh, in the same order, those processed
// now with their outcomes outs; every other key failed in an earlier batch.
func handledPrefix[T any](keys []string, fresh []keyed[T], outs []outcome) (string, bool) {
	last, ok, j := "", false, 0
	for _, k := range keys {
		if j < len(fresh) && fresh[j].key == k {
			if outs[j] == notDone {
				break
			}
			j++
		}
		last, ok = k, true
	}
	return last, ok
}

// worker holds what one run of a Batch needs beyond the Batch itself.
type worker[T any] struct {
	b       Batch[T]
	run     *run
	limiter *rate.Limiter

	fresh []keyed[T] // of the batch, reused from batch to batch
	outs  []outcome  // of the batch, reused from batch to batch
}

func (b Batch[T]) newWorker(run *run) *worker[T] {
	w := &worker[T]{b: b, run: run}
	if b.PerSecond > 0 {
		w.limiter = rate.NewLimiter(rate.Limit(b.PerSecond), 1)
	}
	return w
}

// runawayGuard returns the keys of every item of batch n, in order, and
// the items to process, or ErrRunaway when one was already processed in
// this run or comes twice in the batch. It costs one keySet add per item
// (and a map access per item that failed earlier); the keys are the key
// set's, read-only, and fresh is the worker's, reused by the next batch.
func (w *worker[T]) runawayGuard(ctx context.Context, n int, items []T, handled *runKeys) ([]string, []keyed[T], error) {
	keys, isNew := addKeys(&handled.fetched, items, w.b.Key)
	fresh := w.fresh[:0]
	for i, k := range keys {
		switch {
		case isNew[i]:
			fresh = append(fresh, keyed[T]{items[i], k})
		case handled.failed[k] == seenFailed:
			handled.failed[k] = seenFailedAgain
		default: // taken in this run, or a failed one twice in this batch
			return nil, nil, w.runaway(ctx, n, k)
		}
	}
	w.fresh = fresh
	return keys, fresh, nil
}

// keyed is an item with its key, computed once on the run's goroutine, where
// a panicking Key is caught like any panic of the job.
type keyed[T any] struct {
	item T
	key  string
}

// runaway stops the run and switches the job off where the switch flips.
func (w *worker[T]) runaway(ctx context.Context, n int, key string) error {
	run := w.run
	err := fmt.Errorf("%w: job %q: batch %d returned item %q again", ErrRunaway, run.job, n, clip(key))
	err = run.switchOff(ctx, err) // killswitch.go
	ev := run.event(EventRunaway, err)
	ev.Batch, ev.Item = n, key
	run.emit(&ev)
	return err
}

// outcome is what became of one item of a batch.
type outcome uint8

const (
	notDone   outcome = iota // never started, or cut short by the run's end: neither processed nor failed
	succeeded                // Process returned nil
	failed                   // Process failed or panicked: counted in Report.Failed
)

// processAll processes items, Concurrency at a time, and returns each one's
// outcome. The error is the run's cancellation cause or ErrErrorBudget; when
// it is nil every item has been processed or counted failed (the loop stops
// early, and processOne leaves an item notDone, only once ctx has ended).
func (w *worker[T]) processAll(ctx context.Context, items []keyed[T]) ([]outcome, error) {
	outs := w.outcomes(len(items))
	if w.b.Concurrency <= 1 {
		return outs, w.processInline(ctx, items, outs)
	}
	return outs, w.processConcurrently(ctx, items, outs)
}

// processConcurrently is processAll with Concurrency > 1: a goroutine per
// item, at most Concurrency at once.
func (w *worker[T]) processConcurrently(ctx context.Context, items []keyed[T], outs []outcome) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, max(w.b.Concurrency, 1))
	var wg sync.WaitGroup
	for i, it := range items {
		if w.wait(ctx) != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil { // checked after the slot frees: the last item may have spent the budget
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			var over error
			if outs[i], over = w.processOne(ctx, it); over != nil {
				cancel(over) // the items in flight see it; no new one starts
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// outcomes returns n notDone outcomes, in the worker's buffer.
func (w *worker[T]) outcomes(n int) []outcome {
	if cap(w.outs) < n {
		w.outs = make([]outcome, n)
	}
	w.outs = w.outs[:n]
	clear(w.outs)
	return w.outs
}

// processInline is processAll with Concurrency 1: the items one after
// another on the run's goroutine, as a hand-written loop would, with no
// goroutine, context or channel per item or batch. A panic in Process is
// still contained (safeProcess); the outcomes are those processAll gives.
func (w *worker[T]) processInline(ctx context.Context, items []keyed[T], outs []outcome) error {
	for i, it := range items {
		if w.wait(ctx) != nil || ctx.Err() != nil {
			return context.Cause(ctx)
		}
		var over error
		if outs[i], over = w.processOne(ctx, it); over != nil {
			return over // the error budget is spent: no further item starts
		}
	}
	if ctx.Err() != nil { // the last item was cut short
		return context.Cause(ctx)
	}
	return nil
}

// wait takes the next PerSecond token, however far off it is, unless ctx
// ends first. Not rate.Limiter.Wait: that fails at once, with ctx still
// live, when the token would come after ctx's deadline, and a batch that
// took that for the end of its items once saved its checkpoint past items
// it never processed. Here the run goes on until its deadline and then ends
// with its context's cause (timeout or canceled).
func (w *worker[T]) wait(ctx context.Context) error {
	if w.limiter == nil {
		return nil
	}
	r := w.limiter.Reserve() // burst 1: always granted, possibly in the future
	d := r.Delay()
	if d == 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel() // the token was not used
		return context.Cause(ctx)
	}
}

// processOne processes one item and returns its outcome, and the error
// that stops the batch when this failure spent the error budget. An item
// whose Process returns the run's own cancellation (wrapped or not) was cut
// short, not failed: it is not counted, and a checkpoint never passes it.
func (w *worker[T]) processOne(ctx context.Context, it keyed[T]) (outcome, error) {
	run := w.run
	stack, err := w.safeProcess(ctx, it)
	if err == nil {
		run.processed.Add(1)
		return succeeded, nil
	}
	if ctx.Err() != nil && (errors.Is(err, ctx.Err()) || errors.Is(err, context.Cause(ctx))) {
		return notDone, nil
	}
	n := run.failed.Add(1)
	ev := run.event(EventItemFailed, err)
	ev.Item, ev.Stack = it.key, stack
	run.emit(&ev)
	if w.b.MaxFailures > 0 && n > int64(w.b.MaxFailures) {
		return failed, fmt.Errorf("%w: job %q: %d items failed, budget %d", ErrErrorBudget, run.job, n, w.b.MaxFailures)
	}
	return failed, nil
}

// safeProcess calls Process, turning a panic into an item failure: with
// Concurrency it runs on its own goroutine, where a panic would end the
// process.
func (w *worker[T]) safeProcess(ctx context.Context, it keyed[T]) (stack string, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: job %q: item %q: %v", ErrPanic, w.run.job, clip(it.key), r)
			stack = string(debug.Stack())
		}
	}()
	return "", w.b.Process(ctx, it.item)
}

// loadCheckpoint returns the cursor a Checkpoint batch starts after.
func (w *worker[T]) loadCheckpoint(ctx context.Context) (string, error) {
	if !w.b.Checkpoint {
		return "", nil
	}
	return w.run.loadCheckpoint(ctx) // checkpoint.go
}

// saveCheckpoint records after as the cursor of a Checkpoint batch.
func (w *worker[T]) saveCheckpoint(ctx context.Context, after string) error {
	if !w.b.Checkpoint {
		return nil
	}
	return w.run.saveCheckpoint(ctx, after) // checkpoint.go
}

// checkItems checks that every item is a T (or a []T, which is spread) and
// returns them as one flat list.
func (b Batch[T]) checkItems(job string, items []any) ([]any, error) {
	flat := make([]any, 0, len(items))
	for i, it := range items {
		switch v := it.(type) {
		case T:
			flat = append(flat, v)
		case []T:
			for _, x := range v {
				flat = append(flat, x)
			}
		default:
			return nil, fmt.Errorf("%w: job %q: item %d is %T, want %s (or []%s)",
				ErrInvalidItems, job, i, it, typeName[T](), typeName[T]())
		}
	}
	return flat, nil
}

// runItems processes exactly the given items, in order, in batches of
// Size. An item whose Key was given before is processed once: the copies
// are dropped and counted in Report.Duplicates. Like every manual run it
// does not read the kill switch, not even between batches; it stops between
// batches only when its context ends, and within one at the error budget.
// MaxBatches does not apply: the caller chose every item.
func (b Batch[T]) runItems(ctx context.Context, items []any) error {
	run := runFrom(ctx)
	w := b.newWorker(run)
	todo := b.unique(run, items)
	size := b.size()
	for n := 0; len(todo) > 0; n++ {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		chunk := todo[:min(size, len(todo))] // no i+size: Size may be math.MaxInt
		todo = todo[len(chunk):]
		run.batches.Add(1)
		_, err := w.processAll(ctx, chunk)
		ev := run.event(EventBatchDone, nil)
		ev.Batch, ev.Items = n, len(chunk)
		run.emit(&ev)
		if err != nil {
			return err
		}
	}
	return nil
}

// unique keys items (checked by checkItems to be Ts) and drops every copy
// of a key already seen, counting it in run.
func (b Batch[T]) unique(run *run, items []any) []keyed[T] {
	out := make([]keyed[T], 0, len(items))
	seen := make(map[string]struct{}, len(items))
	for _, it := range items {
		t := it.(T)
		k := b.Key(t) // on the run's goroutine: a panic fails the run, as in Run
		if _, dup := seen[k]; dup {
			run.duplicates.Add(1)
			continue
		}
		seen[k] = struct{}{}
		out = append(out, keyed[T]{t, k})
	}
	return out
}

// batchAllocBudget is the most objects a scheduled run of a no-op Batch over
// 10,000 in-memory items (the default Size and MaxBatches) allocates, on
// the memory backends with nobody listening (alloc_test.go holds it): the
// run's own (runAllocBudget), the runaway guard's key set, and the
// worker with its per-batch buffers, reused from batch to batch. None is
// per item. With Concurrency > 1 each item adds its goroutine.
const batchAllocBudget = 60
