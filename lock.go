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
// the job is AllowOverlap) and Acquire for a manual run. Implementations
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
// job runs and releases it when the run ends; job code reads its fencing
// token as Report.Token (ReportFrom(ctx, nil)).
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

// watchdog extends a lease every ttl/3 while a run goes. When an extension
// fails it calls the run's lockLost once and stops: a lost lock is never
// extended or released again. It is the one watchdog every Locker gets;
// the memory locker's leases are pinned to their run instead (pinner), and
// a run makes a watchdog only for a lease that needs one.
//
// It lives in the run and is timed by the process's one keeper timer
// (leaseKeeper), so a run shorter than ttl/3 costs a push and a removal on
// a heap: no timer, no goroutine, no allocation. An extension runs on a
// goroutine of its own, bounded by the call budget (at most ttl/3).
type watchdog struct {
	lease  Lease
	ttl    time.Duration
	budget time.Duration
	owner  *run

	// Guarded by keeper.mu.
	due      time.Time // of the next extension
	index    int       // in keeper.heap; -1 when not in it
	stopped  bool
	wasLost  bool
	inFlight sync.WaitGroup // an Extend that started before stop
}

// start arms w for lease, held by owner.
func (w *watchdog) start(owner *run, lease Lease, ttl, budget time.Duration) {
	w.lease, w.ttl, w.budget, w.owner = lease, ttl, min(budget, ttl/3), owner
	keeper.mu.Lock()
	defer keeper.mu.Unlock()
	w.stopped, w.wasLost = false, false
	w.due = time.Now().Add(ttl / 3)
	keeper.push(w)
}

// extend runs on its own goroutine when w is due (keeper.fire).
func (w *watchdog) extend() {
	defer w.inFlight.Done()
	ctx, cancel := context.WithTimeout(context.Background(), w.budget)
	err := w.lease.Extend(ctx, w.ttl)
	cancel()

	keeper.mu.Lock()
	if err != nil {
		w.wasLost = true
		keeper.mu.Unlock()
		w.owner.lockLost(err)
		return
	}
	if !w.stopped {
		w.due = time.Now().Add(w.ttl / 3)
		keeper.push(w)
	}
	keeper.mu.Unlock()
}

// stop ends the watchdog, waits for an extension in flight (and, if it
// failed, for lockLost), and reports whether the lease was lost.
func (w *watchdog) stop() (lost bool) {
	keeper.mu.Lock()
	w.stopped = true
	if w.index >= 0 {
		keeper.remove(w.index)
	}
	keeper.mu.Unlock()
	w.inFlight.Wait()
	keeper.mu.Lock()
	defer keeper.mu.Unlock()
	return w.wasLost
}

// keeper times the watchdogs of every run of the process.
var keeper leaseKeeper

// leaseKeeper is a heap of watchdogs by due time under one timer, armed at
// the earliest. A watchdog that leaves the heap does not disarm it: the
// timer then wakes once for nothing.
type leaseKeeper struct {
	mu    sync.Mutex
	heap  []*watchdog
	timer *time.Timer
	armed time.Time // when the timer fires; zero when it is not armed
}

// push adds w; k.mu is held.
func (k *leaseKeeper) push(w *watchdog) {
	w.index = len(k.heap)
	k.heap = append(k.heap, w)
	k.up(w.index)
	if k.armed.IsZero() || w.due.Before(k.armed) {
		k.arm(w.due)
	}
}

// remove takes the watchdog at i out of the heap; k.mu is held.
func (k *leaseKeeper) remove(i int) *watchdog {
	w, last := k.heap[i], len(k.heap)-1
	if i != last {
		k.swap(i, last)
	}
	k.heap[last] = nil
	k.heap = k.heap[:last]
	if i != last {
		k.down(i)
		k.up(i)
	}
	w.index = -1
	return w
}

func (k *leaseKeeper) arm(at time.Time) {
	k.armed = at
	if k.timer == nil {
		k.timer = time.AfterFunc(time.Until(at), k.fire)
		return
	}
	k.timer.Reset(time.Until(at))
}

