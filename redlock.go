package cronguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// quorum is the Redis locker over several independent masters
// (NewRedlock): a claim or a lock holds once a majority of the servers
// holds it.
//
// The claim mark is won on a majority, asking every server one after the
// other, always in the order given, and stopping at the first server whose
// mark is at or past the tick: so claimants arriving at once cannot split
// the servers between them (the first server that answers them both
// decides), and a loser costs one round trip. A winner asks every server,
// not just a majority: a server past the majority that already holds the
// tick (the servers before it lost their data, or missed the winner's
// claim while they were slow) makes the claim lost, so one server losing
// its data cannot let a late instance run a tick again. A server that does
// not answer within its share of the budget (budget/N) is skipped. A claim
// never returns won without a majority and with a server that names
// another claimant. The bound: a tick can run twice only when the servers
// that hold its mark are all down or have lost it at once, while the
// others never received it. A tick can be missed when the servers are
// partitioned so that two claimants see different first servers, or a
// winner dies halfway.
//
// The run lock is Redlock, with redsync's rules (validity: the TTL minus
// the time taken minus 1% and 2ms of drift) and redsync's extension and
// release scripts: the lock script, which also issues a fencing token, goes
// to every server in parallel, each bounded by a third of the TTL; the
// token is the largest that a granting server issued. Taking, extending
// and releasing return as soon as a majority has answered yes (or a
// majority no, for taking): a server that is down or frozen does not delay
// them. The calls still on their way to the other servers go on, within
// the budget, so that the lock is set and removed on every server that
// answers; drain (Scheduler.Stop) waits for them, so none outlives Stop.
//
// Round trips per server: a won claim with its lock costs the claim on
// every server (one each, in turn), then the lock and the release
// on every server (one each, in parallel), plus one per extension; a lost
// claim costs one round trip to the first server.
type quorum struct {
	*redisStore
	calls inflight
}

func (q *quorum) drain() { q.calls.wait() }

func (q *quorum) claim(ctx context.Context, job string, tick time.Time, lockTTL time.Duration, instance string) (Claim, error) {
	value := q.newValue()
	share := q.budget / time.Duration(len(q.clients))
	won := 0
	var prev time.Time
	var errs []error
	for i := range q.clients {
		sctx, cancel := within(ctx, share)
		r, err := q.claimOn(sctx, i, job, tick, 0, instance, value)
		cancel()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", q.names[i], err))
			continue
		case r.state == "taken":
			return Claim{Holder: r.holder, HolderTick: r.holderTick}, nil
		}
		if r.prev.After(prev) {
			prev = r.prev // the servers' marks may differ: the newest misses least
		}
		won++ // and on: a later server at or past the tick loses it all the same
	}
	if won < q.quorum {
		return Claim{}, fmt.Errorf("claim %s: no majority: %d of %d servers claimed, %d needed: %w",
			q.claimKey(job), won, len(q.clients), q.quorum, errors.Join(errs...))
	}
	c := Claim{Won: true, Holder: instance, Prev: prev}
	if lockTTL > 0 {
		c.Lease, c.LockErr = q.lock(ctx, job, lockTTL, value)
	}
	return c, nil
}

func (q *quorum) acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error) {
	return q.lock(ctx, job, ttl, q.newValue())
}

// nodeAnswer is one server's answer in a fan-out; done is false for a
// server that had not answered when the fan-out returned.
type nodeAnswer struct {
	done  bool
	reply scriptReply
	val   any
	err   error
}

// fanOut calls call on every server in parallel, each call bounded by
// deadline, and returns the answers once enough says so or every server
// answered. The calls still going then go on until they end or their
// deadline passes, counted in q.calls.
func (q *quorum) fanOut(ctx context.Context, deadline time.Time, call func(ctx context.Context, i int) nodeAnswer, enough func([]nodeAnswer) bool) []nodeAnswer {
	type indexed struct {
		i int
		a nodeAnswer
	}
	n := len(q.clients)
	ch := make(chan indexed, n)
	base := context.WithoutCancel(ctx) // a late call still sets or removes the lock
	q.calls.add(n)
	for i := range n {
		go func() {
			defer q.calls.done()
			cctx, cancel := context.WithDeadline(base, deadline)
			defer cancel()
			a := call(cctx, i)
			a.done = true
			ch <- indexed{i, a}
		}()
	}
	out := make([]nodeAnswer, n)
	for range n {
		r := <-ch
		out[r.i] = r.a
		if enough(out) {
			break
		}
	}
	return out
}

// count returns how many answers satisfy ok.
func count(as []nodeAnswer, ok func(nodeAnswer) bool) int {
	n := 0
	for _, a := range as {
		if a.done && ok(a) {
			n++
		}
	}
	return n
}

func granted(a nodeAnswer) bool { return a.err == nil && a.reply.state == "won" }
func taken(a nodeAnswer) bool   { return a.err == nil && a.reply.state == "locked" }

// deadlineFor bounds a call taking a lock of ttl: a third of the TTL, and
// the caller's deadline.
func deadlineFor(ctx context.Context, ttl time.Duration) time.Time {
	d := time.Now().Add(ttl / 3)
	if dl, ok := ctx.Deadline(); ok && dl.Before(d) {
		d = dl
	}
	return d
}

