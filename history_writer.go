package cronguard

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// historyRecorder hands history entries from the runs to one writer
// goroutine through a bounded queue, so a slow or failing store never slows
// or fails a run; a MemoryHistory, which can do neither, is appended on the
// run's goroutine instead (appendNow). Its zero value is ready: the store is
// made on first use and the writer starts with the first queued entry (a
// scheduler that queues nothing starts no goroutine). Scheduler.Stop ends
// the writer.
type historyRecorder struct {
	storeOnce sync.Once
	store     HistoryStore

	mu     sync.RWMutex // write-held only by close, so closing waits for senders
	closed bool
	// stopped is closed for appendNow, which reads it without mu: a read
	// lock would write its shared counter in every run, and the runs of a
	// tick, on every core at once, would pass that cache line from core to
	// core. A memory append racing close may land just after it: that
	// store neither blocks nor fails, so nothing waits for it.
	stopped   atomic.Bool
	startOnce sync.Once
	queue     chan HistoryEntry
	quit      chan struct{}      // closed by close: flush and return
	ctx       context.Context    // parent of every write; canceled at the stop bound
	cancel    context.CancelFunc // cancels ctx
	done      chan struct{}      // closed when the writer has returned
}

// storeOf returns the history store, made from the options on first use.
func (h *historyRecorder) storeOf(s *Scheduler) HistoryStore {
	h.storeOnce.Do(func() { h.store = s.cfg.makeHistoryStore() })
	return h.store
}

// observe records ev if the history keeps events of its kind. It is the
// hook in Scheduler.emit.
func (h *historyRecorder) observe(s *Scheduler, ev *Event, ownsReport bool) {
	var e HistoryEntry
	if historyFromEvent(ev, &e, ownsReport) {
		h.record(s, &e)
	}
}

// record queues e for the writer without ever waiting: a full queue drops e
// and raises an EventHistory. After Stop it drops e silently.
func (h *historyRecorder) record(s *Scheduler, e *HistoryEntry) {
	if h.appendNow(s, e) {
		return
	}
	if !h.enqueue(s, e) {
		h.dropped(s, e)
	}
}

// dropped raises the EventHistory of an entry the full queue dropped.
func (h *historyRecorder) dropped(s *Scheduler, e *HistoryEntry) {
	s.emit(Event{Kind: EventHistory, Job: e.Job, Trigger: e.Trigger, Tick: e.Tick,
		Err: fmt.Errorf("%w: history: job %q: %s entry dropped: %d entries already wait for the writer",
			ErrBackend, e.Job, e.Kind, cap(h.queue))})
}

// appendNow appends e on the caller's goroutine when the store is a
// memoryHistory, which neither blocks nor fails: no queue, no writer
// goroutine, no timer per entry. It reports false for any other store.
// After Stop it drops e silently, like enqueue.
func (h *historyRecorder) appendNow(s *Scheduler, e *HistoryEntry) bool {
	m, ok := h.storeOf(s).(*memoryHistory)
	if !ok {
		return false
	}
	if !h.stopped.Load() {
		m.add(e)
	}
	return true
}

// appendDone appends the history entry of a finished run of e without
// error, rep, which nobody else holds, to the memory history: what observe does
// for its event, without building the event or the entry. The caller has
// checked that the store is a memoryHistory (Scheduler.reportUnkept). It
// reports false when it dropped the entry (after Stop).
func (h *historyRecorder) appendDone(s *Scheduler, e *entry, rep *Report) bool {
	if h.stopped.Load() {
		return false
	}
	end := rep.Start.Add(rep.Duration) // no clock read
	if rep.Start.IsZero() {            // a middleware returned without running the job
		end = time.Now()
	}
	h.storeOf(s).(*memoryHistory).addDone(e, rep, &end)
	return true
}

// enqueue reports false only when the queue is full.
func (h *historyRecorder) enqueue(s *Scheduler, e *HistoryEntry) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed {
		return true
	}
	h.startOnce.Do(func() { h.start(s) })
	select {
	case h.queue <- *e:
		return true
	default:
		return false
	}
}

func (h *historyRecorder) start(s *Scheduler) {
	h.queue = make(chan HistoryEntry, cmp.Or(s.cfg.history.queue, historyQueueSize))
	h.quit = make(chan struct{})
	h.done = make(chan struct{})
	h.ctx, h.cancel = context.WithCancel(context.Background())
	store := h.storeOf(s)
	go h.loop(s, store)
}

