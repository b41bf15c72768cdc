package cronguard

import (
	"context"
	"sync"
	"time"
)

// memoryHistory is the embedded HistoryStore: a ring of the latest entries
// per job, in this process's memory. It is the default without WithRedis.
//
// It is written on every run's goroutine (history_writer.go), so an entry
// costs no allocation of its own: the ring keeps it in a compact slot
// (memEntry, history_slot.go) and makes its ID only when it is read.
//
// Each ring has its own lock, and the rings are found in a sync.Map: the
// runs of different jobs, which end at the same moment when they share a
// tick, never wait for each other.
type memoryHistory struct {
	size int
	jobs sync.Map // job name → *historyRing
}

// historyRing holds the latest entries of one job, in chunks of
// historyChunk slots: slot i is chunks[i/historyChunk][i%historyChunk], and
// slot next-1 (mod the store's size) holds the newest entry. A job gets its
// ring with its first entry (a job that never ran costs nothing), and a
// chunk when its entries reach it: memory follows the entries kept, in
// steps of 1.5 KB, and growing never copies what is kept.
type historyRing struct {
	mu     sync.Mutex
	meta   slotMeta // what the ring's compact entries share
	chunks [][]memEntry
	n      int // entries kept, at most the store's size
	next   int // the slot the next entry goes to
	seq    uint64
	// done is where the newest run addDone added is (entry.lastReport
	// reads it there instead of the run copying its Report to the entry
	// too): slot done-1; or kept, when done is -1 (its slot was reused);
	// 0 when there is none.
	done int
	kept *Report
}

// historyChunk is how many slots a ring takes at a time (16 × 96 B): a
// job that has run once holds one chunk, 1.5 KB.
const historyChunk = 16

// slot returns slot i, making its chunk on first use (the last chunk is cut
// to size).
func (r *historyRing) slot(i, size int) *memEntry {
	c := i / historyChunk
	if c == len(r.chunks) {
		if r.chunks == nil {
			r.chunks = make([][]memEntry, 0, (size+historyChunk-1)/historyChunk)
		}
		r.chunks = append(r.chunks, make([]memEntry, min(historyChunk, size-c*historyChunk)))
	}
	return &r.chunks[c][i%historyChunk]
}

// newMemoryHistory returns the embedded HistoryStore, the default without
// WithRedis: a ring of the latest perJob entries of each job (100 when
// perJob < 1, see WithHistorySize), in this process's memory. An entry
// takes 96 B, its Report included (history_slot.go). Append never fails; the oldest
// entry of a job goes when its ring is full. History copies the entries
// out, so callers may keep and change them.
func newMemoryHistory(perJob int) HistoryStore {
	if perJob < 1 {
		perJob = defaultHistorySize
	}
	return &memoryHistory{size: perJob}
}

// Append implements HistoryStore; it never fails. The oldest entry of the
// job goes when the ring is full.
func (m *memoryHistory) Append(_ context.Context, e HistoryEntry) error {
	m.add(&e)
	return nil
}

// add is Append by pointer (the scheduler appends on a run's stack, where
// every copy of an entry counts). It does not change *e: the entry's ID is
// made when it is read.
func (m *memoryHistory) add(e *HistoryEntry) {
	r := m.ring(e.Job)
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, _, slot := r.push(m.size)
	slot.set(&r.meta, e, seq)
}

// addDone adds the entry of a finished run without error of e at time
// *at: the entry add would keep for its EventFinished, built in its slot
// from rep. The ring is e's, found by name once (entry.ring).
func (m *memoryHistory) addDone(e *entry, rep *Report, at *time.Time) {
	r := e.ring.Load()
	if r == nil {
		r = m.ring(rep.Job)
		e.ring.Store(r)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	seq, i, slot := r.push(m.size)
	if !slot.setRun(&r.meta, seq, at, "", rep) {
		slot.setDoneWhole(&r.meta, seq, at, rep)
	}
	r.done = i + 1
}

// push makes room for the next entry of r, whose store keeps size: its
// sequence number, its index and its slot. A slot that holds the newest
// run addDone added is copied to r.kept first. r.mu is held.
func (r *historyRing) push(size int) (seq uint64, i int, slot *memEntry) {
	i = r.next
	slot = r.slot(i, size)
	if r.done == i+1 {
		r.keep(slot)
	}
	r.meta.release(slot)
	r.seq++
	r.next = (i + 1) % size
	r.n = min(r.n+1, size)
	return r.seq, i, slot
}

// keep copies the Report of the newest run addDone added, in slot, to
// r.kept, before slot is reused. Apart, and not inlined, so that the
// Report it builds is not in the frame of every run's push.
//
//go:noinline
func (r *historyRing) keep(slot *memEntry) {
	if r.kept == nil {
		r.kept = new(Report)
	}
	*r.kept, r.done = slot.doneReport(&r.meta), -1
}

// lastDone is a copy of the Report of the newest run addDone added, or
// nil.
func (r *historyRing) lastDone() *Report {
	r.mu.Lock()
	defer r.mu.Unlock()
	var rep Report
	switch {
	case r.done > 0:
		rep = r.chunks[(r.done-1)/historyChunk][(r.done-1)%historyChunk].doneReport(&r.meta)
	case r.done < 0:
		rep = *r.kept
	default:
		return nil
	}
	return &rep
}

// ring returns the ring of job, made on its first entry.
func (m *memoryHistory) ring(job string) *historyRing {
	if r, ok := m.jobs.Load(job); ok {
		return r.(*historyRing)
	}
	r, _ := m.jobs.LoadOrStore(job, &historyRing{meta: slotMeta{job: job}})
	return r.(*historyRing)
}

// History implements HistoryStore. It copies the entries out, so callers
// may keep and change them.
func (m *memoryHistory) History(_ context.Context, job string, limit int) ([]HistoryEntry, error) {
	v, ok := m.jobs.Load(job)
	if !ok {
		return []HistoryEntry{}, nil
	}
	r := v.(*historyRing)
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.n
	if limit > 0 { // HistoryStore asks for limit >= 1; less reads all, never panics
		n = min(limit, n)
	}
	out := make([]HistoryEntry, 0, n)
	for i := range n { // newest first: the slots before next, wrapping
		out = append(out, r.slot((r.next-1-i+m.size)%m.size, m.size).copyOut(&r.meta))
	}
	return out, nil
}
