package cronguard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Tests of the batcher of the one-server Redis locker (redisclaim_batch.go):
// concurrent claims and releases share pipelines, each keeps its own reply
// and its own deadline, and nothing queued behind a stalled reply is
// applied without its caller knowing.

// pipeSizes is a go-redis hook that records the largest pipeline of
// script calls a client sent.
type pipeSizes struct{ max atomic.Int64 }

func (h *pipeSizes) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipeSizes) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipeSizes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		n := int64(0)
		for _, c := range cmds {
			if c.Name() == "evalsha" || c.Name() == "eval" {
				n++
			}
		}
		if n > h.max.Load() {
			h.max.Store(n) // racy max: good enough for "more than one"
		}
		return next(ctx, cmds)
	}
}

// Three instances claim the same tick of 200 jobs at once, each through
// its own client, so each instance's claims go in shared pipelines: every
// job has exactly one winner, holding the lock with its own attempt value
// and a token of its own; every loser names the winner. A job whose lock
// another process holds is won but locked; a job whose mark is garbage
// fails alone, not its pipeline's other claims. The winners' releases,
// batched too, each delete their own lock. On one Redis and on a 3-master
// Cluster (go-redis splits each pipeline by node).
func TestRedisBatchedClaimsEachGetTheirOwn(t *testing.T) {
	t.Run("single", func(t *testing.T) {
		srv, check := rlStart(t)
		batchedClaims(t, check, func() redis.UniversalClient { return srv.Client(t) })
	})
	t.Run("cluster", func(t *testing.T) {
		rlLeakCheck(t)
		cl := redistest.StartCluster(t, 3)
		batchedClaims(t, cl.ClusterClient(t), func() redis.UniversalClient { return cl.ClusterClient(t) })
	})
}

