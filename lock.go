package cronguard

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Locker is the coordination store shared by every instance of a service:
// it hands out tick claims and run locks. NewMemoryLocker serves one process;
// NewRedisLocker serves many.
type Locker interface {
	// Claim records that instance runs job's scheduled tick. It returns
	// ok=false and the instance that holds the claim when another run
	// claimed the tick first. A claim is never released; it expires after
	// ttl, so a late or clock-skewed instance finds it taken.
	Claim(ctx context.Context, job string, tick time.Time, ttl time.Duration, instance string) (ok bool, holder string, err error)

	// Acquire takes job's run lock for ttl. When the lock is held it returns
	// an error wrapping ErrLocked at once, without waiting.
	Acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error)
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

// MemoryLocker is the embedded Locker: claims and locks in this process's
// memory. It suits a single instance and tests; use NewRedisLocker when
// several instances run the same jobs.
type MemoryLocker struct {
	mu     sync.Mutex
	claims map[claimID]claim
	locks  map[string]*memLock
	tokens map[string]int64
	now    func() time.Time
}

type claimID struct {
	job  string
	tick int64
}

type claim struct {
	holder  string
	expires time.Time
}

type memLock struct {
	token   int64
	expires time.Time
}

// NewMemoryLocker returns an empty in-memory Locker.
func NewMemoryLocker() *MemoryLocker {
	return &MemoryLocker{
		claims: map[claimID]claim{},
		locks:  map[string]*memLock{},
		tokens: map[string]int64{},
		now:    time.Now,
	}
}

// Claim implements Locker.
func (m *MemoryLocker) Claim(_ context.Context, job string, tick time.Time, ttl time.Duration, instance string) (bool, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for id, c := range m.claims { // few live claims: one per job and recent tick
		if now.After(c.expires) {
			delete(m.claims, id)
		}
	}
	id := claimID{job, tick.UnixNano()}
	if c, ok := m.claims[id]; ok {
		return false, c.holder, nil
	}
	m.claims[id] = claim{holder: instance, expires: now.Add(ttl)}
	return true, instance, nil
}

// Acquire implements Locker.
func (m *MemoryLocker) Acquire(_ context.Context, job string, ttl time.Duration) (Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
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