// fire starts the extension of every watchdog due and arms the timer for
// the next.
func (k *leaseKeeper) fire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.armed = time.Time{}
	now := time.Now()
	for len(k.heap) > 0 && !k.heap[0].due.After(now) {
		w := k.remove(0)
		w.inFlight.Add(1)
		go w.extend()
	}
	if len(k.heap) > 0 {
		k.arm(k.heap[0].due)
	}
}

func (k *leaseKeeper) less(i, j int) bool { return k.heap[i].due.Before(k.heap[j].due) }

func (k *leaseKeeper) swap(i, j int) {
	k.heap[i], k.heap[j] = k.heap[j], k.heap[i]
	k.heap[i].index, k.heap[j].index = i, j
}

func (k *leaseKeeper) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !k.less(i, p) {
			return
		}
		k.swap(i, p)
		i = p
	}
}

func (k *leaseKeeper) down(i int) {
	for n := len(k.heap); ; {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && k.less(c+1, c) {
			c++
		}
		if !k.less(c, i) {
			return
		}
		k.swap(i, c)
		i = c
	}
}

// memoryLocker is the embedded Locker (NewMemoryLocker): claim marks and locks in this
// process's memory, one entry per job, so each call costs O(1) whatever
// the number of jobs: one lookup in a sync.Map and, for a lock, one small
// allocation (the Lease; a scheduled run's claim makes none: the run is
// its lease, see claimRun). A lock held by a run does not expire while the
// run goes (it is pinned to the run: no extension every ttl/3, whose cost
// would buy nothing in one process). Each job has its own mutex: the claims of the
// 1,000 jobs that share a tick never wait for each other. It suits a
// single instance and tests; use NewRedisLocker when several instances run
// the same jobs.
type memoryLocker struct {
	jobs sync.Map // job name → *memJob, made on the job's first call
	now  func() time.Time
}

// memJob is the state of one job: its claim mark (the latest tick claimed
// and by whom), its run lock, and the last fencing token handed out. mu
// guards the rest.
type memJob struct {
	mu      sync.Mutex
	marked  bool
	tick    time.Time
	holder  string
	locked  bool
	token   int64 // of the lock when locked; the last one handed out
	expires time.Time
	// pin is the run holding the lock, which then does not expire: the
	// run's process is this one, alive while the run goes.
	pin *run
}

// NewMemoryLocker returns the embedded Locker, the default of New: claim
// marks and run locks in this process's memory, so it coordinates this
// process only (use NewRedisLocker when several instances run the same
// jobs). Each call costs O(1) whatever the number of jobs and never fails.
func NewMemoryLocker() Locker {
	return &memoryLocker{now: time.Now}
}

// job returns job's state, made on first use.
func (m *memoryLocker) job(job string) *memJob {
	if j, ok := m.jobs.Load(job); ok {
		return j.(*memJob)
	}
	j, _ := m.jobs.LoadOrStore(job, &memJob{})
	return j.(*memJob)
}

// mark moves j's claim mark to tick for instance, unless it is at or past
// it already: the previous mark (zero on the first claim) and whether the
// claim won. j.mu is held.
func (j *memJob) mark(tick time.Time, instance string) (prev time.Time, won bool) {
	if j.marked && !tick.After(j.tick) {
		return time.Time{}, false
	}
	if j.marked {
		prev = j.tick
	}
	j.marked, j.tick, j.holder = true, tick, instance
	return prev, true
}

// busy reports whether j's lock is held: by a run (pinned: no expiry) or
// by a lease that has not expired. j.mu is held.
func (m *memoryLocker) busy(j *memJob) bool {
	return j.locked && (j.pin != nil || m.now().Before(j.expires))
}

