package cronguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Tests of the Redis locker (NewRedisLocker) against real redis-server processes (internal/redistest).
// The long ones (skew, long job, Redlock, crash) run in parallel; TestMain's
// goleak check covers them. The outage test checks for leaks itself.

// ---- helpers ---------------------------------------------------------------

// rlLeakCheck fails t if goroutines started during t outlive it (after every
// cleanup, so clients and servers are closed first). Only for tests that do
// not run in parallel.
func rlLeakCheck(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		rlAwaitDialers()
		goleak.VerifyNone(t, before)
	})
}

// rlAwaitDialers waits (up to 3s) for go-redis's background dialers to end,
// and for the calls of a Redlock locker that are still on their way to slow
// servers (they outlive Acquire and Release, within the budget; a
// Scheduler's Stop waits for them, a locker used directly does not). A client whose server went away
// starts a dialer (ConnPool.tryDial); it notices that the client was closed
// only after its next 1s sleep, later than goleak waits. Tests that stop a
// server call it in a cleanup registered before their clients'.
func rlAwaitDialers() {
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if n := runtime.Stack(buf, true); !strings.Contains(string(buf[:n]), "(*ConnPool).tryDial") &&
			!strings.Contains(string(buf[:n]), "cronguard.(*quorum).fanOut") {
			return
		}
	}
}

// rlStart starts a redis-server for t, with rlLeakCheck, and returns it
// with a client.
func rlStart(t *testing.T) (*redistest.Server, *redis.Client) {
	t.Helper()
	rlLeakCheck(t)
	srv := redistest.Start(t)
	return srv, srv.Client(t)
}

// startAll starts every scheduler.
func startAll(t *testing.T, scheds ...*Scheduler) {
	t.Helper()
	for _, s := range scheds {
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
	}
}

// rlLocker returns a Redis locker on c.
func rlLocker(t *testing.T, c redis.UniversalClient, opts ...Option) *redisLocker {
	t.Helper()
	l, err := NewRedisLocker(c, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l.(*redisLocker)
}

// rlQuorum returns a Redlock locker over clients.
func rlQuorum[C redis.UniversalClient](t *testing.T, clients []C, opts ...Option) *redisLocker {
	t.Helper()
	all := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		all[i] = c
	}
	l, err := NewRedlock(all, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l.(*redisLocker)
}

// rlSched returns a quiet scheduler named id on locker l (newTest).
func rlSched(t *testing.T, id string, l Locker, opts ...Option) (*Scheduler, *recorder) {
	t.Helper()
	return newTest(t, append([]Option{WithLocker(l), WithInstanceID(id)}, opts...)...)
}

// sleepUntil sleeps until t.
func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// nextSecond is the first whole second after t.
func nextSecond(t time.Time) time.Time { return t.Truncate(time.Second).Add(time.Second) }

// tickLog counts runs per tick in memory, for tests whose Redis restarts.
type tickLog struct {
	mu   sync.Mutex
	runs map[string][]string // fmtTick(tick) -> instances that ran it
	toks []int64             // fencing tokens, in run order
}

func newTickLog() *tickLog { return &tickLog{runs: map[string][]string{}} }

func (l *tickLog) job(id string, d time.Duration) Job {
	return JobFunc(func(ctx context.Context) error {
		l.mu.Lock()
		tick := fmtTick(tickFrom(ctx))
		l.runs[tick] = append(l.runs[tick], id)
		if tok := tokenFrom(ctx); tok != 0 {
			l.toks = append(l.toks, tok)
		}
		l.mu.Unlock()
		time.Sleep(d)
		return nil
	})
}

func (l *tickLog) count(tick time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.runs[fmtTick(tick)])
}

func (l *tickLog) ticks() map[time.Time][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[time.Time][]string{}
	for k, v := range l.runs {
		tick, _ := time.Parse(time.RFC3339Nano, k)
		out[tick] = slices.Clone(v)
	}
	return out
}

func (l *tickLog) tokens() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.toks)
}

// ---- the locker's API ------------------------------------------------------

func TestRedisLockerOptions(t *testing.T) {
	if _, err := NewRedisLocker(nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("NewRedisLocker(nil) = %v, want ErrInvalidOption", err)
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialed
	defer c.Close()
	for name, opt := range map[string]Option{
		"WithCallBudget(0)": WithCallBudget(0),
		"nil option":        nil,
	} {
		if _, err := NewRedisLocker(c, opt); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: err = %v, want ErrInvalidOption", name, err)
		}
	}
	for name, cs := range map[string][]redis.UniversalClient{"no client": nil, "a nil client": {c, nil}} {
		if _, err := NewRedlock(cs); !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), "NewRedlock") {
			t.Errorf("NewRedlock(%s) = %v, want ErrInvalidOption naming NewRedlock", name, err)
		}
	}
	l := rlQuorum(t, []redis.UniversalClient{c, c, c}, WithKeyPrefix("svc:"), WithInstanceID("me"), WithCallBudget(time.Second))
	if l.quorum != 2 || len(l.clients) != 3 || l.prefix != "svc:" || l.owner != "me" || l.budget != time.Second {
		t.Errorf("locker = %+v", l)
	}
	if _, err := l.Acquire(context.Background(), "j", 0); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("Acquire with TTL 0: %v, want ErrInvalidOption", err)
	}
	if d := rlLocker(t, c); d.prefix != "cronguard:" || d.budget != 2*time.Second || d.owner == "" {
		t.Errorf("defaults: %+v", d)
	}
}

