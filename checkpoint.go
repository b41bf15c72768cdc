package cronguard

import (
	"context"
	"sync"
)

// CheckpointStore keeps a Batch's keyset cursor between runs
// (Batch.Checkpoint), so a run that stopped at MaxBatches, or a crash,
// resumes after the last item handled instead of starting over.
type CheckpointStore interface {
	// Load returns the saved cursor of job, or "" when there is none.
	Load(ctx context.Context, job string) (string, error)
	// Save records the cursor of job.
	Save(ctx context.Context, job, after string) error
}

// MemoryCheckpoints is the embedded CheckpointStore: cursors live as long
// as the process.
type MemoryCheckpoints struct {
	mu      sync.Mutex
	cursors map[string]string
}

// NewMemoryCheckpoints returns an empty in-memory CheckpointStore.
func NewMemoryCheckpoints() *MemoryCheckpoints {
	return &MemoryCheckpoints{cursors: map[string]string{}}
}

// Load implements CheckpointStore.
func (m *MemoryCheckpoints) Load(_ context.Context, job string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cursors[job], nil
}

// Save implements CheckpointStore.
func (m *MemoryCheckpoints) Save(_ context.Context, job, after string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cursors[job] = after
	return nil
}