// lock takes job's lock on a majority, with value.
func (q *quorum) lock(ctx context.Context, job string, ttl time.Duration, value string) (Lease, error) {
	start := time.Now()
	key := q.lockKey(job)
	as := q.fanOut(ctx, deadlineFor(ctx, ttl), func(ctx context.Context, i int) nodeAnswer {
		r, err := q.acquireOn(ctx, i, job, ttl, value)
		return nodeAnswer{reply: r, err: err}
	}, func(as []nodeAnswer) bool {
		return count(as, granted) >= q.quorum || count(as, taken) >= q.quorum
	})
	if count(as, granted) >= q.quorum && validFor(ttl, start) > 0 {
		var token int64
		for _, a := range as {
			if granted(a) {
				token = max(token, a.reply.token)
			}
		}
		return q.newLease(q, job, key, value, token, ttl), nil
	}
	q.undo(ctx, job, value, as)
	return nil, q.lockError(job, key, as, start, ttl)
}

// undo removes a failed attempt's lock from the servers that granted it or
// did not answer, without waiting for them (within a quarter of the
// budget, counted in q.calls), and remembers the value as abandoned when a
// server may still set it.
func (q *quorum) undo(ctx context.Context, job, value string, as []nodeAnswer) {
	lost := false
	for _, a := range as {
		if !a.done || a.err != nil && replyLost(a.err) {
			lost = true
		}
	}
	if lost {
		q.abandoned.add(job, value)
	}
	q.fanOut(ctx, time.Now().Add(q.budget/4), func(ctx context.Context, i int) nodeAnswer {
		if a := as[i]; a.done && !granted(a) && (a.err == nil || !replyLost(a.err)) {
			return nodeAnswer{} // this attempt's value was never set there
		}
		_, err := q.eval(ctx, i, deleteScript, q.lockKey(job), value)
		return nodeAnswer{err: err}
	}, func([]nodeAnswer) bool { return true })
}

// lockError explains a failed lock from what each server answered.
func (q *quorum) lockError(job, key string, as []nodeAnswer, start time.Time, ttl time.Duration) error {
	var errs []error
	for i, a := range as {
		switch {
		case !a.done:
			errs = append(errs, fmt.Errorf("%s: no answer", q.names[i]))
		case a.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", q.names[i], a.err))
		}
	}
	for _, a := range as {
		if taken(a) && (count(as, taken) >= q.quorum || len(errs) == 0) {
			return lockedError(job, key, a.reply.holder, a.reply.left)
		}
	}
	if g := count(as, granted); g >= q.quorum {
		return fmt.Errorf("lock %s: granted after %s, too late to be valid for its TTL %s", key, time.Since(start), ttl)
	}
	return fmt.Errorf("lock %s: no majority: %d of %d servers granted it, %d needed: %w",
		key, count(as, granted), len(q.clients), q.quorum, errors.Join(errs...))
}

// extend implements redisImpl: redsync's compare-and-PEXPIRE script on
// every server, in parallel; the lock holds when a majority extended it,
// in time to be valid.
func (q *quorum) extend(ctx context.Context, r *redisLease, ttl time.Duration) error {
	start := time.Now()
	touched := func(a nodeAnswer) bool { return a.err == nil && a.val == int64(1) }
	as := q.fanOut(ctx, deadlineFor(ctx, ttl), func(ctx context.Context, i int) nodeAnswer {
		v, err := q.eval(ctx, i, touchScript, r.key, r.value, ttl.Milliseconds())
		return nodeAnswer{val: v, err: err}
	}, func(as []nodeAnswer) bool { return count(as, touched) >= q.quorum })
	n := count(as, touched)
	switch {
	case n >= q.quorum && validFor(ttl, start) > 0:
		return nil
	case n >= q.quorum:
		return r.lose("extend", errors.New("extended too late to be valid"))
	}
	return r.lose("extend", fmt.Errorf("%d of %d servers extended it, %d needed: %w",
		n, len(q.clients), q.quorum, q.answerErrs(as, errGone)))
}

// release implements redisImpl: redsync's compare-and-delete script on
// every server, in parallel. It is released once a majority deleted it;
// when servers could not be reached it is not (the lock frees itself after
// its TTL) and the error says so; otherwise the lease was lost.
func (q *quorum) release(ctx context.Context, r *redisLease) error {
	deleted := func(a nodeAnswer) bool { return a.err == nil && a.val == int64(1) }
	dl, _ := ctx.Deadline()
	as := q.fanOut(ctx, dl, func(ctx context.Context, i int) nodeAnswer {
		v, err := q.eval(ctx, i, deleteScript, r.key, r.value)
		return nodeAnswer{val: v, err: err}
	}, func(as []nodeAnswer) bool { return count(as, deleted) >= q.quorum })
	if count(as, deleted) >= q.quorum {
		r.released = true
		return nil
	}
	if count(as, func(a nodeAnswer) bool { return a.err != nil }) > 0 {
		return fmt.Errorf("lock %s: release: %d of %d servers released it, %d needed: %w",
			r.key, count(as, deleted), len(q.clients), q.quorum, q.answerErrs(as, nil))
	}
	return r.lose("release", errGone)
}

// answerErrs joins the servers' errors, or returns none when there is none.
func (q *quorum) answerErrs(as []nodeAnswer, none error) error {
	var errs []error
	for i, a := range as {
		if a.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", q.names[i], a.err))
		}
	}
	if len(errs) == 0 {
		return none
	}
	return errors.Join(errs...)
}

// inflight counts calls that may outlive the call that started them; wait
// returns once there is none.
type inflight struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0
}

func (f *inflight) add(k int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.idle = make(chan struct{})
	}
	f.n += k
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n--; f.n == 0 {
		close(f.idle)
	}
}

func (f *inflight) wait() {
	f.mu.Lock()
	idle := f.n
	ch := f.idle
	f.mu.Unlock()
	if idle > 0 {
		<-ch
	}
}