// release ends r's pin of j's lock, if r holds it, and releases the lock
// when its token is still token, unless forget took it away: it returns
// the channel that closes once the run has been told of that, or nil.
func (j *memJob) release(r *run, token int64) (lost chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.pin == r {
		j.pin = nil
	}
	if r.pinLost == nil && j.locked && j.token == token { // pinLost is set under j.mu by forget
		j.locked = false
	}
	return r.pinLost
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
func (m *memoryLocker) Claim(_ context.Context, job string, tick time.Time, lockTTL time.Duration, instance string) (Claim, error) {
	if err := checkLockTTL(job, lockTTL); err != nil {
		return Claim{}, err
	}
	j := m.job(job)
	j.mu.Lock()
	defer j.mu.Unlock()
	prev, won := j.mark(tick, instance)
	if !won {
		return Claim{Holder: j.holder, HolderTick: j.tick}, nil
	}
	c := Claim{Won: true, Holder: instance, Prev: prev}
	if lockTTL > 0 {
		c.Lease, c.LockErr = m.acquireLocked(job, j, lockTTL)
	}
	return c, nil
}

// claimRun is Claim for the scheduled run r, in small frames (see
// run.claimMemory): when won, the previous claim mark, with the lock (for
// lockTTL > 0) pinned to r at once: r is its lease (r.memJob, r.token),
// and no Lease is made. When lost, or when the lock is not taken, r's
// skip. A lost claim settles r's tick; a won one leaves that to the
// caller, after it looked at the gap.
func (m *memoryLocker) claimRun(r *run, lockTTL time.Duration) (prev time.Time, err error) {
	if err := checkLockTTL(r.job, lockTTL); err != nil {
		return time.Time{}, claimSkip(r, nil, err)
	}
	j := r.e.memJob.Load()
	if j == nil { // the job's first claim on this Scheduler's Locker
		j = m.job(r.job)
		r.e.memJob.Store(j)
	}
	j.mu.Lock()
	prev, won := j.mark(r.tick, r.s.cfg.instance)
	if !won {
		err := lostSkip(r, j) // the mark that won, as it is now
		j.mu.Unlock()
		r.e.ticks.settled(r.tick) // the mark is at or past it
		return time.Time{}, err
	}
	var lockErr error
	if lockTTL > 0 && !m.lockFor(r, j) {
		lockErr = lockedErr(r.job, j) // the holder, as it is now
	}
	j.mu.Unlock()
	if lockErr != nil {
		return prev, notLocked(r, prev, lockErr)
	}
	return prev, nil
}

// lockFor takes j's lock for the run r and pins it to r, if it is free;
// j.mu is held. While pinned the lock does not expire (see pinner), so
// its TTL is not needed.
func (m *memoryLocker) lockFor(r *run, j *memJob) bool {
	if m.busy(j) {
		return false
	}
	j.token++
	j.locked, j.expires, j.pin = true, time.Time{}, r // a pinned lock has no expiry: no clock read
	r.memJob = j
	r.token.Store(j.token) // Report.Token: what job code fences its writes with
	return true
}

// unpinMemory ends the pin of r's memory lock (claimRun) and releases the
// lock, unless it was taken away (memoryLocker.forget); then it waits
// until the run has been told.
func (r *run) unpinMemory() {
	if lost := r.memJob.release(r, r.token.Load()); lost != nil {
		<-lost
	}
}

// lostSkip is the skip of r's claim lost to the mark of j; j.mu is held.
//
//go:noinline
func lostSkip(r *run, j *memJob) error {
	return claimSkip(r, &Claim{Holder: j.holder, HolderTick: j.tick}, nil)
}

// notLocked is the skip of r's claim, won, whose lock was held (lockErr):
// the gap since prev is reported and the tick settled, as for any won
// claim.
//
//go:noinline
func notLocked(r *run, prev time.Time, lockErr error) error {
	r.won(prev)
	return lockSkip(r, lockErr)
}

// lockedErr is the ErrLocked of j's lock, held; j.mu is held.
//
//go:noinline
func lockedErr(job string, j *memJob) error {
	if j.pin != nil { // no expiry while its run goes: its own has passed, maybe long ago
		return fmt.Errorf("%w: job %q: held by a run going now (token %d)", ErrLocked, job, j.token)
	}
	return fmt.Errorf("%w: job %q: held until %s", ErrLocked, job, j.expires.Format(time.RFC3339Nano))
}

// Acquire implements Locker.
func (m *memoryLocker) Acquire(_ context.Context, job string, ttl time.Duration) (Lease, error) {
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: job %q: lock TTL %s: must be at least 1ms", ErrInvalidOption, job, ttl)
	}
	j := m.job(job)
	j.mu.Lock()
	defer j.mu.Unlock()
	return m.acquireLocked(job, j, ttl)
}

