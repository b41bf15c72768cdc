package main

import (
	"context"
	"errors"

	"github.com/go-co-op/gocron/v2"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// redsyncLocker is gocron's distributed Locker built on redsync exactly as
// github.com/go-co-op/gocron-redis-lock/v2 builds it (one redsync.Mutex per
// run, keyed by the job name, redsync's default options), written out here
// because that module is not needed for anything else: a run costs a SET NX
// and an unlock script, two round trips.
type redsyncLocker struct {
	rs *redsync.Redsync
}

var errNotUnlocked = errors.New("gocron: failed to release lock")

func newRedsyncLocker(c redis.UniversalClient) gocron.Locker {
	return &redsyncLocker{rs: redsync.New(goredis.NewPool(c))}
}

// Lock implements gocron.Locker.
func (l *redsyncLocker) Lock(ctx context.Context, key string) (gocron.Lock, error) {
	mu := l.rs.NewMutex(key)
	if err := mu.LockContext(ctx); err != nil {
		return nil, err
	}
	return redsyncLock{mu}, nil
}

type redsyncLock struct{ mu *redsync.Mutex }

// Unlock implements gocron.Lock.
func (l redsyncLock) Unlock(ctx context.Context) error {
	ok, err := l.mu.UnlockContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return errNotUnlocked
	}
	return nil
}
