package cronguard

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Locker is the coordination store shared by every instance of a service:
// it keeps each job's tick claim mark and hands out run locks.
// NewMemoryLocker serves one process; NewRedisLocker serves many.
//
// The Scheduler calls Claim for a scheduled tick (with the run lock, unless
// the job is OverlapAllow) and Acquire for a manual run. Implementations
// must be safe for concurrent use.
type Locker interface {
	// Claim moves job's claim mark to tick if tick is newer than the mark,
	// and when lockTTL > 0 also takes the job's run lock for lockTTL in the
	// same step. A tick at or behind the mark is lost (Won false), however
	// late the caller: the mark names the instance and the tick that hold
	// it. The mark never expires; only a newer tick moves it.
	//
	// When the tick is won but the run lock is held (a run of an earlier
	// tick still goes), the mark moves all the same, one decision per
	// tick, and Claim.LockErr wraps ErrLocked. An error means the store
	// could not decide; the mark may or may not have moved.
	Claim(ctx context.Context, job string, tick time.Time, lockTTL time.Duration, instance string) (Claim, error)

	// Acquire takes job's run lock for ttl, without touching the claim
	// mark (manual runs). When the lock is held it returns an error
	// wrapping ErrLocked at once, without waiting.
	Acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error)
}

// Claim is what Locker.Claim decided.
type Claim struct {
	// Won: the mark moved to the tick asked for; this caller runs it.
	Won bool
	// Holder is the instance that holds the mark: the caller when Won,
	// else the one that claimed HolderTick. A value read from a store is
	// cut to 200 bytes.
	Holder string
	// HolderTick is the mark's tick when the claim was lost: the asked
	// tick itself or a newer one.
	HolderTick time.Time
	// Prev is the mark before a won claim; zero for the job's first claim
	// (or after the store lost the mark). The ticks of the spec strictly
	// between Prev and the tick were missed.
	Prev time.Time
	// Lease is the run lock taken with a won claim, when lockTTL > 0 and
	// the lock was free; nil otherwise.
	Lease Lease
	// LockErr says why a won claim holds no Lease although lockTTL > 0:
	// it wraps ErrLocked when another run holds the lock, else it is the
	// store's error.
	LockErr error
}

// Lease is a held run lock. The Scheduler extends it every ttl/3 while the
// job runs and releases it when the run ends; job code gets it through
// LeaseFrom to read the fencing token.
type Lease interface {
	// Token is a fencing token: it grows with every acquisition of the job's
	// lock, so a store that records the highest token it has seen can reject
	// a write from a holder whose lock has since passed to another.
	Token() int64
	// Extend pushes the expiry to ttl from now. It returns an error wrapping
	// ErrLockLost when the lock is no longer held by this lease.
	Extend(ctx context.Context, ttl time.Duration) error
	// Release gives the lock up if this lease still holds it.
	Release(ctx context.Context) error
}

type leaseKey struct{}

// LeaseFrom returns the run lock held by the run of ctx, or nil outside a
// locked run (for example OverlapAllow).
func LeaseFrom(ctx context.Context) Lease {
	l, _ := ctx.Value(leaseKey{}).(Lease)
	return l
}

// watchdog extends a lease every ttl/3 while a run goes. When an extension
// fails it calls lost once and stops: a lost lock is never extended or
// released again. It is the one watchdog every Locker gets. It runs on a
// timer, not a goroutine of its own, so a short run costs no goroutine.
type watchdog struct {
	lease  Lease
	ttl    time.Duration
	budget time.Duration
	lost   func(error)

	mu       sync.Mutex
	timer    *time.Timer
	stopped  bool
	wasLost  bool
	inFlight sync.WaitGroup // an Extend that started before stop
}

func startWatchdog(lease Lease, ttl, budget time.Duration, lost func(error)) *watchdog {
	w := &watchdog{lease: lease, ttl: ttl, budget: min(budget, ttl/3), lost: lost}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(ttl/3, w.extend)
	return w
}

func (w *watchdog) extend() {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return
	}
	w.inFlight.Add(1)
	w.mu.Unlock()
	defer w.inFlight.Done()

	ctx, cancel := context.WithTimeout(context.Background(), w.budget)
	err := w.lease.Extend(ctx, w.ttl)
	cancel()

	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.wasLost = true
		w.lost(err)
		return
	}
	if !w.stopped {
		w.timer.Reset(w.ttl / 3)
	}
}

