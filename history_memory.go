package cronguard

import (
	"cmp"
	"context"
	"strconv"
	"sync"
)

// memoryHistory is the embedded HistoryStore: a ring of the latest entries
// per job, in this process's memory. It is the default without WithRedis.
type memoryHistory struct {
	size int

	mu   sync.RWMutex
	jobs map[string]*historyRing
}

// historyRing holds the latest entries of one job; buf[(next-1) mod len] is
// the newest.
type historyRing struct {
	buf  []HistoryEntry
	next int
	seq  uint64
}

// NewMemoryHistory returns the embedded HistoryStore, the default without
// WithRedis: a ring of the latest perJob entries of each job (1,000 when
// perJob < 1), in this process's memory. Append never fails; the oldest
// entry of a job goes when its ring is full. History copies the entries
// out, so callers may keep and change them.
func NewMemoryHistory(perJob int) HistoryStore {
	if perJob < 1 {
		perJob = defaultHistorySize
	}
	return &memoryHistory{size: perJob, jobs: map[string]*historyRing{}}
}

// Append implements HistoryStore; it never fails. The oldest entry of the
// job goes when the ring is full.
func (m *memoryHistory) Append(_ context.Context, e HistoryEntry) error {
	m.add(&e)
	return nil
}

// add is Append by pointer (the scheduler appends on a run's stack, where
// every copy of an entry counts); it sets e.ID.
func (m *memoryHistory) add(e *HistoryEntry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.jobs[e.Job]
	if r == nil {
		r = &historyRing{buf: make([]HistoryEntry, 0, min(m.size, 64))}
		m.jobs[e.Job] = r
	}
	r.seq++
	e.ID = strconv.FormatUint(r.seq, 10)
	if len(r.buf) < m.size { // growing: append, as the ring has not wrapped
		r.buf = append(r.buf, *e)
		r.next = len(r.buf) % m.size
		return
	}
	r.buf[r.next] = *e
	r.next = (r.next + 1) % m.size
}

// History implements HistoryStore. It copies the entries out, so callers
// may keep and change them.
func (m *memoryHistory) History(_ context.Context, job string, limit int) ([]HistoryEntry, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	r := m.jobs[job]
	if r == nil {
		return []HistoryEntry{}, nil
	}
	n := min(cmp.Or(limit, len(r.buf)), len(r.buf))
	out := make([]HistoryEntry, 0, n)
	for i := range n {
		e := r.buf[(r.next-1-i+2*len(r.buf))%len(r.buf)]
		if e.Report != nil {
			rep := *e.Report
			e.Report = &rep
		}
		if e.Enabled != nil {
			on := *e.Enabled
			e.Enabled = &on
		}
		out = append(out, e)
	}
	return out, nil
}