// historyBatchMax bounds the entries the writer hands a batchAppender at
// once.
const historyBatchMax = 128

// batchAppender is a HistoryStore that writes several entries in one round
// trip (RedisHistory: one pipeline). The writer gives it what has queued up
// while it wrote the last batch: at 1,000 runs a second, one round trip
// instead of 1,000, and the CPU of a round trip per run saved.
type batchAppender interface {
	// appendBatch records es in order, and returns one error per entry (nil
	// where it was recorded), or nil when all were.
	appendBatch(ctx context.Context, es []HistoryEntry) []error
}

func (h *historyRecorder) loop(s *Scheduler, store HistoryStore) {
	defer close(h.done)
	batcher, _ := store.(batchAppender)
	var batch []HistoryEntry
	for {
		select {
		case e := <-h.queue:
			if batcher != nil {
				batch = h.writeBatch(s, batcher, h.drain(append(batch[:0], e)))
				continue
			}
			if err := h.write(h.ctx, s, store, e); err != nil {
				s.emit(Event{Kind: EventHistory, Job: e.Job, Trigger: e.Trigger, Tick: e.Tick, Err: err})
			}
		case <-h.quit:
			h.flush(s, store)
			return
		}
	}
}

// drain adds to batch the entries queued now, up to historyBatchMax.
func (h *historyRecorder) drain(batch []HistoryEntry) []HistoryEntry {
	for len(batch) < historyBatchMax {
		select {
		case e := <-h.queue:
			batch = append(batch, e)
		default:
			return batch
		}
	}
	return batch
}

// writeBatch appends batch in one call, bounded by the call budget, raises
// an EventHistory per entry not recorded, and returns batch for reuse.
func (h *historyRecorder) writeBatch(s *Scheduler, b batchAppender, batch []HistoryEntry) []HistoryEntry {
	ctx, cancel := context.WithTimeout(h.ctx, s.cfg.budget)
	errs := b.appendBatch(ctx, batch)
	cancel()
	for i, err := range errs {
		if err != nil {
			e := &batch[i]
			s.emit(Event{Kind: EventHistory, Job: e.Job, Trigger: e.Trigger, Tick: e.Tick,
				Err: fmt.Errorf("%w: history: job %q: %s entry not recorded: %w", ErrBackend, e.Job, e.Kind, err)})
		}
	}
	clear(batch) // drop the Reports it points to
	return batch
}

// write appends e, bounded by the call budget.
func (h *historyRecorder) write(ctx context.Context, s *Scheduler, store HistoryStore, e HistoryEntry) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.budget)
	defer cancel()
	if err := store.Append(ctx, e); err != nil {
		return fmt.Errorf("%w: history: job %q: %s entry not recorded: %w", ErrBackend, e.Job, e.Kind, err)
	}
	return nil
}

// flush writes what is still queued until the stop bound; what it cannot
// write is counted in one log line, not one event per entry.
func (h *historyRecorder) flush(s *Scheduler, store HistoryStore) {
	lost := 0
	var last error
	for len(h.queue) > 0 { // nothing is queued after close: len is exact
		if err := h.write(h.ctx, s, store, <-h.queue); err != nil {
			lost, last = lost+1, err
		}
	}
	if lost > 0 {
		s.cfg.logger.Warn("cronguard: history entries not written at stop", "lost", lost, "err", last.Error())
	}
}

// close stops the writer after it has written what is queued, for at most
// the stop grace (5s) or until ctx ends: then the write going on is canceled
// (HistoryStore.Append must return when its context ends) and what is left
// is dropped, with one log line. Entries recorded later are dropped. It may
// be called more than once.
func (h *historyRecorder) close(ctx context.Context, s *Scheduler) {
	h.mu.Lock()
	wasClosed := h.closed
	h.closed = true
	h.stopped.Store(true)
	started := h.queue != nil
	h.mu.Unlock()
	if wasClosed || !started {
		return
	}
	bound, cancel := context.WithTimeout(ctx, s.cfg.stopGrace)
	defer cancel()
	defer h.cancel()
	close(h.quit)
	select {
	case <-h.done:
	case <-bound.Done():
		h.cancel()
		<-h.done
	}
}