// stop ends the watchdog, waits for an extension in flight, and reports
// whether the lease was lost.
func (w *watchdog) stop() (lost bool) {
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
	w.inFlight.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wasLost
}

// MemoryLocker is the embedded Locker: claim marks and locks in this
// process's memory, one entry per job, so each call costs O(1) whatever
// the number of jobs. It suits a single instance and tests; use
// NewRedisLocker when several instances run the same jobs.
type MemoryLocker struct {
	mu     sync.Mutex
	marks  map[string]memMark
	locks  map[string]*memLock
	tokens map[string]int64
	now    func() time.Time
}

// memMark is a job's claim mark: the latest tick claimed and by whom.
type memMark struct {
	tick   time.Time
	holder string
}

type memLock struct {
	token   int64
	expires time.Time
}

// NewMemoryLocker returns an empty in-memory Locker.
func NewMemoryLocker() *MemoryLocker {
	return &MemoryLocker{
		marks:  map[string]memMark{},
		locks:  map[string]*memLock{},
		tokens: map[string]int64{},
		now:    time.Now,
	}
}

// checkLockTTL refuses a lock TTL that no store can keep: negative, or
// below Redis's millisecond. Zero means no lock.
func checkLockTTL(job string, ttl time.Duration) error {
	if ttl < 0 || ttl > 0 && ttl < time.Millisecond {
		return fmt.Errorf("%w: job %q: lock TTL %s: must be 0 (no lock) or at least 1ms", ErrInvalidOption, job, ttl)
	}
	return nil
}

// Claim implements Locker.
func (m *MemoryLocker) Claim(_ context.Context, job string, tick time.Time, lockTTL time.Duration, instance string) (Claim, error) {
	if err := checkLockTTL(job, lockTTL); err != nil {
		return Claim{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	mark, had := m.marks[job]
	if had && !tick.After(mark.tick) {
		return Claim{Holder: mark.holder, HolderTick: mark.tick}, nil
	}
	m.marks[job] = memMark{tick: tick, holder: instance}
	c := Claim{Won: true, Holder: instance}
	if had {
		c.Prev = mark.tick
	}
	if lockTTL > 0 {
		c.Lease, c.LockErr = m.acquireLocked(job, lockTTL)
	}
	return c, nil
}

// Acquire implements Locker.
func (m *MemoryLocker) Acquire(_ context.Context, job string, ttl time.Duration) (Lease, error) {
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: job %q: lock TTL %s: must be at least 1ms", ErrInvalidOption, job, ttl)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acquireLocked(job, ttl)
}

// acquireLocked takes job's lock; m.mu is held.
func (m *MemoryLocker) acquireLocked(job string, ttl time.Duration) (Lease, error) {
	now := m.now()
	if l, ok := m.locks[job]; ok && now.Before(l.expires) {
		return nil, fmt.Errorf("%w: job %q: held until %s", ErrLocked, job, l.expires.Format(time.RFC3339Nano))
	}
	m.tokens[job]++
	l := &memLock{token: m.tokens[job], expires: now.Add(ttl)}
	m.locks[job] = l
	return &memLease{m: m, job: job, token: l.token}, nil
}

type memLease struct {
	m     *MemoryLocker
	job   string
	token int64
}

func (l *memLease) Token() int64 { return l.token }

// Extend fails once the lock expired or passed to another lease (another
// token), even if that one holds it now: a lease extends only itself.
func (l *memLease) Extend(_ context.Context, ttl time.Duration) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	cur, ok := l.m.locks[l.job]
	if !ok || cur.token != l.token || l.m.now().After(cur.expires) {
		return fmt.Errorf("%w: job %q: lease %d is no longer held", ErrLockLost, l.job, l.token)
	}
	cur.expires = l.m.now().Add(ttl)
	return nil
}

func (l *memLease) Release(context.Context) error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	if cur, ok := l.m.locks[l.job]; ok && cur.token == l.token {
		delete(l.m.locks, l.job)
	}
	return nil
}

// forget drops job's lock whoever holds it, as an expiry or an operator's
// DEL would. Tests use it to take a lock away from a running job.
func (m *MemoryLocker) forget(job string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.locks, job)
}
