package cronguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
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

// memoryCheckpoints is the embedded CheckpointStore: cursors live as long
// as the process.
type memoryCheckpoints struct {
	mu      sync.Mutex
	cursors map[string]string
}

// newMemoryCheckpoints returns an empty in-memory CheckpointStore, the
// default without WithRedis: cursors live as long as the process.
func newMemoryCheckpoints() CheckpointStore {
	return &memoryCheckpoints{cursors: map[string]string{}}
}

// Load implements CheckpointStore.
func (m *memoryCheckpoints) Load(_ context.Context, job string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cursors[job], nil
}

// Save implements CheckpointStore.
func (m *memoryCheckpoints) Save(_ context.Context, job, after string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cursors[job] = after
	return nil
}

// redisCheckpoints keeps Batch cursors in one Redis hash (NewRedisCheckpoints).
type redisCheckpoints struct {
	rdb    redis.UniversalClient
	key    string
	budget time.Duration
}

// NewRedisCheckpoints returns a CheckpointStore on rdb that keeps Batch
// cursors in one Redis hash, <prefix>checkpoint (field = job, value =
// cursor), so a run on any instance resumes where the last run on any
// other stopped. WithRedis uses it. It takes WithKeyPrefix and
// WithCallBudget; a nil client or option, or any other option, is an error
// wrapping ErrInvalidOption that names it. Each call keeps its caller's deadline, or is
// bounded by the budget when its context has none.
func NewRedisCheckpoints(rdb redis.UniversalClient, opts ...Option) (CheckpointStore, error) {
	cfg, err := backendConfig(forCheckpoints, rdb, opts)
	if err != nil {
		return nil, err
	}
	return &redisCheckpoints{rdb: rdb, key: cfg.prefix + "checkpoint", budget: cfg.budget}, nil
}

// Load implements CheckpointStore. It keeps the caller's deadline, or is
// bounded by the budget when ctx has none.
func (r *redisCheckpoints) Load(ctx context.Context, job string) (string, error) {
	ctx, cancel := bounded(ctx, r.budget)
	defer cancel()
	after, err := r.rdb.HGet(ctx, r.key, job).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return after, err
}

// Save implements CheckpointStore, bounded as Load.
func (r *redisCheckpoints) Save(ctx context.Context, job, after string) error {
	ctx, cancel := bounded(ctx, r.budget)
	defer cancel()
	return r.rdb.HSet(ctx, r.key, job, after).Err()
}

// loadCheckpoint returns the saved cursor of r's job, within the call
// budget; "" for a run outside a Scheduler.
func (r *run) loadCheckpoint(ctx context.Context) (string, error) {
	if r.s == nil {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.s.cfg.budget)
	defer cancel()
	after, err := r.s.cfg.checkpoints.Load(ctx, r.job)
	if err != nil {
		return "", fmt.Errorf("cronguard: job %q: load checkpoint: %w", r.job, err)
	}
	return after, nil
}

// saveCheckpoint records after as the cursor of r's job. It also runs when
// the run was cut short (the handled prefix is saved, so the next run does
// not repeat it), so it has its own context, bounded by the call budget. A
// run that lost its lock saves nothing: another instance may own the
// cursor now, and the next run repeats this one's items rather than skip
// any. A run outside a Scheduler saves nothing.
func (r *run) saveCheckpoint(ctx context.Context, after string) error {
	if r.s == nil || errors.Is(context.Cause(ctx), ErrLockLost) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.s.cfg.budget)
	defer cancel()
	if err := r.s.cfg.checkpoints.Save(ctx, r.job, after); err != nil {
		return fmt.Errorf("cronguard: job %q: save checkpoint %q: %w", r.job, clip(after), err)
	}
	return nil
}