// The claim mark: a tick wins only when newer than the mark, a tick at or
// behind it is lost naming the holder and the mark's tick, the mark has no
// TTL, and a won claim says which mark it replaced.
func TestRedisLockerClaim(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	l := rlLocker(t, c)
	tick := t0.Add(250 * time.Millisecond)
	cl, err := l.Claim(ctx, "mail", tick, 0, "web-1")
	if err != nil || !cl.Won || cl.Holder != "web-1" || !cl.Prev.IsZero() || cl.Lease != nil || cl.LockErr != nil {
		t.Fatalf("first claim = %+v, %v; want won, no previous mark, no lease", cl, err)
	}
	for _, try := range []struct {
		tick time.Time
		who  string
	}{{tick, "web-2"}, {tick, "web-1"}, {tick.Add(-time.Nanosecond), "web-2"}, {tick.Add(-time.Hour), "web-3"}} {
		cl, err = l.Claim(ctx, "mail", try.tick, 0, try.who)
		if err != nil || cl.Won || cl.Holder != "web-1" || !cl.HolderTick.Equal(tick) {
			t.Fatalf("claim of %s by %s = %+v, %v; want lost to web-1 at %s", fmtTick(try.tick), try.who, cl, err, fmtTick(tick))
		}
	}
	const key = "cronguard:claim:{mail}"
	h := c.HGetAll(ctx, key).Val()
	if h["by"] != "web-1" || h["tick"] != fmtTick(tick) || !strings.HasPrefix(h["att"], rlOwner(l)+"/") {
		t.Errorf("HGETALL %s = %v", key, h)
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl != -1 {
		t.Errorf("PTTL %s = %s, want none: the mark does not rest on a TTL", key, ttl)
	}
	next := tick.Add(time.Nanosecond) // ticks compare exactly, to the nanosecond
	cl, err = l.Claim(ctx, "mail", next, 0, "web-2")
	if err != nil || !cl.Won || !cl.Prev.Equal(tick) {
		t.Fatalf("newer tick = %+v, %v; want won with Prev %s", cl, err, fmtTick(tick))
	}
	far := time.Date(2262, 4, 11, 23, 47, 16, 854775807, time.UTC) // beyond 2^53 nanoseconds and then some
	if cl, err = l.Claim(ctx, "mail", far, 0, "web-3"); err != nil || !cl.Won || !cl.Prev.Equal(next) {
		t.Fatalf("far tick = %+v, %v", cl, err)
	}
	if cl, err = l.Claim(ctx, "mail", far.Add(-time.Nanosecond), 0, "web-1"); err != nil || cl.Won || !cl.HolderTick.Equal(far) {
		t.Fatalf("one nanosecond behind a far mark = %+v, %v; want lost", cl, err)
	}
	if _, err := l.Claim(ctx, "mail", far, -time.Second, "web-1"); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("negative lock TTL: %v", err)
	}
	// A hostile mark: the claim fails (fails closed), it does not win.
	c.HSet(ctx, "cronguard:claim:{odd}", "s", "soon", "n", "0", "by", "x")
	if cl, err := l.Claim(ctx, "odd", t0, time.Second, "web-1"); err == nil || cl.Won {
		t.Errorf("claim over an unreadable mark = %+v, %v; want an error", cl, err)
	}
	if n := c.Exists(ctx, "cronguard:lock:{odd}").Val(); n != 0 {
		t.Error("a failed claim left a lock behind")
	}
}

// rlOwner is the owner part of l's lock values.
func rlOwner(l *redisLocker) string { return l.owner }

func TestRedisLockerAcquire(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	a := rlLocker(t, c, WithInstanceID("web-1"))
	b := rlLocker(t, c, WithInstanceID("web-2"))
	const key = "cronguard:lock:{report}"

	l1, err := a.Acquire(ctx, "report", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, key).Val(); !strings.HasPrefix(v, "web-1/") || len(v) < len("web-1/")+20 {
		t.Errorf("lock value %q, want web-1/<random>", v)
	}
	if f, _ := c.Get(ctx, "cronguard:fence:{report}").Int64(); f != l1.Token() {
		t.Errorf("fence key %d, token %d", f, l1.Token())
	}

	// Acquire twice: ErrLocked at once, naming the job and the holder.
	start := time.Now()
	_, err = b.Acquire(ctx, "report", 5*time.Second)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), `"report"`) || !strings.Contains(err.Error(), `"web-1"`) {
		t.Fatalf("second Acquire: %v; want ErrLocked naming the job and web-1", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("a held lock took %s to report", d)
	}
	t.Logf("held: %v", err)
	if _, err := a.Acquire(ctx, "report", 5*time.Second); !errors.Is(err, ErrLocked) {
		t.Fatalf("same locker again: %v", err)
	}

	// Extend keeps it; a new TTL applies.
	if err := l1.Extend(ctx, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl < 19*time.Second {
		t.Errorf("PTTL after Extend(20s) = %s", ttl)
	}

	// Release, then Acquire: works, and the token grew.
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if n := c.Exists(ctx, key).Val(); n != 0 {
		t.Fatal("lock key still there after Release")
	}
	if err := l1.Release(ctx); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if err := l1.Extend(ctx, time.Second); !errors.Is(err, ErrLockLost) {
		t.Errorf("Extend after Release: %v", err)
	}
	l2, err := b.Acquire(ctx, "report", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Token() <= l1.Token() {
		t.Errorf("token did not grow: %d then %d", l1.Token(), l2.Token())
	}

	// Extend after DEL: ErrLockLost; the lost lease never touches the key again.
	c.Del(ctx, key)
	if err := l2.Extend(ctx, 5*time.Second); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Extend after DEL: %v, want ErrLockLost", err)
	} else {
		t.Logf("lost: %v", err)
	}
	l3, err := a.Acquire(ctx, "report", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Errorf("Release of a lost lease: %v, want ErrLockLost", err)
	}
	if c.Exists(ctx, key).Val() != 1 {
		t.Fatal("releasing a lost lease deleted the new holder's lock")
	}
	// Taken over behind its back (expired and re-acquired): Release refuses.
	c.Set(ctx, key, "thief/x", time.Minute)
	if err := l3.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Errorf("Release of a lock now held by another: %v", err)
	}
	if c.Get(ctx, key).Val() != "thief/x" {
		t.Error("Release deleted another holder's lock")
	}
	if _, err := a.Acquire(ctx, "report", time.Second); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), `"thief"`) {
		t.Errorf("Acquire of a foreign lock: %v", err)
	}
}

func TestRedisLockerTokenSurvivesDataLoss(t *testing.T) {
	srv, c := rlStart(t)
	ctx := context.Background()
	l := rlLocker(t, c)
	var last int64
	take := func(what string) {
		t.Helper()
		lease, err := l.Acquire(ctx, "j", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if lease.Token() <= last {
			t.Fatalf("%s: token %d after %d", what, lease.Token(), last)
		}
		last = lease.Token()
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		take("in a row")
	}
	c.FlushAll(ctx)
	take("after FLUSHALL")
	c.Set(ctx, "cronguard:fence:{j}", 7, 0)
	take("after the counter was reset")
	srv.Restart(t) // empty: no persistence
	take("after a restart")
}

func TestRedisLockerRedisDown(t *testing.T) {
	srv, c := rlStart(t)
	ctx := context.Background()
	l := rlLocker(t, c, WithCallBudget(500*time.Millisecond))
	lease, err := l.Acquire(ctx, "j", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	_, err = l.Claim(ctx, "j", t0, time.Second, "me")
	if err == nil || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("Claim with Redis down: %v; want a Redis error naming %s", err, srv.Addr())
	}
	t.Logf("claim: %v", err)
	_, err = l.Acquire(ctx, "j", time.Second)
	if err == nil || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("Acquire with Redis down: %v; want the Redis error, not ErrLocked", err)
	}
	t.Logf("acquire: %v", err)
	if err := lease.Extend(ctx, 10*time.Second); !errors.Is(err, ErrLockLost) {
		t.Errorf("Extend with Redis down: %v, want ErrLockLost", err)
	}
}