func batchedClaims(t *testing.T, check redis.UniversalClient, newClient func() redis.UniversalClient) {
	ctx := context.Background()
	const jobs = 200
	names := []string{"i1", "i2", "i3"}
	var lockers []*redisLocker
	var hooks []*pipeSizes
	for _, n := range names {
		c := newClient()
		h := &pipeSizes{}
		c.AddHook(h)
		lockers, hooks = append(lockers, rlLocker(t, c, WithInstanceID(n))), append(hooks, h)
	}
	other := rlLocker(t, check, WithInstanceID("web-x"))
	held, err := other.Acquire(ctx, "j7", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := check.HSet(ctx, "cronguard:claim:{j13}", "s", "x", "n", "0").Err(); err != nil {
		t.Fatal(err)
	}
	type result struct {
		c   Claim
		err error
	}
	res := make([][]result, len(names))
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i, l := range lockers {
		res[i] = make([]result, jobs)
		for j := range jobs {
			wg.Go(func() {
				<-gate
				c, err := l.Claim(ctx, fmt.Sprint("j", j), t0, time.Minute, names[i])
				res[i][j] = result{c, err}
			})
		}
	}
	close(gate)
	wg.Wait()

	var leases []Lease
	for j := range jobs {
		job := fmt.Sprint("j", j)
		var winners []string
		for i := range names {
			r := res[i][j]
			switch {
			case job == "j13":
				if r.err == nil || !strings.Contains(r.err.Error(), "unreadable claim mark") {
					t.Errorf("%s by %s: %+v, %v; want the unreadable-mark error", job, names[i], r.c, r.err)
				}
			case r.err != nil:
				t.Errorf("%s by %s: %v", job, names[i], r.err)
			case r.c.Won:
				winners = append(winners, names[i])
			}
		}
		if job == "j13" {
			continue
		}
		if len(winners) != 1 {
			t.Errorf("%s: winners %v, want exactly one", job, winners)
			continue
		}
		for i, n := range names {
			r := res[i][j]
			if n != winners[0] {
				if r.c.Holder != winners[0] || !r.c.HolderTick.Equal(t0) {
					t.Errorf("%s: loser %s got holder %q tick %s, want %s at %s", job, n, r.c.Holder, r.c.HolderTick, winners[0], t0)
				}
				continue
			}
			if job == "j7" {
				if r.c.Lease != nil || !errors.Is(r.c.LockErr, ErrLocked) || !strings.Contains(r.c.LockErr.Error(), `"web-x"`) {
					t.Errorf("%s: winner %s got %+v; want won, locked by web-x", job, n, r.c)
				}
				continue
			}
			if r.c.Lease == nil || r.c.LockErr != nil {
				t.Errorf("%s: winner %s got %+v; want a lease", job, n, r.c)
				continue
			}
			lv := r.c.Lease.(*redisLease).value
			if got := check.Get(ctx, "cronguard:lock:{"+job+"}").Val(); got != lv || !strings.HasPrefix(lv, n+"/") {
				t.Errorf("%s: lock holds %q, winner %s's lease %q", job, got, n, lv)
			}
			if by := check.HGet(ctx, "cronguard:claim:{"+job+"}", "by").Val(); by != n {
				t.Errorf("%s: mark by %q, want the winner %s", job, by, n)
			}
			// A token is the job's own fence (per job: two jobs may draw the
			// same value from the server's clock in one pipeline).
			if fence := check.Get(ctx, "cronguard:fence:{"+job+"}").Val(); r.c.Lease.Token() <= 0 || strconv.FormatInt(r.c.Lease.Token(), 10) != fence {
				t.Errorf("%s: token %d, the job's fence holds %s", job, r.c.Lease.Token(), fence)
			}
			leases = append(leases, r.c.Lease)
		}
	}
	batched := false
	for i, h := range hooks {
		t.Logf("%s: largest pipeline %d script calls", names[i], h.max.Load())
		batched = batched || h.max.Load() > 1
	}
	if !batched {
		t.Errorf("no instance sent two claims in one pipeline: the claims were not batched")
	}

	errs := make([]error, len(leases))
	for i, l := range leases {
		wg.Go(func() { errs[i] = l.Release(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Errorf("release: %v", err)
	}
	for j := range jobs {
		job := fmt.Sprint("j", j)
		if n := check.Exists(ctx, "cronguard:lock:{"+job+"}").Val(); (n == 1) != (job == "j7") {
			t.Errorf("%s: %d locks left after the releases; want only j7's, held by web-x", job, n)
		}
	}
	if err := held.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A reply held on the connection of a pipeline in flight (Redis runs the
// claim; the proxy holds its answer) while other claims queue behind it:
// every caller returns by its own deadline. A caller whose deadline passes,
// or whose context is canceled, while its claim is queued gets
// errNeverSent, and its claim is never applied, even once the held reply
// is delivered; those with time left are sent in the next pipeline, on
// another connection, once the stalled one has timed out, and run. The
// stalled claim itself is a lost reply: its lock is deleted, and another
// instance finds its tick taken. No tick runs twice.
func TestRedisStalledPipelineQueuedClaims(t *testing.T) {
	rlLeakCheck(t)
	srv := redistest.Start(t)
	check := srv.Client(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	opts := proxy.Options()
	opts.MaxRetries = -1 // a re-sent claim would be recognised, but keep one send per call here
	opts.ContextTimeoutEnabled = true
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	const budget = 500 * time.Millisecond
	l := rlLocker(t, c, WithCallBudget(budget), WithInstanceID("i1"))
	ctx := context.Background()
	tick := t0
	if _, err := l.Claim(ctx, "warm", tick, time.Minute, "i1"); err != nil { // loads the script
		t.Fatal(err)
	}

	seen, release := proxy.StallNext("EVALSHA")
	t.Cleanup(release)
	type outcome struct {
		job     string
		c       Claim
		err     error
		took    time.Duration
		allowed time.Duration
	}
	var mu sync.Mutex
	var got []outcome
	var wg sync.WaitGroup
	claim := func(job string, cctx context.Context, allowed time.Duration) {
		wg.Go(func() {
			start := time.Now()
			c, err := l.Claim(cctx, job, tick, time.Minute, "i1")
			mu.Lock()
			got = append(got, outcome{job, c, err, time.Since(start), allowed})
			mu.Unlock()
		})
	}
	claim("stalled", ctx, budget) // the locker's budget
	<-seen
	time.Sleep(20 * time.Millisecond) // let the stalled pipeline be in flight
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	canceled, cancel := context.WithCancel(ctx)
	long, cancelLong := context.WithTimeout(ctx, 3*time.Second)
	defer cancelLong()
	for i := range 5 {
		claim(fmt.Sprint("short", i), short, 100*time.Millisecond)
		claim(fmt.Sprint("canceled", i), canceled, 50*time.Millisecond)
		claim(fmt.Sprint("long", i), long, 3*time.Second)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	wg.Wait()
	release()       // the held reply reaches a connection go-redis has closed
	l.drain()       // no flight left
	check.Ping(ctx) // Redis has run all it received

	const slack = time.Second // a busy machine
	for _, o := range got {
		if o.took > o.allowed+slack {
			t.Errorf("%s returned after %s, allowed %s", o.job, o.took, o.allowed)
		}
		mark := check.HGetAll(ctx, "cronguard:claim:{"+o.job+"}").Val()
		switch {
		case o.job == "stalled":
			if o.err == nil || errors.Is(o.err, errNeverSent) {
				t.Errorf("stalled claim: %+v, %v; want a lost reply", o.c, o.err)
			}
			if mark["by"] != "i1" {
				t.Errorf("stalled claim: Redis ran it, the mark is %v", mark)
			}
			if n := check.Exists(ctx, "cronguard:lock:{stalled}").Val(); n != 0 {
				t.Errorf("stalled claim: its lock is left (lost-reply handling did not delete it)")
			}
		case strings.HasPrefix(o.job, "long"):
			if o.err != nil || !o.c.Won || o.c.Lease == nil {
				t.Errorf("%s: %+v, %v; want won, sent after the stalled pipeline timed out", o.job, o.c, o.err)
			} else if err := o.c.Lease.Release(ctx); err != nil {
				t.Error(err)
			}
		default: // short, canceled: expired while queued
			if !errors.Is(o.err, errNeverSent) {
				t.Errorf("%s: %+v, %v; want errNeverSent", o.job, o.c, o.err)
			}
			if len(mark) != 0 {
				t.Errorf("%s: never sent, yet the mark is %v", o.job, mark)
			}
		}
	}
	if len(got) != 16 {
		t.Fatalf("%d outcomes, want 16", len(got))
	}

	// Another instance, the same tick: it wins exactly the jobs whose claim
	// was never sent; the stalled one and the long ones are taken.
	l2 := rlLocker(t, check, WithInstanceID("i2"))
	for _, o := range got {
		c2, err := l2.Claim(ctx, o.job, tick, 0, "i2")
		if err != nil {
			t.Fatal(err)
		}
		ranByI1 := o.err == nil && o.c.Won
		if c2.Won && (ranByI1 || o.job == "stalled") {
			t.Errorf("%s: i2 won the tick too: %+v (i1: %+v, %v)", o.job, c2, o.c, o.err)
		}
		if !c2.Won && errors.Is(o.err, errNeverSent) {
			t.Errorf("%s: never sent by i1, yet i2 finds it taken by %q", o.job, c2.Holder)
		}
	}
}

// panicHook panics in the Redis client when armed, as a user's hook with a
// bug would; slow holds a lone call in flight so that others queue.
type panicHook struct{ lone, pipe, slow atomic.Bool }

func (h *panicHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.slow.Load() {
			time.Sleep(300 * time.Millisecond)
		}
		if h.lone.CompareAndSwap(true, false) {
			panic("hook boom")
		}
		return next(ctx, cmd)
	}
}
func (h *panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.pipe.CompareAndSwap(true, false) {
			panic("pipe boom")
		}
		return next(ctx, cmds)
	}
}

// A panic in the client, alone or in a pipeline, neither stops the batcher
// (later calls go through, drain returns) nor the process (a flight runs on
// a goroutine of its own): each call left without a reply gets it as its
// error.
func TestRedisBatcherSurvivesClientPanics(t *testing.T) {
	c := redistest.Start(t).Client(t)
	h := &panicHook{}
	c.AddHook(h)
	b := &scriptBatcher{client: c}
	one := redis.NewScript("return 1")
	call := func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return b.call(ctx, one, []string{"k"})
	}
	h.lone.Store(true)
	func() {
		defer func() { _ = recover() }()
		_, _ = call()
		t.Error("the lone call did not panic")
	}()
	if v, err := call(); err != nil || v != int64(1) {
		t.Fatalf("after a lone call panicked: %v, %v (the batcher is stuck)", v, err)
	}
	// A flight: one slow lone call, three queued behind it; the pipeline panics.
	h.slow.Store(true)
	lone := make(chan error, 1)
	go func() { _, err := call(); lone <- err }()
	waitFor(t, 2*time.Second, "lone call in flight", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.flying })
	h.pipe.Store(true)
	errs := make(chan error, 3)
	for range 3 {
		go func() { _, err := call(); errs <- err }()
	}
	waitFor(t, 2*time.Second, "three calls queued", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.queue) == 3 })
	if err := <-lone; err != nil {
		t.Fatal(err)
	}
	h.slow.Store(false)
	for range 3 {
		if err := <-errs; err == nil || !strings.Contains(err.Error(), "panicked") {
			t.Errorf("a call of the panicking pipeline: %v, want the panic as its error", err)
		}
	}
	if v, err := call(); err != nil || v != int64(1) {
		t.Fatalf("after a pipeline panicked: %v, %v", v, err)
	}
	drained := make(chan struct{})
	go func() { b.drain(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		t.Fatal("drain did not return")
	}
}
