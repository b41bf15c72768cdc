package cronguard

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// A new subscription whose connection hangs while it is made (its
// handshake unanswered, as behind a firewall that lets established
// connections be but stalls new ones) holds go-redis's PubSub lock until
// the client's own timeout, here 10s. The switch must not wait for it:
// while the subscription is being remade, flags are still re-read from
// the hash every 500ms, so a flip is seen within the stated 2s, not when
// the dial gives up.
func TestRedisKillSwitchHangingDialStillPolls(t *testing.T) {
	srv, proxy, k := ksViaProxy(t, 10*time.Second, 10*time.Second, redisResync(time.Minute))
	other := ksNew(t, srv)
	ksLoaded(t, other)
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

// Close while the subscription's connection hangs as it is made: go-redis
// holds the PubSub's lock for the whole dial, so Close (and the goroutine
// closing a dropped subscription, and the pinger) wait for it, up to the
// client's read timeout (3s here), never longer, and leave no goroutine
// behind: while the subscription is the current one being made, while the
// pinger waits on it, and after the health check dropped it.
func TestRedisKillSwitchCloseWhileDialHangs(t *testing.T) {
	const timeout = 3 * time.Second
	for _, tc := range []struct {
		name  string
		after time.Duration // since the handshake is held
	}{{"current", 0}, {"pinging", 700 * time.Millisecond}, {"dropped", 2500 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			proxy := redistest.StartProxy(t, srv.Addr())
			killer := srv.Client(t)
			before := goleak.IgnoreCurrent()
			opts := proxy.Options()
			opts.ReadTimeout, opts.DialTimeout = timeout, timeout
			rdb := redis.NewClient(opts)
			k, err := NewRedisKillSwitch(rdb, WithLogger(ksQuiet))
			if err != nil {
				t.Fatal(err)
			}
			ksLoaded(t, k)
			seen, release := proxy.StallNext("HELLO")
			if err := killer.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-seen:
			case <-time.After(5 * time.Second):
				t.Fatal("the subscription was not made again")
			}
			time.Sleep(tc.after)
			start := time.Now()
			_ = k.Close()
			took := time.Since(start)
			ksNoGoroutineLeft(t)
			release()
			_ = rdb.Close()
			proxy.Close()
			t.Logf("Close took %s with the handshake held (client read timeout %s)", took, timeout)
			if took > timeout+3*time.Second {
				t.Errorf("Close took %s: more than the client's read timeout %s", took, timeout)
			}
			if _, err := k.Enabled(context.Background(), "x"); err == nil {
				t.Error("Enabled has no error after Close")
			}
			goleak.VerifyNone(t, before)
		})
	}
}

// Close at any moment while the subscription is lost and remade every
// 1.5s (its connection black-holed: no PONG comes): Close racing the
// health check, the pinger and the goroutines closing dropped
// subscriptions ends them all (goleak), without a race or a panic.
func TestRedisKillSwitchCloseDuringChurn(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	before := goleak.IgnoreCurrent()
	proxy.BlackholeSubscribers()
	for i := range 8 {
		opts := proxy.Options()
		opts.ReadTimeout, opts.DialTimeout = 2*time.Second, 2*time.Second
		rdb := redis.NewClient(opts)
		k, err := NewRedisKillSwitch(rdb, WithLogger(ksQuiet))
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i) * 700 * time.Millisecond) // 0 to 4.9s: before, during and after drops
		start := time.Now()
		_ = k.Close()
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("Close %d took %s", i, d)
		}
		ksNoGoroutineLeft(t)
		_ = rdb.Close()
	}
	proxy.Close()
	goleak.VerifyNone(t, before)
}