// A Redis that accepts connections and never answers: every call ends
// within the budget (with ContextTimeoutEnabled, see NewRedisLocker's doc).
func TestRedisLockerBudget(t *testing.T) {
	rlLeakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	accepted := make(chan net.Conn, 64)
	conns.Go(func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- cn
		}
	})
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
		close(accepted)
		for cn := range accepted {
			cn.Close()
		}
	})
	c := redis.NewClient(&redis.Options{Addr: ln.Addr().String(), ContextTimeoutEnabled: true, MaxRetries: -1, Protocol: 2})
	t.Cleanup(func() { c.Close() })
	l := rlLocker(t, c, WithCallBudget(200*time.Millisecond))
	start := time.Now()
	_, err = l.Claim(context.Background(), "j", t0, time.Second, "me")
	if d := time.Since(start); err == nil || d > time.Second {
		t.Errorf("Claim on a silent Redis: %v after %s; want an error within the 200ms budget", err, d)
	}
	start = time.Now()
	_, err = l.Acquire(context.Background(), "j", 30*time.Second)
	if d := time.Since(start); err == nil || errors.Is(err, ErrLocked) || d > time.Second {
		t.Errorf("Acquire on a silent Redis: %v after %s", err, d)
	}
}

func TestWithRedisMakesRedisLocker(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s2, err := New(WithRedis(c), WithKeyPrefix("app:"), WithInstanceID("i-2"), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSched(t, s2) })
	l, ok := s2.cfg.locker.(*redisLocker)
	if !ok || l.prefix != "app:" || l.owner != "i-2" || l.budget != 2*time.Second {
		t.Fatalf("WithRedis locker: %#v", s2.cfg.locker)
	}
	mem := NewMemoryLocker()
	s3, err := New(WithRedis(c), WithLocker(mem), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopSched(t, s3) })
	if s3.cfg.locker != Locker(mem) {
		t.Error("WithLocker did not win over WithRedis")
	}
}

func TestRedisLockReleasedAfterPanic(t *testing.T) {
	_, c := rlStart(t)
	s, _ := rlSched(t, "a", rlLocker(t, c))
	if err := s.Register("boom", "@every 1h", JobFunc(func(context.Context) error { panic("boom") })); err != nil {
		t.Fatal(err)
	}
	rep := tickAt(t, s, "boom", t0)
	if !errors.Is(rep.Err, ErrPanic) {
		t.Fatalf("report: %v", rep)
	}
	if n := c.Exists(context.Background(), "cronguard:lock:{boom}").Val(); n != 0 {
		t.Fatal("lock still held after the job panicked")
	}
}

// ---- issue 3: one run per tick, never two at once, under real faults -------