// acquireLocked takes j's lock; j.mu is held.
func (m *memoryLocker) acquireLocked(job string, j *memJob, ttl time.Duration) (Lease, error) {
	if m.busy(j) {
		return nil, lockedErr(job, j)
	}
	j.token++
	j.locked, j.expires = true, m.now().Add(ttl)
	return &memLease{m: m, j: j, job: job, token: j.token}, nil
}

type memLease struct {
	m     *memoryLocker
	j     *memJob
	job   string
	token int64
}

func (l *memLease) Token() int64 { return l.token }

// held reports whether l still holds its lock; l.j.mu is held.
func (l *memLease) held() bool { return l.j.locked && l.j.token == l.token }

// Extend fails once the lock expired or passed to another lease (another
// token), even if that one holds it now: a lease extends only itself.
func (l *memLease) Extend(_ context.Context, ttl time.Duration) error {
	l.j.mu.Lock()
	defer l.j.mu.Unlock()
	now := l.m.now()
	if !l.held() || now.After(l.j.expires) {
		return fmt.Errorf("%w: job %q: lease %d is no longer held", ErrLockLost, l.job, l.token)
	}
	l.j.expires = now.Add(ttl)
	return nil
}

func (l *memLease) Release(context.Context) error {
	l.j.mu.Lock()
	defer l.j.mu.Unlock()
	if l.held() {
		l.j.locked, l.j.pin = false, nil
	}
	return nil
}

// pinner is a Lease whose Locker holds the lock for as long as its run
// goes, so that no watchdog need extend it: the memory locker's, whose
// locks live and die with this process. Its lock can still be taken away
// (memoryLocker.forget, as a deleted key would be): the Locker then tells
// the run itself, at once, with run.pinLost.
type pinner interface {
	Lease
	// pin holds the lock for r until unpin; false when it is not held any
	// more.
	pin(r *run) bool
	// unpin ends the pin and releases the lock, in one step; it returns
	// the channel that closes once the run has been told of a loss, or nil
	// when the lock was not lost.
	unpin(r *run) (lost chan struct{})
}

// pin implements pinner: while a run holds the lock it does not expire,
// and a forget reaches the run at once (no extension every ttl/3).
func (l *memLease) pin(r *run) bool {
	l.j.mu.Lock()
	defer l.j.mu.Unlock()
	if !l.held() {
		return false
	}
	l.j.pin = r
	return true
}

func (l *memLease) unpin(r *run) chan struct{} { return l.j.release(r, l.token) }

// forget drops job's lock whoever holds it, as an expiry or an operator's
// DEL would. Tests use it to take a lock away from a running job.
func (m *memoryLocker) forget(job string) {
	if j, ok := m.jobs.Load(job); ok {
		j := j.(*memJob)
		j.mu.Lock()
		r, token := j.pin, j.token
		j.locked, j.pin = false, nil
		var told chan struct{}
		if r != nil {
			told = make(chan struct{})
			r.pinLost = told // under j.mu: the run's unpin, under it too, then waits
		}
		j.mu.Unlock()
		if r != nil {
			r.lockLost(fmt.Errorf("%w: job %q: lease %d is no longer held", ErrLockLost, job, token))
			close(told)
		}
	}
}