// ksNoGoroutineLeft fails the test when a goroutine of a RedisKillSwitch
// runs: after Close, none may, even one still waiting on go-redis (which
// the package's goleak would miss once that wait ends).
func ksNoGoroutineLeft(t *testing.T) {
	t.Helper()
	buf := make([]byte, 4<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if i := strings.Index(stacks, "(*RedisKillSwitch)"); i >= 0 {
		start := strings.LastIndex(stacks[:i], "\n\ngoroutine ")
		t.Errorf("a goroutine of the switch outlived Close:\n%s", stacks[max(start, 0):min(i+500, len(stacks))])
	}
}

// A subscription the health check has dropped can still deliver what its
// connection read before it was closed, its confirmation among them. That
// late confirmation must not mark the switch live while its successor is
// still being made (its handshake held here): the switch would stop
// re-reading the hash every 500ms with nothing subscribed, and a flip would
// wait for the next resync. A second drop of the same subscription (the
// pinger's, after the health check's) records no second loss.
func TestRedisKillSwitchDroppedSubscriptionConfirmsNothing(t *testing.T) {
	_, proxy, k := ksViaProxy(t, 10*time.Second, 10*time.Second)
	seen, release := proxy.StallNext("HELLO")
	t.Cleanup(release)

	k.psMu.Lock()
	old := k.ps
	k.psMu.Unlock()
	if !k.lose(old, errors.New("test: dropped")) {
		t.Fatal("lose: the subscription in use was not dropped")
	}
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription was not made again")
	}
	k.psMu.Lock()
	succ := k.ps
	k.psMu.Unlock()
	if succ == nil || succ == old {
		t.Fatalf("no new subscription is being made (%p, the old one %p)", succ, old)
	}

	k.subscribed(old) // the late confirmation
	k.mu.RLock()
	gen, confirmed := k.subGen, k.confirmedGen == k.subGen
	k.mu.RUnlock()
	if confirmed {
		t.Fatal("a dropped subscription's confirmation marked the switch live while its successor's handshake hangs")
	}
	if k.lose(old, errors.New("test: dropped again")) {
		t.Fatal("lose dropped a subscription that was no longer in use")
	}
	k.mu.RLock()
	again := k.subGen
	k.mu.RUnlock()
	if again != gen {
		t.Fatalf("a second drop of the same subscription recorded a loss: generation %d, then %d", gen, again)
	}
	if k.Err() == nil {
		t.Fatal("Err is nil while the subscription is being made")
	}

	release()
	ksLoaded(t, k) // the successor (or the one after it) is confirmed: live again
}

// A link where making a connection takes 2.5s (every handshake held that
// long: a distant Redis behind TLS, a slow proxy) is slow, not dead: the
// switch must end up subscribed on it. A subscription is PINGed only once
// it is confirmed; until then it has ksSubscribeWithin (5s) to be, while
// the hash is re-read every 500ms as for any loss.
func TestRedisKillSwitchSlowHandshakeSubscribes(t *testing.T) {
	srv, proxy, k := ksViaProxy(t, 10*time.Second, 10*time.Second)

	// From now on every new connection's handshake takes 2.5s.
	stop := make(chan struct{})
	held := make(chan struct{})
	go func() {
		defer close(held)
		for {
			seen, release := proxy.StallNext("HELLO")
			select {
			case <-stop:
				release()
				return
			case <-seen:
			}
			select {
			case <-stop:
			case <-time.After(2500 * time.Millisecond):
			}
			release()
		}
	}()
	t.Cleanup(func() { close(stop); <-held })
	if err := srv.Client(t).Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the loss noticed", func() bool { return k.Err() != nil })
	took := waitFor(t, 15*time.Second, "subscribed again over the slow link", func() bool { return k.Err() == nil })
	t.Logf("subscribed again %s after the loss was noticed, each handshake taking 2.5s", took)
}

// A subscription whose SUBSCRIBE is never answered (its connection made,
// its replies held) is not PINGed, since it is not confirmed: it is given
// up after ksSubscribeWithin and another is made, which is answered. (A
// subscription whose dial itself hangs holds the switch's reader until the
// client's dial or read timeout: go-redis dials under the PubSub's lock;
// the hash is re-read every 500ms meanwhile, see
// TestRedisKillSwitchHangingDialStillPolls.)
func TestRedisKillSwitchUnconfirmedSubscriptionIsReplaced(t *testing.T) {
	srv, proxy, k := ksViaProxy(t, -1, 30*time.Second)
	seen, release := proxy.StallNext("SUBSCRIBE")
	t.Cleanup(release)
	if err := srv.Client(t).Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-seen:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription was not made again")
	}
	waitFor(t, 5*time.Second, "the loss noticed", func() bool { return k.Err() != nil })
	took := waitFor(t, 15*time.Second, "live again while the first SUBSCRIBE is unanswered", func() bool { return k.Err() == nil })
	t.Logf("live again %s after the loss was noticed (ksSubscribeWithin %s)", took, ksSubscribeWithin)
}

// ksViaProxy starts a redis-server, a proxy in front of it and a switch
// whose client goes through the proxy with the given read and dial
// timeouts (0: go-redis's defaults), and waits until the switch has loaded.
// The client's connections for reads are made by then, so the next
// handshake the proxy sees is a subscription's.
func ksViaProxy(t *testing.T, read, dial time.Duration, opts ...Option) (*redistest.Server, *redistest.Proxy, *RedisKillSwitch) {
	t.Helper()
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	o := proxy.Options()
	o.ReadTimeout, o.DialTimeout = read, dial
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	k, err := NewRedisKillSwitch(rdb, append([]Option{WithLogger(ksQuiet)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	ksLoaded(t, k)
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	return srv, proxy, k
}
