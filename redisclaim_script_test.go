package cronguard

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tests of what the claim and lock scripts cost Redis (the commands they
// run) and of the fencing token's edges: the counter near and past 2^53,
// ahead of the clock, negative, or not a counter at all.

// scriptCommands returns how many times each data command ran on c since
// the last CONFIG RESETSTAT, from INFO commandstats (scripts' commands
// included; the scripts themselves and CONFIG, INFO left out).
func scriptCommands(t *testing.T, c *redis.Client) map[string]int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(line, "cmdstat_")
		if !ok {
			continue
		}
		name, stats, _ := strings.Cut(rest, ":")
		if name == "evalsha" || name == "eval" || name == "info" || strings.HasPrefix(name, "config") {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(stats, "calls="), ",")
		got[name], _ = strconv.Atoi(calls)
	}
	return got
}

// The scripts run each Redis command they need once: one TIME per script,
// and none where the answer does not need the clock; the fence's INCR
// reply is used as it is (no GET) below 2^53, and its SET only when the
// clock is ahead of the counter. Before, a winning claim ran TIME twice and
// GET twice (10 commands, 7 now).
func TestRedisScriptCommandCounts(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	l := rlLocker(t, c)
	tick := t0
	next := func() time.Time { tick = tick.Add(time.Second); return tick }
	// The marks, fences and scripts exist, as in a running service.
	for _, job := range []string{"j", "nolock"} {
		cl, err := l.Claim(ctx, job, next(), time.Minute, "a")
		if err != nil || cl.Lease == nil {
			t.Fatal(cl, err)
		}
		_ = cl.Lease.Release(ctx)
	}
	measure := func(name string, want map[string]int, op func() error) {
		t.Helper()
		if err := c.ConfigResetStat(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := op(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := scriptCommands(t, c); !maps.Equal(got, want) {
			t.Errorf("%s ran %v; want %v", name, got, want)
		}
	}
	var lease Lease
	measure("a winning claim with the lock", map[string]int{"time": 1, "get": 1, "hmget": 1, "incr": 1, "set": 2, "hset": 1}, func() error {
		cl, err := l.Claim(ctx, "j", next(), time.Minute, "a")
		lease = cl.Lease
		return errors.Join(err, cl.LockErr)
	})
	measure("its release", map[string]int{"get": 1, "del": 1}, func() error { return lease.Release(ctx) })
	measure("a winning claim without lock", map[string]int{"hmget": 1, "hset": 1}, func() error {
		_, err := l.Claim(ctx, "nolock", next(), 0, "a")
		return err
	})
	c.HSet(ctx, "cronguard:claim:{wild}", "s", time.Now().Add(48*time.Hour).Unix(), "n", 0, "by", "wild", "att", "x")
	measure("a winning claim behind a wild mark", map[string]int{"time": 1, "get": 1, "hmget": 1, "incr": 1, "set": 2, "hset": 1}, func() error {
		cl, err := l.Claim(ctx, "wild", time.Now().Truncate(time.Second), time.Minute, "a")
		if err == nil && cl.Lease == nil {
			err = fmt.Errorf("claim %+v: want won with the lock", cl)
		}
		return err
	})
	measure("a lost claim", map[string]int{"time": 1, "get": 1, "hmget": 1}, func() error {
		cl, err := l.Claim(ctx, "j", tick.Add(-time.Second), time.Minute, "b")
		if err == nil && cl.Won {
			err = errors.New("won a tick behind the mark")
		}
		return err
	})
	measure("an acquisition", map[string]int{"time": 1, "get": 1, "incr": 1, "set": 2}, func() error {
		lease2, err := l.Acquire(ctx, "j", time.Minute)
		lease = lease2
		return err
	})
	_ = lease.Release(ctx)
	c.Set(ctx, "cronguard:fence:{j}", int64(1)<<62, 0)
	measure("an acquisition past 2^53", map[string]int{"time": 1, "get": 2, "incr": 1, "set": 1}, func() error {
		lease2, err := l.Acquire(ctx, "j", time.Minute)
		lease = lease2
		return err
	})
	_ = lease.Release(ctx)
}

// Around 2^53, where Lua's doubles stop being exact, tokens go on one by
// one: INCR's reply is used only below 2^53, the counter's exact text
// above. A counter ahead of the clock (below 2^53) grows by one and is not
// set back to the clock; a negative one jumps to the clock; one that is
// not a counter fails the lock and the claim before anything is written.
func TestRedisFenceEdges(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	l := rlLocker(t, c)
	const fence, lock, mark = "cronguard:fence:{f}", "cronguard:lock:{f}", "cronguard:claim:{f}"
	tick := t0
	take := func(claim bool) int64 {
		t.Helper()
		var lease Lease
		var err error
		if claim {
			tick = tick.Add(time.Second)
			var cl Claim
			cl, err = l.Claim(ctx, "f", tick, time.Minute, "a")
			lease, err = cl.Lease, errors.Join(err, cl.LockErr)
		} else {
			lease, err = l.Acquire(ctx, "f", time.Minute)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if got := c.Get(ctx, fence).Val(); got != strconv.FormatInt(lease.Token(), 10) {
			t.Fatalf("fence key %q after token %d", got, lease.Token())
		}
		return lease.Token()
	}

	const two53 = int64(1) << 53
	c.Set(ctx, fence, two53-3, 0)
	for i, want := range []int64{two53 - 2, two53 - 1, two53, two53 + 1, two53 + 2, two53 + 3} {
		if got := take(i%2 == 1); got != want {
			t.Fatalf("token %d: %d, want %d", i, got, want)
		}
	}

	c.Set(ctx, fence, int64(1)<<52, 0) // ahead of the clock (year 2112)
	if got := take(true); got != 1<<52+1 {
		t.Errorf("counter ahead of the clock: token %d, want %d", got, int64(1)<<52+1)
	}
	before := time.Now().UnixMicro()
	c.Set(ctx, fence, -5, 0)
	if got := take(false); got < before {
		t.Errorf("negative counter: token %d, want the clock (at least %d)", got, before)
	}
	c.Del(ctx, fence)
	if got := take(true); got < before {
		t.Errorf("no counter: token %d, want the clock (at least %d)", got, before)
	}

	by := c.HGet(ctx, mark, "by").Val()
	for _, bad := range []string{"12abc", "1e3", " 5", "007", "9223372036854775808"} {
		c.Set(ctx, fence, bad, 0)
		if lease, err := l.Acquire(ctx, "f", time.Minute); err == nil || errors.Is(err, ErrLocked) {
			t.Errorf("fence %q: Acquire = %v, %v; want the server's error", bad, lease, err)
		}
		if cl, err := l.Claim(ctx, "f", tick.Add(time.Hour), time.Minute, "b"); err == nil {
			t.Errorf("fence %q: Claim = %+v; want the server's error", bad, cl)
		}
		if c.Exists(ctx, lock).Val() != 0 || c.HGet(ctx, mark, "by").Val() != by || c.Get(ctx, fence).Val() != bad {
			t.Errorf("fence %q: a failed lock or claim wrote: lock %v, mark %v, fence %q", bad,
				c.Exists(ctx, lock).Val(), c.HGetAll(ctx, mark).Val(), c.Get(ctx, fence).Val())
		}
	}
}

// A mark far ahead of the server's clock does not hold back a claim that
// takes the lock either (the wild-mark check now runs only for a claim
// about to lose); a tick of the present behind it wins, with a token.
func TestRedisWildMarkWithLock(t *testing.T) {
	_, c := rlStart(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Minute)
	l := rlLocker(t, c)
	c.HSet(ctx, "cronguard:claim:{w}", "s", now.Add(48*time.Hour).Unix(), "n", 0, "by", "wild", "att", "x", "ps", 1, "pn", 0)
	cl, err := l.Claim(ctx, "w", now, time.Minute, "web-1")
	if err != nil || !cl.Won || cl.Lease == nil || cl.Lease.Token() < now.UnixMicro() || !cl.Prev.IsZero() {
		t.Fatalf("a tick of the present behind a wild mark: %+v, %v; want won with a token, no Prev", cl, err)
	}
	_ = cl.Lease.Release(ctx)
	if cl, err := l.Claim(ctx, "w", now.Add(-time.Minute), time.Minute, "web-2"); err != nil || cl.Won {
		t.Fatalf("a tick behind the (now sane) mark: %+v, %v; want taken", cl, err)
	}
}