// Five schedulers share one Redis, each delaying each run by a random
// offset (0 to 800ms in steps of 200ms: clock skew as Redis sees it, with
// the late instance changing from tick to tick, and ties that make claims
// race), a 1-second spec, jobs of 1-50ms: every tick runs exactly once.
// CRONGUARD_SKEW_TICKS shortens it locally.
func TestRedisOneRunPerTickAcrossSkewedInstances(t *testing.T) {
	t.Parallel()
	ticks := 60
	if v, err := strconv.Atoi(os.Getenv("CRONGUARD_SKEW_TICKS")); err == nil && v > 0 {
		ticks = v
	}
	srv := redistest.Start(t)
	check := srv.Client(t)
	ctx := context.Background()

	var scheds []*Scheduler
	var recs []*recorder
	for i := range 5 {
		id := fmt.Sprintf("skew-%d", i)
		delay := func(next Job) Job {
			return JobFunc(func(ctx context.Context) error {
				offset := time.Duration(rand.IntN(5)) * 200 * time.Millisecond
				select {
				case <-time.After(offset):
				case <-ctx.Done():
					return ctx.Err()
				}
				return next.Run(ctx)
			})
		}
		s, rec := rlSched(t, id, rlLocker(t, srv.Client(t), WithInstanceID(id)), WithMiddleware(delay))
		job := JobFunc(func(ctx context.Context) error {
			tick := fmtTick(tickFrom(ctx))
			if err := check.HIncrBy(ctx, "test:runs", tick, 1).Err(); err != nil {
				return err
			}
			check.HSet(ctx, "test:who", tick, id)
			time.Sleep(time.Duration(1+rand.IntN(50)) * time.Millisecond)
			return nil
		})
		if err := s.Register("skew", "* * * * * *", job); err != nil {
			t.Fatal(err)
		}
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	start := time.Now()
	startAll(t, scheds...)
	first := nextSecond(start)
	last := first.Add(time.Duration(ticks-1) * time.Second)
	sleepUntil(last.Add(time.Second)) // the slowest (800ms + 50ms) is done
	var wg sync.WaitGroup
	for _, s := range scheds {
		wg.Go(func() { stopSched(t, s) })
	}
	wg.Wait()

	runs, err := check.HGetAll(ctx, "test:runs").Result()
	if err != nil {
		t.Fatal(err)
	}
	who := check.HGetAll(ctx, "test:who").Val()
	for k, n := range runs {
		if n != "1" {
			t.Errorf("tick %s ran %s times", k, n)
		}
	}
	wins := map[string]int{}
	for tick := first; !tick.After(last); tick = tick.Add(time.Second) {
		k := fmtTick(tick)
		if runs[k] != "1" {
			t.Errorf("tick %s ran %q times, want 1", k, runs[k])
		}
		wins[who[k]]++
	}
	taken := 0
	for _, r := range recs {
		for _, e := range r.skips("tick_taken") {
			taken++
			if !errors.Is(e.Err, ErrTickTaken) || !strings.Contains(e.Err.Error(), `"skew-`) {
				t.Errorf("tick_taken event without the winner: %v", e.Err)
			}
		}
		for _, e := range r.kind(EventSkipped) {
			if e.Skip != "tick_taken" && !e.Tick.After(last) {
				t.Errorf("unexpected skip: %s %v", e.Skip, e.Err)
			}
		}
	}
	if taken < 4*ticks {
		t.Errorf("%d tick_taken skips, want at least %d (4 losers per tick)", taken, 4*ticks)
	}
	if len(wins) < 2 && ticks >= 10 {
		t.Errorf("winners %v: one instance won every tick, so claims never raced", wins)
	}
	t.Logf("%d ticks, each run once; winners: %v; %d losers skipped", ticks, wins, taken)
}

// LockTTL 1s, a job of 5s: the lease is extended, no other instance runs the
// job meanwhile, and a manual run gets ErrLocked.
func TestRedisLongJobKeepsItsLease(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	check := srv.Client(t)
	ctx := context.Background()
	const key = "cronguard:lock:{long}"

	var active, overlaps, starts atomic.Int32
	var long atomic.Bool
	longStarted := make(chan int64, 1)
	// When each run's body started, and when the long one's began and
	// ended: the runs that started within it are counted from these, not
	// from when the test sees its end (a run of the next tick may start
	// between the two on a busy machine).
	var timesMu sync.Mutex
	var startedAt []time.Time
	var longFrom, longTo time.Time
	job := JobFunc(func(ctx context.Context) error {
		if active.Add(1) > 1 {
			overlaps.Add(1)
		}
		defer active.Add(-1)
		starts.Add(1)
		now := time.Now()
		timesMu.Lock()
		startedAt = append(startedAt, now)
		timesMu.Unlock()
		if long.CompareAndSwap(false, true) {
			defer func() {
				timesMu.Lock()
				longFrom, longTo = now, time.Now()
				timesMu.Unlock()
			}()
			longStarted <- tokenFrom(ctx)
			select {
			case <-time.After(5 * time.Second):
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			return nil
		}
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	var scheds []*Scheduler
	var recs []*recorder
	for _, id := range []string{"long-a", "long-b"} {
		s, rec := rlSched(t, id, rlLocker(t, srv.Client(t), WithInstanceID(id)))
		if err := s.Register("long", "* * * * * *", job, LockTTL(time.Second)); err != nil {
			t.Fatal(err)
		}
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	longReport := func() (Report, bool) {
		for _, r := range recs {
			for _, e := range r.kind(EventFinished) {
				if e.Report != nil && e.Report.Duration > 4*time.Second {
					return *e.Report, true
				}
			}
		}
		return Report{}, false
	}
	startAll(t, scheds...)
	var token int64
	select {
	case token = <-longStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("the long run did not start")
	}
	startsAtLong := starts.Load()
	value := check.Get(ctx, key).Val()
	t.Logf("long run holds %s = %q, token %d", key, value, token)

	// Sample the lock for 4.5s: always there, same value, never more than 1s to live.
	manualDone := false
	for deadline := time.Now().Add(4500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		v, err := check.Get(ctx, key).Result()
		ttl := check.PTTL(ctx, key).Val()
		if err != nil || v != value || ttl <= 0 || ttl > time.Second {
			t.Fatalf("lock during the long run: %q (%v), PTTL %s", v, err, ttl)
		}
		if !manualDone && time.Now().After(deadline.Add(-2*time.Second)) {
			manualDone = true
			for _, s := range scheds {
				rep, err := s.RunManually(ctx, "long")
				if !errors.Is(err, ErrLocked) || skipOf(rep) != "locked" {
					t.Errorf("manual run during the long run: %v (skipped %q), want ErrLocked", err, skipOf(rep))
				}
			}
		}
	}
	waitFor(t, 3*time.Second, "the end of the long run", func() bool { _, ok := longReport(); return ok })
	rep, _ := longReport()
	if rep.Outcome() != "done" || rep.Err != nil {
		t.Errorf("long run: %v", rep)
	}
	timesMu.Lock()
	for _, at := range startedAt {
		if at.After(longFrom) && at.Before(longTo) {
			t.Errorf("a run started at %s, during the long run (%s to %s)", at.Format(time.StampMicro), longFrom.Format(time.StampMicro), longTo.Format(time.StampMicro))
		}
	}
	timesMu.Unlock()
	// Runs resume after it.
	waitFor(t, 3*time.Second, "a run after the long one", func() bool { return starts.Load() > startsAtLong })
	for _, s := range scheds {
		stopSched(t, s)
	}
	if overlaps.Load() != 0 {
		t.Errorf("%d overlapping runs", overlaps.Load())
	}
	locked := 0
	for _, r := range recs {
		if n := len(r.kind(EventLockLost)); n > 0 {
			t.Errorf("%d lock_lost events", n)
		}
		locked += len(r.skips("locked"))
	}
	if locked == 0 {
		t.Error("no tick was skipped as locked during the long run")
	}
	t.Logf("long run: %v; %d ticks skipped as locked", rep, locked)
}

// The lock key is deleted mid-run: the run's context is canceled with cause
// ErrLockLost within TTL/3 plus one round trip, and the lost lock is not
// released (another holder's lock stays).
func TestRedisLockStolenCancelsRun(t *testing.T) {
	rlLeakCheck(t)
	srv := redistest.Start(t)
	check := srv.Client(t)
	ctx := context.Background()
	const ttl = 900 * time.Millisecond
	const key = "cronguard:lock:{steal}"

	s, rec := rlSched(t, "victim", rlLocker(t, srv.Client(t)))
	started := make(chan struct{})
	type end struct {
		at    time.Time
		cause error
	}
	ended := make(chan end, 1)
	job := JobFunc(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		ended <- end{time.Now(), context.Cause(ctx)}
		return ctx.Err()
	})
	if err := s.Register("steal", "@every 1h", job, LockTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	repc := goAsync(func() Report { return tickAt(t, s, "steal", t0) })
	<-started
	time.Sleep(150 * time.Millisecond) // mid-run, between two extensions

	pingStart := time.Now()
	check.Ping(ctx)
	rtt := time.Since(pingStart)
	if err := check.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	stolen := time.Now()
	thief, err := rlLocker(t, check, WithInstanceID("thief")).Acquire(ctx, "steal", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var e end
	select {
	case e = <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("run not canceled after its lock was deleted")
	}
	took := e.at.Sub(stolen)
	limit := ttl/3 + rtt
	t.Logf("canceled %s after the DEL (TTL/3 + RTT = %s): %v", took, limit, e.cause)
	if !errors.Is(e.cause, ErrLockLost) {
		t.Errorf("cause = %v, want ErrLockLost", e.cause)
	}
	if took > limit+200*time.Millisecond { // slack for -race and a busy machine
		t.Errorf("canceled %s after the DEL, want within TTL/3 + RTT = %s", took, limit)
	}
	rep := <-repc
	if rep.Outcome() != "lock_lost" || !errors.Is(rep.Err, ErrLockLost) {
		t.Errorf("report: %v", rep)
	}
	if len(rec.kind(EventLockLost)) != 1 {
		t.Errorf("lock_lost events: %d", len(rec.kind(EventLockLost)))
	}
	if v := check.Get(ctx, key).Val(); !strings.HasPrefix(v, "thief/") {
		t.Errorf("lock after the victim ended: %q; the lost lock was released over the thief's", v)
	}
	if err := thief.Release(ctx); err != nil {
		t.Error(err)
	}
}

// Redis is stopped for 5s while two instances run a job every second, then
// restarted (empty): no panic, skipped ticks with the Redis error during the
// outage, runs resume at the first tick after, no duplicate, no leak.
func TestRedisOutageAndRecovery(t *testing.T) {
	rlLeakCheck(t)
	srv := redistest.Start(t)
	log := newTickLog()
	var scheds []*Scheduler
	var recs []*recorder
	for _, id := range []string{"out-a", "out-b"} {
		s, rec := rlSched(t, id, rlLocker(t, srv.Client(t), WithInstanceID(id)))
		if err := s.Register("tick", "* * * * * *", log.job(id, 5*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	startAll(t, scheds...)
	// Two good ticks.
	before := nextSecond(time.Now())
	sleepUntil(before.Add(1500 * time.Millisecond))
	for tick := before; !tick.After(before.Add(time.Second)); tick = tick.Add(time.Second) {
		if n := log.count(tick); n != 1 {
			t.Errorf("before the outage: tick %s ran %d times", fmtTick(tick), n)
		}
	}
	tokensBefore := log.tokens()

	srv.Stop(t)
	down := time.Now()
	time.Sleep(5 * time.Second)
	srv.Restart(t)
	up := time.Now()
	firstAfter := nextSecond(up)
	sleepUntil(firstAfter.Add(2500 * time.Millisecond))
	for _, s := range scheds {
		stopSched(t, s)
	}

	for tick, ids := range log.ticks() {
		if len(ids) > 1 {
			t.Errorf("tick %s ran %d times: %v", fmtTick(tick), len(ids), ids)
		}
		// A claim sent during the outage may go through once Redis is back,
		// within its call budget (2s); a tick older than that cannot.
		if tick.After(down) && tick.Before(up.Add(-2*time.Second)) {
			t.Errorf("tick %s ran during the outage", fmtTick(tick))
		}
	}
	for tick := firstAfter; !tick.After(firstAfter.Add(2 * time.Second)); tick = tick.Add(time.Second) {
		if n := log.count(tick); n != 1 {
			t.Errorf("after the restart: tick %s ran %d times, want 1", fmtTick(tick), n)
		}
	}
	// A claim against a Redis that refuses connections takes go-redis's
	// dial retries (up to the budget); the local overlap check comes first,
	// so ticks fired meanwhile skip as overlap without asking Redis.
	outageTicks, backendTicks := 0, 0
	for _, r := range recs {
		for _, e := range r.skips("overlap") {
			if e.Tick.After(down) && e.Tick.Before(up) {
				outageTicks++
			}
		}
		for _, e := range r.kind(EventFinished) {
			if errors.Is(e.Err, ErrPanic) {
				t.Errorf("panic: %v", e.Err)
			}
		}
		for _, e := range r.skips("backend") {
			outageTicks++
			backendTicks++
			if !errors.Is(e.Err, ErrBackend) || !strings.Contains(e.Err.Error(), srv.Addr()) {
				t.Errorf("backend skip without the Redis error: %v", e.Err)
			}
		}
	}
	if outageTicks < 2*3 || backendTicks < 2 {
		t.Errorf("%d ticks skipped (%d for the backend, the others for overlap with a claim still trying) during a 5s outage on 2 instances, want at least 6 (2)",
			outageTicks, backendTicks)
	}
	if ev := recs[0].skips("backend"); len(ev) > 0 {
		t.Logf("during the outage: %v", ev[0].Err)
	}
	toks := log.tokens()
	if len(toks) <= len(tokensBefore) || toks[len(toks)-1] <= tokensBefore[len(tokensBefore)-1] {
		t.Errorf("fencing tokens before %v, after %v: they must keep growing over the restart", tokensBefore, toks)
	}
}

// Redlock over three redis-server processes: with one down every tick still
// runs once; with two down nothing runs, and the error says why.
func TestRedisRedlockQuorum(t *testing.T) {
	t.Parallel()
	t.Cleanup(rlAwaitDialers)
	srvs := []*redistest.Server{redistest.Start(t), redistest.Start(t), redistest.Start(t)}
	newLocker := func(id string) *redisLocker {
		return rlQuorum(t, []*redis.Client{srvs[0].Client(t), srvs[1].Client(t), srvs[2].Client(t)}, WithInstanceID(id))
	}
	log := newTickLog()
	var scheds []*Scheduler
	var recs []*recorder
	for _, id := range []string{"rl-a", "rl-b"} {
		s, rec := rlSched(t, id, newLocker(id))
		if err := s.Register("quorum", "* * * * * *", log.job(id, 5*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	startAll(t, scheds...)
	expectRuns := func(phase string, from time.Time, n, want int) {
		t.Helper()
		for tick := from; tick.Before(from.Add(time.Duration(n) * time.Second)); tick = tick.Add(time.Second) {
			if got := log.count(tick); got != want {
				t.Errorf("%s: tick %s ran %d times, want %d", phase, fmtTick(tick), got, want)
				for _, r := range recs {
					for _, e := range r.all() {
						if e.Tick.Equal(tick) {
							t.Logf("  %s %s %s %v", e.Instance, e.Kind, e.Skip, e.Err)
						}
					}
				}
			}
		}
	}
	all := nextSecond(time.Now())
	sleepUntil(all.Add(1500 * time.Millisecond))
	expectRuns("3 of 3 up", all, 2, 1)

	srvs[2].Stop(t)
	oneDown := nextSecond(time.Now())
	// A winner asks every server, so the one that is down costs each won
	// claim its share of the budget (budget/3) before the run starts.
	sleepUntil(oneDown.Add(3500 * time.Millisecond))
	expectRuns("2 of 3 up", oneDown, 3, 1)

	srvs[1].Stop(t)
	twoDown := nextSecond(time.Now())
	// Each claim now waits for two servers' clients to fail (go-redis
	// retries for a while): leave the last tick's claims time to end.
	sleepUntil(twoDown.Add(4 * time.Second))
	for _, s := range scheds {
		stopSched(t, s)
	}
	expectRuns("1 of 3 up", twoDown, 3, 0)
	var why []error
	for _, r := range recs {
		for _, e := range r.skips("backend") {
			if !e.Tick.Before(twoDown) && e.Tick.Before(twoDown.Add(3*time.Second)) {
				why = append(why, e.Err)
			}
		}
	}
	// Per tick, the instance that claimed the one server left reports why
	// it cannot go on (the other lost that server to it, tick_taken); a
	// claim waits for both dead servers (2 × budget/3), so the next tick
	// may be skipped as overlap instead.
	if len(why) < 2 {
		t.Fatalf("%d backend skips with two servers down over 3 ticks, want at least 2", len(why))
	}
	for _, err := range why {
		msg := err.Error()
		if !errors.Is(err, ErrBackend) || !strings.Contains(msg, "no majority: 1 of 3 servers claimed, 2 needed") ||
			!strings.Contains(msg, srvs[1].Addr()) || !strings.Contains(msg, srvs[2].Addr()) {
			t.Errorf("skip with two servers down does not say why: %v", err)
		}
	}
	t.Logf("two down: %v", why[0])

	// The lock itself, straight: quorum lost.
	_, err := newLocker("direct").Acquire(context.Background(), "quorum", time.Second)
	if err == nil || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "no majority: 1 of 3 servers granted it, 2 needed") {
		t.Errorf("Acquire with two of three down: %v", err)
	}
	t.Logf("acquire with two down: %v", err)
	srvs[1].Restart(t)
	l := newLocker("direct")
	lease, err := l.Acquire(context.Background(), "quorum", 10*time.Second)
	if err != nil {
		t.Fatalf("Acquire with two of three up: %v", err)
	}
	if _, err := newLocker("other").Acquire(context.Background(), "quorum", 10*time.Second); !errors.Is(err, ErrLocked) {
		t.Errorf("second Acquire with two of three up: %v, want ErrLocked", err)
	}
	if err := lease.Release(context.Background()); err != nil {
		t.Error(err)
	}
}

// Claimants racing for the same ticks on three servers: exactly one wins
// each tick and the others name it, with all servers up, with the last one
// down and with the first one down (which costs every claim the time its
// client takes to fail). A stale claim on the first server (of a claimant
// that died before reaching a majority) never makes two winners.
func TestRedisRedlockClaimRace(t *testing.T) {
	rlLeakCheck(t)
	srvs := []*redistest.Server{redistest.Start(t), redistest.Start(t), redistest.Start(t)}
	ctx := context.Background()
	var lockers []*redisLocker
	clients := make([][]*redis.Client, len(srvs)) // clients[i]: every locker's client of server i
	for range 5 {
		cs := []*redis.Client{srvs[0].Client(t), srvs[1].Client(t), srvs[2].Client(t)}
		for i, c := range cs {
			clients[i] = append(clients[i], c)
		}
		lockers = append(lockers, rlQuorum(t, cs))
	}
	// restart brings server i back and waits until every locker's client
	// reaches it: go-redis keeps failing for up to a second after a server
	// returns (its pool's dial breaker probes once a second), and a claimant
	// whose client still fails there can miss a tick, which is the bound
	// the race phases do not test.
	restart := func(i int) {
		t.Helper()
		srvs[i].Restart(t)
		for _, c := range clients[i] {
			deadline := time.Now().Add(5 * time.Second)
			for c.Ping(ctx).Err() != nil {
				if time.Now().After(deadline) {
					t.Fatalf("server %d restarted, a client still cannot reach it", i)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	type res struct {
		id     string
		ok     bool
		holder string
		err    error
	}
	claimAll := func(job string, tick time.Time) (winners []string, rs []res) {
		out := make(chan res, len(lockers))
		for i, l := range lockers {
			id := fmt.Sprintf("c%d", i)
			go func() {
				c, err := l.Claim(ctx, job, tick, 0, id)
				out <- res{id, c.Won, c.Holder, err}
			}()
		}
		for range lockers {
			r := <-out
			rs = append(rs, r)
			if r.ok {
				winners = append(winners, r.id)
			}
		}
		return winners, rs
	}
	race := func(phase string, base time.Time, ticks int) {
		t.Helper()
		start := time.Now()
		for k := range ticks {
			winners, rs := claimAll("race", base.Add(time.Duration(k)*time.Second))
			if len(winners) != 1 {
				var why []string
				for _, r := range rs {
					why = append(why, fmt.Sprintf("%s: won=%v holder=%q err=%v", r.id, r.ok, r.holder, r.err))
				}
				t.Fatalf("%s: tick %d: winners %v:\n%s", phase, k, winners, strings.Join(why, "\n"))
			}
			for _, r := range rs {
				if r.err != nil || !r.ok && r.holder != winners[0] {
					t.Errorf("%s: tick %d: %s: holder %q, %v; winner %s", phase, k, r.id, r.holder, r.err, winners[0])
				}
			}
		}
		t.Logf("%s: %d ticks in %s", phase, ticks, time.Since(start))
	}
	race("3 up", t0, 30)
	srvs[2].Stop(t)
	race("last down", t0.Add(time.Hour), 30)
	restart(2)
	srvs[0].Stop(t)
	race("first down", t0.Add(2*time.Hour), 8)
	restart(0)

	// A mark on the first server only (its claimant died before the
	// majority): every claimant of that tick loses to it, none wins twice.
	srvs[0].Client(t).HSet(ctx, "cronguard:claim:{stale}", "s", t0.Unix(), "n", 0, "by", "gone", "att", "gone/x")
	if winners, rs := claimAll("stale", t0); len(winners) > 1 {
		t.Errorf("stale first claim: winners %v, %v", winners, rs)
	}
}

// A child process holding the lock is killed with SIGKILL: another instance
// runs the job once the TTL has passed, not before.
func TestRedisCrashedHolderFreesLockAfterTTL(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const ttl = 1500 * time.Millisecond
	cmd := exec.Command(os.Args[0], "-test.run=^TestRedisLockHolderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CRONGUARD_LOCKHOLDER="+srv.Network()+"|"+srv.Addr()+"|"+ttl.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
		}
		cmd.Wait()
		for range lines {
		}
	})
	var childToken int64
	deadline := time.After(30 * time.Second)
	for childToken == 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("lock holder exited")
			}
			if v, found := strings.CutPrefix(line, "holding "); found {
				childToken, _ = strconv.ParseInt(v, 10, 64)
			}
		case <-deadline:
			t.Fatal("lock holder did not take the lock")
		}
	}

	log := newTickLog()
	s, rec := rlSched(t, "survivor", rlLocker(t, srv.Client(t), WithInstanceID("survivor")))
	if err := s.Register("crash", "* * * * * *", log.job("survivor", 5*time.Millisecond), LockTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond) // the child extends; the survivor's ticks find it locked
	if len(log.tokens()) != 0 {
		t.Fatal("the survivor ran while the child held the lock")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = true
	kill := time.Now()
	cmd.Wait()

	waitFor(t, ttl+3*time.Second, "the survivor's first run", func() bool { return len(log.tokens()) > 0 })
	var firstRun time.Time
	for _, e := range rec.kind(EventStarted) {
		firstRun = e.Time
		break
	}
	stopSched(t, s)
	after := firstRun.Sub(kill)
	t.Logf("child (token %d) killed; survivor ran %s later with token %d", childToken, after, log.tokens()[0])
	// The lock was last extended at most TTL/3 before the kill.
	if after < ttl/2 || after > ttl+time.Second+500*time.Millisecond {
		t.Errorf("survivor ran %s after the kill; want after the TTL (%s) and by the next tick", after, ttl)
	}
	if log.tokens()[0] <= childToken {
		t.Errorf("survivor's token %d not above the crashed holder's %d", log.tokens()[0], childToken)
	}
	locked := rec.skips("locked")
	if len(locked) == 0 || !strings.Contains(locked[0].Err.Error(), `"child"`) {
		t.Errorf("no locked skip naming the child: %v", locked)
	}
	for tick, ids := range log.ticks() {
		if len(ids) != 1 {
			t.Errorf("tick %s: %v", fmtTick(tick), ids)
		}
	}
}

// TestRedisLockHolderProcess is the child of
// TestRedisCrashedHolderFreesLockAfterTTL: it takes the lock with a manual
// run, says so on stdout, and holds it until it is killed.
func TestRedisLockHolderProcess(t *testing.T) {
	env := os.Getenv("CRONGUARD_LOCKHOLDER")
	if env == "" {
		t.Skip("helper process for TestRedisCrashedHolderFreesLockAfterTTL")
	}
	parts := strings.SplitN(env, "|", 3)
	ttl, err := time.ParseDuration(parts[2])
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Network: parts[0], Addr: parts[1]})
	defer c.Close()
	s, err := New(WithLocker(rlLocker(t, c, WithInstanceID("child"))), WithInstanceID("child"),
		WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	job := JobFunc(func(ctx context.Context) error {
		fmt.Printf("holding %d\n", tokenFrom(ctx))
		<-ctx.Done()
		return ctx.Err()
	})
	if err := s.Register("crash", "@every 1h", job, LockTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	rep, err := s.RunManually(context.Background(), "crash")
	t.Fatalf("the lock holder's run ended: %v %v", rep, err) // only when its lock was lost
}

// ---- round trips -----------------------------------------------------------

// rlCounter is a go-redis hook that records every round trip: one command,
// or one pipeline.
type rlCounter struct {
	mu  sync.Mutex
	rts []rlRT
}

type rlRT struct {
	name string // command name, or "pipeline"
	args []any
	err  error
}

func (c *rlCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *rlCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		switch cmd.Name() {
		case "hello", "client", "ping", "info", "config", "flushall":
		default:
			c.mu.Lock()
			c.rts = append(c.rts, rlRT{cmd.Name(), cmd.Args(), err})
			c.mu.Unlock()
		}
		return err
	}
}

func (c *rlCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		setup := true // a new connection's HELLO, CLIENT SETINFO...: not per run
		for _, cmd := range cmds {
			if n := cmd.Name(); n != "hello" && n != "client" && n != "auth" && n != "select" {
				setup = false
			}
		}
		if !setup {
			c.mu.Lock()
			c.rts = append(c.rts, rlRT{name: "pipeline", err: err})
			c.mu.Unlock()
		}
		return err
	}
}

// take returns the round trips recorded since the last take.
func (c *rlCounter) take() []rlRT {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.rts
	c.rts = nil
	return r
}

// classify counts round trips: total, those that only loaded a script
// (NOSCRIPT), and lease extensions (redsync's PEXPIRE script).
func classify(rts []rlRT) (total, noscript, extend int, names []string) {
	for _, rt := range rts {
		total++
		names = append(names, rt.name)
		if rt.err != nil && strings.Contains(rt.err.Error(), "NOSCRIPT") {
			noscript++
			continue
		}
		if (rt.name == "eval" || rt.name == "evalsha") && len(rt.args) > 1 {
			if s, _ := rt.args[1].(string); s == touchSHA || strings.Contains(s, "PEXPIRE") {
				extend++
			}
		}
	}
	return
}

// touchSHA and deleteSHA are the hashes of redsync's extension and release
// scripts (redsync v4.18.1 scripts.go).
const (
	touchSHA  = "d75bb8b5bd13532ddedd17762e772346e39b321e"
	deleteSHA = "e950836ed1e694540c503ef9972b8de518044d3b"
)

// The single-server path runs redsync's own scripts, so Redis caches one
// copy whichever path a service takes.
func TestRedisLockerScriptsAreRedsyncs(t *testing.T) {
	if touchScript.Hash != touchSHA || deleteScript.Hash != deleteSHA {
		t.Errorf("touch %s, delete %s: not redsync's scripts", touchScript.Hash, deleteScript.Hash)
	}
}

func rlCountingClient(t *testing.T, srv *redistest.Server) (*redis.Client, *rlCounter) {
	t.Helper()
	c := srv.Client(t)
	cnt := &rlCounter{}
	c.AddHook(cnt)
	if err := c.Ping(context.Background()).Err(); err != nil { // a pooled connection, set up
		t.Fatal(err)
	}
	return c, cnt
}

// A scheduled winner costs 2 round trips (claim with lock and token,
// release) plus one per extension; a loser costs 1; three instances cost 4
// per tick. A manual run costs 2 (lock, release), an AllowOverlap run 1.
// Counted with a go-redis hook on each instance's client and checked
// against INFO commandstats.
func TestRedisRoundTrips(t *testing.T) {
	rlLeakCheck(t)
	srv := redistest.Start(t) // fresh: no script loaded yet
	ca, cntA := rlCountingClient(t, srv)
	cb, cntB := rlCountingClient(t, srv)
	cc, cntC := rlCountingClient(t, srv)
	a, _ := rlSched(t, "rt-a", rlLocker(t, ca))
	b, _ := rlSched(t, "rt-b", rlLocker(t, cb))
	c, _ := rlSched(t, "rt-c", rlLocker(t, cc))
	noop := JobFunc(func(context.Context) error { return nil })
	for _, s := range []*Scheduler{a, b, c} {
		if err := s.Register("noop", "* * * * * *", noop); err != nil {
			t.Fatal(err)
		}
		if err := s.Register("free", "* * * * * *", noop, AllowOverlap()); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(who string, cnt *rlCounter, wantTotal, wantNoscript int) {
		t.Helper()
		total, noscript, extend, names := classify(cnt.take())
		if total != wantTotal || noscript != wantNoscript || extend != 0 {
			t.Errorf("%s: %d round trips %v (%d NOSCRIPT, %d extensions), want %d (%d NOSCRIPT)",
				who, total, names, noscript, extend, wantTotal, wantNoscript)
		} else {
			t.Logf("%s: %d round trips %v", who, total, names)
		}
	}
	tick := t0
	for i := range 3 {
		tick = tick.Add(time.Second)
		if rep := tickAt(t, a, "noop", tick); rep.Outcome() != "done" {
			t.Fatal(rep)
		}
		if i == 0 { // first use of the two scripts on this Redis: EVALSHA, NOSCRIPT, EVAL
			expect("winner on a fresh Redis", cntA, 2+2, 2)
		} else {
			expect("winner", cntA, 2, 0)
		}
		for _, s := range []*Scheduler{b, c} {
			if rep := tickAt(t, s, "noop", tick); skipOf(rep) != "tick_taken" {
				t.Fatal(rep)
			}
		}
		expect("loser b", cntB, 1, 0)
		expect("loser c", cntC, 1, 0)
	}
	// The other instance wins: the scripts are cached server-side already.
	tick = tick.Add(time.Second)
	tickAt(t, b, "noop", tick)
	expect("winner (other instance)", cntB, 2, 0)
	// AllowOverlap: the claim only, no lock.
	tickAt(t, c, "free", tick)
	expect("AllowOverlap winner", cntC, 1, 0)
	// Manual: lock (a script of its own, new to this Redis) and release.
	if _, err := a.RunManually(context.Background(), "noop"); err != nil {
		t.Fatal(err)
	}
	expect("manual run", cntA, 2+1, 1)

	// The loser, by Redis's own count: one script call that writes nothing.
	tick = tick.Add(time.Second)
	tickAt(t, a, "noop", tick)
	cntA.take()
	if err := srv.Client(t).ConfigResetStat(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	tickAt(t, b, "noop", tick)
	stats := srv.Client(t).Info(context.Background(), "commandstats").Val()
	var lines []string
	for line := range strings.SplitSeq(stats, "\n") {
		if strings.HasPrefix(line, "cmdstat_") && !strings.HasPrefix(line, "cmdstat_config") &&
			!strings.HasPrefix(line, "cmdstat_info") && !strings.HasPrefix(line, "cmdstat_hello") &&
			!strings.HasPrefix(line, "cmdstat_client") && !strings.HasPrefix(line, "cmdstat_ping") {
			lines = append(lines, strings.TrimSpace(line))
		}
	}
	slices.Sort(lines)
	want := []string{"cmdstat_evalsha:calls=1,", "cmdstat_get:calls=1,", "cmdstat_hmget:calls=1,", "cmdstat_time:calls=1,"} // GET, HMGET and TIME inside the script
	if len(lines) != len(want) {
		t.Errorf("INFO commandstats for a loser: %v, want %v", lines, want)
	}
	for i := range min(len(lines), len(want)) {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("INFO commandstats for a loser: %v, want %v", lines, want)
		}
	}
	cntB.take()

	// A long run: one more round trip per extension, nothing else.
	slow := JobFunc(func(context.Context) error { time.Sleep(time.Second); return nil })
	if err := a.Register("slow", "* * * * * *", slow, LockTTL(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	tickAt(t, a, "slow", tick)
	total, noscript, extend, names := classify(cntA.take())
	t.Logf("1s run, TTL 300ms: %d round trips, %d extensions, %d NOSCRIPT: %v", total, extend, noscript, names)
	if extend < 6 || noscript > 1 || total != 2+extend+noscript {
		t.Errorf("long run: %d round trips, want 2 + %d extensions (+%d NOSCRIPT for the first)", total, extend, noscript)
	}
}

// With Redlock, per server: the claim on every server in turn (a server
// past the majority that holds the tick still loses it), then the lock and
// its release on every server.
func TestRedisRoundTripsRedlock(t *testing.T) {
	rlLeakCheck(t)
	var ca, cb []redis.UniversalClient
	var cnts, cntsB []*rlCounter
	for range 3 {
		srv := redistest.Start(t)
		c, cnt := rlCountingClient(t, srv)
		ca, cnts = append(ca, c), append(cnts, cnt)
		c, cnt = rlCountingClient(t, srv)
		cb, cntsB = append(cb, c), append(cntsB, cnt)
	}
	la := rlQuorum(t, ca)
	a, _ := rlSched(t, "a", la)
	b, _ := rlSched(t, "b", rlQuorum(t, cb))
	noop := JobFunc(func(context.Context) error { return nil })
	a.Register("noop", "@every 1h", noop)
	b.Register("noop", "@every 1h", noop)
	// Load the scripts on every server.
	for _, c := range ca {
		ctx := context.Background()
		for _, sc := range []*redis.Script{claimScript, acquireScript} {
			if err := sc.Load(ctx, c).Err(); err != nil {
				t.Fatal(err)
			}
		}
		for _, sc := range []string{touchScript.Src, deleteScript.Src} {
			if err := c.ScriptLoad(ctx, sc).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, cnt := range cnts {
		cnt.take()
	}
	if rep := tickAt(t, a, "noop", t0.Add(time.Hour)); rep.Outcome() != "done" {
		t.Fatal(rep)
	}
	la.drain() // lock and release calls to the last server may still be on their way
	for i, cnt := range cnts {
		total, _, _, names := classify(cnt.take())
		want := []string{"evalsha", "evalsha", "evalsha"} // claim (on every server), lock, release
		if !slices.Equal(names, want) {
			t.Errorf("server %d: %d round trips %v, want %v", i, total, names, want)
		}
		t.Logf("winner, server %d: %v", i, names)
	}
	if rep := tickAt(t, b, "noop", t0.Add(time.Hour)); skipOf(rep) != "tick_taken" {
		t.Fatal(rep)
	}
	for i, cnt := range cntsB {
		if total, _, _, names := classify(cnt.take()); total > 1 || i > 0 && total > 0 {
			t.Errorf("loser, server %d: %d round trips %v, want 1 on the first server only", i, total, names)
		}
	}
}
