package cronguard

import (
	"context"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// A new subscription whose connection hangs while it is made (its
// handshake unanswered, as behind a firewall that lets established
// connections be but stalls new ones) holds go-redis's PubSub lock until
// the client's own timeout, here 10s. The switch must not wait for it:
// while the subscription is being remade, flags are still re-read from
// the hash every 500ms, so a flip is seen within the stated 2s, not when
// the dial gives up.
func TestRedisKillSwitchHangingDialStillPolls(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	opts := proxy.Options()
	opts.ReadTimeout, opts.DialTimeout = 10*time.Second, 10*time.Second
	rdb := redis.NewClient(opts)
	t.Cleanup(func() { _ = rdb.Close() })
	k, err := NewRedisKillSwitch(rdb, WithLogger(ksQuiet), redisResync(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	other := ksNew(t, srv)
	ksLoaded(t, k, other)
	ctx := context.Background()

	// The next connection to say HELLO is the subscription's, made again
	// after its connection is killed: its handshake is held.
	seen, release := proxy.StallNext("HELLO")
	t.Cleanup(release)
	if err := srv.Client(t).Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription was not made again")
	}
	time.Sleep(ksPingEvery + ksCheckEvery) // the health check PINGs the subscription whose dial hangs
	flip := time.Now()
	if err := other.SetEnabled(ctx, "emails", false, "while the subscription is being made"); err != nil {
		t.Fatal(err)
	}
	// Enabled answers from the hash, with an error that says the
	// subscription is not live; the job is skipped as killed.
	took := waitFor(t, 8*time.Second, "the flip seen while the dial hangs", func() bool {
		on, _ := k.Enabled(ctx, "emails")
		return !on
	})
	t.Logf("flip seen %s after it was made, the subscription's dial still hanging (bound 2s)", took)
	if d := time.Since(flip); d > 3*time.Second {
		t.Fatalf("flip seen after %s: the polling waited for the dial", d)
	}
	if _, err := k.Enabled(ctx, "emails"); err == nil {
		t.Fatal("Enabled has no error while the subscription is not live")
	}

	// The handshake is answered: the switch subscribes again and flips
	// arrive by message.
	release()
	ksLoaded(t, k)
	if err := other.SetEnabled(ctx, "emails", true, "fixed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "flip by message after recovery", ksIs(k, "emails", true))
}
