package cronguard

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// argsHook keeps the arguments and first key position of every command.
type argsHook struct {
	mu   sync.Mutex
	cmds [][]any
}

func (h *argsHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *argsHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.mu.Lock()
		h.cmds = append(h.cmds, append([]any(nil), cmd.Args()...))
		h.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (h *argsHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// The batcher builds the claim's and the release's EVALSHA itself, with the
// job's keys boxed once: the commands are exactly those go-redis's
// Script.EvalSha builds from the same keys and arguments (same values, same
// types, so the same bytes on the wire and the same Cluster slot), and so
// are the EVALs that follow a NOSCRIPT.
func TestRedisBatchedCommandsSameAsEvalSha(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	h := &argsHook{}
	c.AddHook(h)
	l := rlLocker(t, c)
	o := l.impl.(*oneServer)
	ctx := context.Background()
	tick := t0.Add(1500 * time.Millisecond)
	const value = "me/VALUE"
	l.abandoned.add("j{x}", "me/OLD") // an abandoned value goes on the end
	if _, err := o.claimBatched(ctx, "j{x}", tick, 30*time.Second, "me", value); err != nil {
		t.Fatal(err)
	}
	lease := o.newLease(o, "j{x}", o.lockKey("j{x}"), value, 1, 30*time.Second)
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	// A fresh server: each EVALSHA meets NOSCRIPT and is sent again as EVAL.
	pipe := c.Pipeline()
	claimKeys, claimArgs := l.claimKeys("j{x}"), l.claimArgs("j{x}", tick, 30*time.Second, "me", value)
	releaseKeys := []string{l.lockKey("j{x}")}
	want := [][]any{
		claimScript.EvalSha(ctx, pipe, claimKeys, claimArgs...).Args(),
		claimScript.Eval(ctx, pipe, claimKeys, claimArgs...).Args(),
		releaseScript.EvalSha(ctx, pipe, releaseKeys, value).Args(),
		releaseScript.Eval(ctx, pipe, releaseKeys, value).Args(),
	}
	var got [][]any
	h.mu.Lock()
	for _, cmd := range h.cmds {
		if cmd[0] == "evalsha" || cmd[0] == "eval" {
			got = append(got, cmd)
		}
	}
	h.mu.Unlock()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("commands sent:\n%#v\nwant (Script.EvalSha's):\n%#v", got, want)
	}
}

// newValue writes what owner + "/" + crypto/rand.Text() would: 26
// characters of the base32 alphabet after the owner, a new one each time.
func TestRedisNewValueAsRandText(t *testing.T) {
	l := &redisStore{owner: "i-1"}
	a, b := l.newValue(), l.newValue()
	for _, v := range []string{a, b} {
		if len(v) != len("i-1/")+26 || v[:4] != "i-1/" {
			t.Fatalf("value %q, want i-1/ and 26 characters", v)
		}
		for _, r := range v[4:] {
			if !(r >= 'A' && r <= 'Z' || r >= '2' && r <= '7') {
				t.Fatalf("value %q: %q is not in the base32 alphabet", v, r)
			}
		}
	}
	if a == b {
		t.Errorf("two values alike: %q", a)
	}
}

// Allocation budgets of the Redis locker's calls on the caller's side,
// with a context that never ends (direct calls on context.Background; the
// Scheduler's calls take its shared budget alike). They include go-redis's
// own allocations (about 12 per command on go-redis v9.23.0: the reply, the
// connection check, the Cmd). Before issue 8's client-side trim a lost
// claim allocated 37 objects and a won claim with its release 57; after,
// 23 and 31.
const (
	lostClaimAllocBudget = 25
	wonClaimAllocBudget  = 34
)

func TestAllocsPerRedisClaim(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own; scripts/test runs this test again without -race")
	}
	srv := redistest.Start(t)
	c := srv.Client(t)
	l := rlLocker(t, c)
	ctx := context.Background()
	taken := t0.Add(time.Hour)
	if _, err := l.Claim(ctx, "j", taken, 0, "other"); err != nil {
		t.Fatal(err)
	}
	lost := testing.AllocsPerRun(500, func() {
		if cl, err := l.Claim(ctx, "j", taken, 30*time.Second, "me"); err != nil || cl.Won {
			t.Fatalf("Claim: %+v, %v; want lost", cl, err)
		}
	})
	tick := taken
	won := testing.AllocsPerRun(500, func() {
		tick = tick.Add(time.Second)
		cl, err := l.Claim(ctx, "j", tick, 30*time.Second, "me")
		if err != nil || !cl.Won || cl.Lease == nil {
			t.Fatalf("Claim: %+v, %v; want won", cl, err)
		}
		if err := cl.Lease.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("a lost claim: %.1f allocations (budget %d); a won claim and its release: %.1f (budget %d)", lost, lostClaimAllocBudget, won, wonClaimAllocBudget)
	if lost > lostClaimAllocBudget {
		t.Errorf("a lost claim allocates %.1f objects, over its budget of %d", lost, lostClaimAllocBudget)
	}
	if won > wonClaimAllocBudget {
		t.Errorf("a won claim and its release allocate %.1f objects, over their budget of %d", won, wonClaimAllocBudget)
	}
}
