package cronguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Tests of the claim mark, the one-round-trip claim and lock, lost replies
// and hostile values on real redis-server processes.

// A won tick whose lock is held (a run of an earlier tick still goes
// elsewhere) moves the mark all the same and is skipped as locked; the same
// tick is then taken for everyone.
func TestRedisClaimWonButLocked(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	holder := rlLocker(t, c, WithInstanceID("web-1"))
	lease, err := holder.Acquire(ctx, "j", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	l := rlLocker(t, c, WithInstanceID("web-2"))
	cl, err := l.Claim(ctx, "j", t0, 10*time.Second, "web-2")
	if err != nil || !cl.Won || cl.Lease != nil || !errors.Is(cl.LockErr, ErrLocked) || !strings.Contains(cl.LockErr.Error(), `"web-1"`) {
		t.Fatalf("claim while locked = %+v, %v; want won, LockErr ErrLocked naming web-1", cl, err)
	}
	if by := c.HGet(ctx, "cronguard:claim:{j}", "by").Val(); by != "web-2" {
		t.Errorf("mark by %q, want web-2: a won tick moves the mark even when locked", by)
	}
	if cl, _ := holder.Claim(ctx, "j", t0, 10*time.Second, "web-1"); cl.Won || cl.Holder != "web-2" {
		t.Errorf("the same tick again = %+v, want taken by web-2", cl)
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// The lock a scheduled claim takes lives for the job's LockTTL, and the
// mark holds the tick and the instance.
func TestRedisClaimTTLAndMarkFromScheduler(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	s, _ := rlSched(t, "web-9", rlLocker(t, c))
	var pttl time.Duration
	var mark map[string]string
	job := JobFunc(func(context.Context) error {
		pttl = c.PTTL(ctx, "cronguard:lock:{ttl}").Val()
		mark = c.HGetAll(ctx, "cronguard:claim:{ttl}").Val()
		return nil
	})
	if err := s.Register("ttl", "@every 1m", job, LockTTL(7*time.Second)); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s, "ttl", t0); rep.Outcome() != "done" {
		t.Fatal(rep)
	}
	if pttl <= 6*time.Second || pttl > 7*time.Second {
		t.Errorf("lock PTTL during the run = %s, want about the 7s LockTTL", pttl)
	}
	if mark["tick"] != fmtTick(t0) || mark["by"] != "web-9" || mark["s"] != strconv.FormatInt(t0.Unix(), 10) {
		t.Errorf("claim mark = %v", mark)
	}
}

// go-redis re-sends a command after a read timeout. Redis, frozen past the
// timeout, then runs the claim twice: the re-sent claim is recognised as
// the same attempt, won and locked, not "claimed by" its own instance.
func TestRedisClaimResentAfterReadTimeout(t *testing.T) {
	rlLeakCheck(t)
	srv := redistest.Start(t)
	opts := srv.Options()
	opts.ReadTimeout = 200 * time.Millisecond
	opts.MaxRetries = 3
	opts.MinRetryBackoff, opts.MaxRetryBackoff = 10*time.Millisecond, 20*time.Millisecond
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	check := srv.Client(t)
	ctx := context.Background()
	l := rlLocker(t, c, WithInstanceID("web-1"), WithCallBudget(5*time.Second))
	if _, err := l.Claim(ctx, "warm", t0, time.Second, "web-1"); err != nil { // scripts loaded, connection made
		t.Fatal(err)
	}
	evalshaCalls := func() int {
		for line := range strings.SplitSeq(check.Info(ctx, "commandstats").Val(), "\n") {
			if v, ok := strings.CutPrefix(line, "cmdstat_evalsha:calls="); ok {
				n, _ := strconv.Atoi(v[:strings.IndexByte(v, ',')])
				return n
			}
		}
		return 0
	}
	for _, withLock := range []bool{true, false} {
		ttl := time.Duration(0)
		if withLock {
			ttl = 30 * time.Second
		}
		// The re-send must reach Redis after it thaws (go-redis gives up
		// when the new connection's handshake times out too): thaw between
		// the first timeout (200ms) and the re-send's (about 410ms). On a
		// busy machine that may miss; try again.
		for try := 0; ; try++ {
			job := fmt.Sprintf("resent-%t-%d", withLock, try)
			check.ConfigResetStat(ctx)
			srv.Pause(t)
			res := goAsync(func() error {
				cl, err := l.Claim(ctx, job, t0, ttl, "web-1")
				switch {
				case err != nil:
					return err
				case !cl.Won || cl.LockErr != nil || withLock != (cl.Lease != nil):
					return fmt.Errorf("claim = %+v", cl)
				case withLock:
					if v := check.Get(ctx, "cronguard:lock:{"+job+"}").Val(); v != cl.Lease.(*redisLease).value {
						return fmt.Errorf("lock value %q, lease value %q", v, cl.Lease.(*redisLease).value)
					}
					return cl.Lease.Release(ctx)
				}
				return nil
			})
			time.Sleep(300 * time.Millisecond)
			srv.Continue(t)
			err := recv(t, res)
			if n := evalshaCalls(); n < 2 {
				if try < 5 {
					t.Logf("lock %t: the claim ran %d time(s) (%v): try again", withLock, n, err)
					continue
				}
				t.Fatalf("lock %t: the claim never ran twice", withLock)
			}
			if err != nil {
				t.Errorf("lock %t: a claim re-sent after a read timeout: %v", withLock, err)
			}
			if withLock && check.Exists(ctx, "cronguard:lock:{"+job+"}").Val() != 0 {
				t.Error("the lock is still there after Release")
			}
			break
		}
	}
}

// A lock or claim call times out past the call budget while Redis runs
// it: Redis frozen (SIGSTOP) and then resumed, or, through redistest's
// proxy, Redis runs every command at once but its replies are held
// (stall) or lost (drop), as a congested network or a stalled proxy does.
// The lock that the timed-out call set is this process's (its attempt
// value), deleted after the timeout or freed by the next call: the manual
// run and the tick after the fault run, instead of finding "their own"
// lock.
func TestRedisTimedOutLockLeavesNoOrphan(t *testing.T) {
	for _, mode := range []string{"pause", "stall", "drop"} {
		t.Run(mode, func(t *testing.T) {
			rlLeakCheck(t)
			srv := redistest.Start(t)
			opts := srv.Options()
			var proxy *redistest.Proxy
			if mode != "pause" {
				proxy = redistest.StartProxy(t, srv.Addr())
				opts = proxy.Options()
				opts.MaxRetries = -1
			} // else go-redis's retries re-send the calls that timed out: Redis runs them twice
			opts.ContextTimeoutEnabled = true
			c := redis.NewClient(opts)
			t.Cleanup(func() { c.Close() })
			check := srv.Client(t) // straight to Redis
			ctx := context.Background()
			fault := map[string]func(){"pause": func() { srv.Pause(t) }, "stall": func() { proxy.Stall() }, "drop": func() { proxy.Drop() }}[mode]
			resume := func() {
				if proxy != nil {
					proxy.Resume()
					return
				}
				srv.Continue(t)
				if err := check.Ping(ctx).Err(); err != nil { // Redis has run what it had queued
					t.Fatal(err)
				}
			}
			const budget = 300 * time.Millisecond
			s, _ := rlSched(t, "web-1", rlLocker(t, c, WithCallBudget(budget), WithInstanceID("web-1")), WithCallBudget(budget))
			runs, tick := 0, t0
			if err := s.Register("j", "@every 1m", JobFunc(func(context.Context) error { runs++; return nil })); err != nil {
				t.Fatal(err)
			}
			nextTick := func() time.Time { tick = tick.Add(time.Minute); return tick }
			tickAt(t, s, "j", nextTick()) // scripts loaded
			if _, err := s.RunManually(ctx, "j"); err != nil {
				t.Fatal(err)
			}
			for i, run := range []func() Report{
				func() Report { r, _ := s.RunManually(ctx, "j"); return r },
				func() Report { return tickAt(t, s, "j", nextTick()) },
			} {
				fault()
				if rep := run(); skipOf(rep) != "backend" {
					t.Fatalf("case %d: run with Redis's replies held (%s): %+v, want a backend skip", i, mode, rep)
				}
				resume()
				before := runs
				if rep := run(); rep.Outcome() != "done" || runs != before+1 {
					t.Fatalf("case %d: the run after the %s: %+v; the timed-out call's lock blocked it", i, mode, rep)
				}
				if n := check.Exists(ctx, "cronguard:lock:{j}").Val(); n != 0 {
					t.Errorf("case %d: a lock is left: %q", i, check.Get(ctx, "cronguard:lock:{j}").Val())
				}
			}
		})
	}
}

// A lock holding a value this process abandoned is its own orphan: its next
// lock or claim takes it over or frees it; another process finds it held.
func TestRedisAbandonedLockTakenOver(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	const key = "cronguard:lock:{j}"
	me := rlLocker(t, c, WithInstanceID("me"))
	other := rlLocker(t, c, WithInstanceID("other"))

	me.abandoned.add("j", "me/lost-1")
	c.Set(ctx, key, "me/lost-1", time.Minute)
	if _, err := other.Acquire(ctx, "j", time.Second); !errors.Is(err, ErrLocked) {
		t.Fatalf("another process over the orphan: %v, want ErrLocked", err)
	}
	lease, err := me.Acquire(ctx, "j", time.Second)
	if err != nil {
		t.Fatalf("Acquire over this process's orphan: %v", err)
	}
	_ = lease.Release(ctx)

	me.abandoned.add("j", "me/lost-2")
	c.Set(ctx, key, "me/lost-2", time.Minute)
	cl, err := me.Claim(ctx, "j", t0, time.Second, "me")
	if err != nil || !cl.Won || cl.Lease == nil {
		t.Fatalf("claim over this process's orphan = %+v, %v", cl, err)
	}
	_ = cl.Lease.Release(ctx)

	// Even a lost claim frees it.
	me.abandoned.add("j", "me/lost-3")
	c.Set(ctx, key, "me/lost-3", time.Minute)
	if cl, err := me.Claim(ctx, "j", t0, time.Second, "me"); err != nil || cl.Won {
		t.Fatalf("claim of a taken tick = %+v, %v", cl, err)
	}
	if n := c.Exists(ctx, key).Val(); n != 0 {
		t.Error("a lost claim left this process's orphan in place")
	}
	for i := range 2 * maxAbandoned {
		me.abandoned.add("j", fmt.Sprint("v", i))
	}
	if n := len(me.abandoned.list("j")); n != maxAbandoned {
		t.Errorf("%d abandoned values kept, want %d", n, maxAbandoned)
	}
}

// Fencing tokens never repeat past 2^53 (Lua numbers are doubles), and a
// lock or claim refused by the fence (at 2^63-1, or of the wrong type)
// leaves neither a lock nor a moved mark behind.
func TestRedisFenceNeverRepeats(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	l := rlLocker(t, c)
	const fence, lock, mark = "cronguard:fence:{f}", "cronguard:lock:{f}", "cronguard:claim:{f}"
	c.Set(ctx, fence, int64(1)<<62, 0)
	last := int64(1) << 62
	for i := range 4 {
		lease, err := l.Acquire(ctx, "f", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if lease.Token() != last+1 {
			t.Fatalf("acquisition %d: token %d after %d", i, lease.Token(), last)
		}
		last = lease.Token()
		_ = lease.Release(ctx)
	}
	cl, err := l.Claim(ctx, "f", t0, time.Second, "a")
	if err != nil || cl.Lease.Token() != last+1 {
		t.Fatalf("claim: %+v, %v; want token %d", cl, err, last+1)
	}
	_ = cl.Lease.Release(ctx)

	for name, set := range map[string]func(){
		"2^63-1":     func() { c.Set(ctx, fence, int64(math.MaxInt64), 0) },
		"wrong type": func() { c.Del(ctx, fence); c.HSet(ctx, fence, "x", 1) },
	} {
		set()
		if lease, err := l.Acquire(ctx, "f", time.Second); err == nil || errors.Is(err, ErrLocked) {
			t.Errorf("%s: Acquire = %v, %v; want the server's error", name, lease, err)
		} else {
			t.Logf("%s: %v", name, err)
		}
		if c.Exists(ctx, lock).Val() != 0 {
			t.Errorf("%s: a failed Acquire left a lock", name)
		}
		if cl, err := l.Claim(ctx, "f", t0.Add(time.Hour), time.Second, "b"); err == nil {
			t.Errorf("%s: Claim = %+v, want the server's error", name, cl)
		}
		if c.Exists(ctx, lock).Val() != 0 || c.HGet(ctx, mark, "by").Val() != "a" {
			t.Errorf("%s: a failed claim left a lock or moved the mark: %v", name, c.HGetAll(ctx, mark).Val())
		}
	}
}

// Values read from Redis are cut to a bounded length in errors: a 1 MiB
// lock holder does not make a 1 MiB ErrLocked, nor a 1 MiB mark holder a
// 1 MiB skip.
func TestRedisHugeHolderClipped(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	huge := strings.Repeat("é", 1<<19) // 1 MiB, cut on a rune boundary
	c.Set(ctx, "cronguard:lock:{h}", huge+"/x", time.Minute)
	_, err := rlLocker(t, c).Acquire(ctx, "h", time.Second)
	if !errors.Is(err, ErrLocked) || len(err.Error()) > 1000 {
		t.Errorf("ErrLocked of %d bytes (want < 1000): %.300s", len(err.Error()), err)
	}
	c.HSet(ctx, "cronguard:claim:{h}", "s", t0.Unix(), "n", 0, "by", huge)
	if cl, err := rlLocker(t, c).Claim(ctx, "h", t0, 0, "a"); err != nil || len(cl.Holder) > 300 {
		t.Errorf("Claim.Holder of %d bytes (want < 300), %v", len(cl.Holder), err)
	}
	s, _ := rlSched(t, "a", rlLocker(t, c))
	_ = s.Register("h", "@every 1m", JobFunc(func(context.Context) error { return nil }))
	rep := tickAt(t, s, "h", t0)
	if skipOf(rep) != "tick_taken" || len(rep.Err.Error()) > 1000 || !strings.Contains(rep.Err.Error(), "bytes)") {
		t.Errorf("tick_taken of %d bytes (want < 1000): %.300s", len(rep.Err.Error()), rep.Err)
	}
}

// On a one-node Cluster the scripts that touch a job's claim mark, lock
// and fence (one hash slot) work, for every job name: names with braces
// (which make Cluster hash tags) and the empty name too, each job's keys in
// one slot, no two jobs sharing a key.
func TestRedisOddJobNamesOnCluster(t *testing.T) {
	rlLeakCheck(t)
	cluster := redistest.StartCluster(t, 1)
	ctx := context.Background()
	admin := cluster.Nodes()[0].Client(t)
	cc := cluster.ClusterClient(t)
	jobs := []string{"billing", "}x", "{a}", "%7Ba%7D", "a{b", "a}b{", ""}
	for _, prefix := range []string{"cronguard:", "{svc}:"} {
		l := rlLocker(t, cc, WithKeyPrefix(prefix))
		for _, job := range jobs {
			cl, err := l.Claim(ctx, job, t0, time.Minute, "a")
			if err != nil || !cl.Won || cl.Lease == nil {
				t.Fatalf("prefix %q, job %q: claim = %+v, %v", prefix, job, cl, err)
			}
			if err := cl.Lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
			lease, err := l.Acquire(ctx, job, time.Minute)
			if err != nil {
				t.Fatalf("prefix %q, job %q: Acquire: %v", prefix, job, err)
			}
			if _, err := l.Acquire(ctx, job, time.Minute); !errors.Is(err, ErrLocked) {
				t.Fatalf("prefix %q, job %q: second Acquire: %v, want ErrLocked", prefix, job, err)
			}
			if err := lease.Extend(ctx, time.Minute); err != nil {
				t.Fatal(err)
			}
			if err := lease.Release(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(admin.Keys(ctx, "*claim*").Val()); n != 2*len(jobs) {
		t.Errorf("%d claim marks for %d jobs under 2 prefixes: %v", n, len(jobs), admin.Keys(ctx, "*claim*").Val())
	}
}

// rlRedlock starts three servers and returns them with a Redlock locker
// over them.
func rlRedlock(t *testing.T, opts ...Option) ([]*redistest.Server, []*redis.Client, *redisLocker) {
	t.Helper()
	var srvs []*redistest.Server
	var cs []*redis.Client
	for range 3 {
		srv := redistest.Start(t)
		o := srv.Options()
		o.ContextTimeoutEnabled = true
		c := redis.NewClient(o)
		t.Cleanup(func() { c.Close() })
		srvs, cs = append(srvs, srv), append(cs, c)
	}
	return srvs, cs, rlQuorum(t, []redis.UniversalClient{cs[0], cs[1], cs[2]}, opts...)
}

// Redlock Extend really extends on the servers: a job that outlives
// several TTLs keeps the lock, with the same value, on every server.
func TestRedisRedlockExtendReallyExtends(t *testing.T) {
	rlLeakCheck(t)
	srvs, cs, l := rlRedlock(t)
	ctx := context.Background()
	const ttl = 600 * time.Millisecond
	const key = "cronguard:lock:{ext}"
	s, rec := rlSched(t, "a", l)
	started := make(chan struct{})
	job := JobFunc(func(ctx context.Context) error {
		close(started)
		select {
		case <-time.After(4 * ttl):
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
	if err := s.Register("ext", "@every 1m", job, LockTTL(ttl)); err != nil {
		t.Fatal(err)
	}
	rep := goAsync(func() Report { return tickAt(t, s, "ext", t0) })
	<-started
	value := cs[0].Get(ctx, key).Val()
	samples := 0
	for deadline := time.Now().Add(3 * ttl); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for i, c := range cs {
			v, pttl := c.Get(ctx, key).Val(), c.PTTL(ctx, key).Val()
			if v != value || pttl <= 0 || pttl > ttl {
				t.Fatalf("server %d (%s), %d samples in: lock %q, PTTL %s; want %q extended", i, srvs[i].Addr(), samples, v, pttl, value)
			}
		}
		samples++
	}
	if r := recv(t, rep); r.Outcome() != "done" {
		t.Fatalf("run: %+v", r)
	}
	l.drain()
	for i, c := range cs {
		if c.Exists(ctx, key).Val() != 0 {
			t.Errorf("server %d: lock left after the run", i)
		}
	}
	if n := len(rec.kind(EventLockLost)); n != 0 {
		t.Errorf("%d lock_lost events", n)
	}
}

// The Redlock fencing token is the largest one the granting servers
// issued.
func TestRedisRedlockTokenIsLargest(t *testing.T) {
	rlLeakCheck(t)
	_, cs, l := rlRedlock(t)
	ctx := context.Background()
	const fence = "cronguard:fence:{tok}"
	const high = int64(1e17)
	// Any majority holds a server with the high counter; the third has
	// only its clock (about 1.8e15 µs).
	cs[1].Set(ctx, fence, high, 0)
	cs[2].Set(ctx, fence, high, 0)
	last := high
	for i := range 12 {
		lease, err := l.Acquire(ctx, "tok", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if lease.Token() <= last {
			t.Fatalf("acquisition %d: token %d, want above %d: the largest granted", i, lease.Token(), last)
		}
		last = lease.Token()
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		l.drain()
	}
}

// Stop with one of three Redlock servers frozen: ticks still run (the
// majority answers), and once Stop returns no goroutine is left, though
// the calls to the frozen server had not ended when the runs did.
func TestRedisRedlockStopWithFrozenServer(t *testing.T) {
	rlLeakCheck(t)
	srvs, _, l := rlRedlock(t, WithCallBudget(2*time.Second))
	before := goleak.IgnoreCurrent()
	rec := &recorder{}
	s, err := New(WithLocker(l), WithInstanceID("a"), WithLogger(slog.New(slog.DiscardHandler)), WithObserver(rec.observe), WithLocation(time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Register("frozen", "@every 1m", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	srvs[1].Pause(t)
	for i := range 2 {
		if rep := tickAt(t, s, "frozen", t0.Add(time.Duration(i)*time.Minute)); rep.Outcome() != "done" {
			t.Fatalf("tick %d with one server frozen: %+v", i, rep)
		}
	}
	if _, err := s.RunManually(context.Background(), "frozen"); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, before)
	srvs[1].Continue(t)
}

// Redlock: a server slow at claim time (it never got the mark), then
// another losing its data (a restart without persistence): one fault at a
// time, a minority each. A late instance must still find the tick taken,
// on the server that kept it.
func TestRedisRedlockClaimSurvivesOneServerLosingData(t *testing.T) {
	srvs, cs, x := rlRedlock(t, WithInstanceID("x"), WithCallBudget(600*time.Millisecond))
	ctx := context.Background()
	srvs[1].Pause(t)
	c1, err := x.Claim(ctx, "j", t0, 0, "x")
	srvs[1].Continue(t)
	if err != nil || !c1.Won {
		t.Fatalf("x: %+v %v", c1, err)
	}
	cs[0].FlushAll(ctx)
	y := rlQuorum(t, []redis.UniversalClient{cs[0], cs[1], cs[2]}, WithInstanceID("y"))
	c2, err := y.Claim(ctx, "j", t0, 0, "y")
	if err == nil && c2.Won {
		t.Fatalf("tick %s won twice: x, then y after server 0 lost its data (%+v)", fmtTick(t0), c2)
	}
}

// One instance whose clock jumped a day ahead claims a tick of tomorrow:
// the mark must not make every other instance skip every tick until then.
// Ticks of the future themselves are still claimed against the mark.
func TestRedisWildMarkDoesNotStopTheFleet(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Minute)
	wild := rlLocker(t, c, WithInstanceID("wild"))
	tomorrow := now.Add(24 * time.Hour)
	if cl, err := wild.Claim(ctx, "j", tomorrow, 0, "wild"); err != nil || !cl.Won {
		t.Fatal(cl, err)
	}
	if cl, err := wild.Claim(ctx, "j", tomorrow, 0, "wild-2"); err != nil || cl.Won {
		t.Fatalf("the same future tick claimed again: %+v %v; want taken", cl, err)
	}
	ok := rlLocker(t, c, WithInstanceID("web-1"))
	for i := 1; i <= 5; i++ {
		cl, err := ok.Claim(ctx, "j", now.Add(time.Duration(i)*time.Minute), 0, "web-1")
		if err != nil || !cl.Won {
			t.Fatalf("tick %d of the present behind a mark a day ahead: %+v %v; want won", i, cl, err)
		}
	}
}

// A claim mark whose fields are not integers (a hand edit, another
// program) is refused before anything is written: no instance is told the
// tick is taken by one that did not run it.
func TestRedisGarbageClaimMarkWritesNothing(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	for _, fields := range [][]any{{"s", "1.5", "n", "0"}, {"s", "1e9", "n", "0"}, {"s", "x", "n", "0"}} {
		c.Del(ctx, "cronguard:claim:{j}", "cronguard:lock:{j}")
		c.HSet(ctx, "cronguard:claim:{j}", fields...)
		l := rlLocker(t, c, WithInstanceID("web-1"))
		if _, err := l.Claim(ctx, "j", t0, 10*time.Second, "web-1"); err == nil {
			t.Errorf("mark %v: claim succeeded; want an error", fields)
		}
		if got := c.HGet(ctx, "cronguard:claim:{j}", "by").Val(); got != "" {
			t.Errorf("mark %v: the failed claim wrote by=%q", fields, got)
		}
		if n := c.Exists(ctx, "cronguard:lock:{j}").Val(); n != 0 {
			t.Errorf("mark %v: the failed claim left a lock", fields)
		}
	}
}

// Two prefixes never map to the same keys, escaped or not.
func TestEscapedPrefixesStayApart(t *testing.T) {
	if a, b := escapePrefix("x{"), escapePrefix("x%7B"); a == b {
		t.Fatalf("prefixes %q and %q both escape to %q", "x{", "x%7B", a)
	}
}

// A server error that go-redis retries on (a failover, a server loading)
// may follow a first try that ran: the attempt counts as maybe-run, its
// lock is deleted if it holds the attempt's value; a script's own error
// does not.
func TestRetriedServerErrorsMayHaveRun(t *testing.T) {
	for msg, want := range map[string]bool{
		"LOADING Redis is loading the dataset in memory":             true,
		"READONLY You can't write against a read only replica.":      true,
		"MASTERDOWN Link with MASTER is down":                        true,
		"ERR Error running script: cronguard: unreadable claim mark": false,
		"WRONGTYPE Operation against a key holding the wrong kind":   false,
	} {
		if got := replyLost(redisError(msg)); got != want {
			t.Errorf("replyLost(%q) = %t, want %t", msg, got, want)
		}
	}
}

// redisError is a server error reply as go-redis returns it.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}
