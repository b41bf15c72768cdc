package cronguard

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
)

// ksChurn runs faults on the switch's subscription until stop is closed:
// its connection killed (CLIENT KILL), its next handshake held for up to
// 2s (a slow link), its replies black-holed for a while. Redis itself stays
// healthy: the hash can always be read.
func ksChurn(t *testing.T, srv *redistest.Server, proxy *redistest.Proxy, stop <-chan struct{}, seed uint64) {
	killer := srv.Client(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	for {
		select {
		case <-stop:
			proxy.Resume()
			return
		case <-time.After(time.Duration(200+rng.IntN(900)) * time.Millisecond):
		}
		switch rng.IntN(4) {
		case 0, 1:
			_ = killer.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err()
		case 2:
			_, release := proxy.StallNext("HELLO")
			hold := time.Duration(rng.IntN(2000)) * time.Millisecond
			_ = killer.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err()
			go func() {
				select {
				case <-stop:
				case <-time.After(hold):
				}
				release()
			}()
		case 3:
			proxy.BlackholeSubscribers()
			select {
			case <-stop:
			case <-time.After(time.Duration(rng.IntN(1500)) * time.Millisecond):
			}
			proxy.Resume()
		}
	}
}

// Under churn of the subscription (connections killed, slow handshakes,
// black-holed replies) while Redis stays healthy, every flip made by
// another instance is honoured by this one within the stated 2.5s (a
// margin for the busy machine on top), whatever Err says; once the churn
// ends the switch is live again and flips arrive by message.
func TestRedisKillSwitchChurnHonoursFlips(t *testing.T) {
	srv, proxy, k := ksViaProxy(t, 0, 0, redisResync(time.Hour))
	other := ksNew(t, srv)
	ksLoaded(t, other)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); ksChurn(t, srv, proxy, stop, uint64(time.Now().UnixNano())) }()

	ctx := context.Background()
	const bound, margin = 2500 * time.Millisecond, 1500 * time.Millisecond
	var worst time.Duration
	on := true
	deadline := time.Now().Add(12 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		on = !on
		if err := other.SetEnabled(ctx, "emails", on, "churn"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		for {
			got, _ := k.Enabled(ctx, "emails")
			if got == on {
				break
			}
			if time.Since(start) > bound+margin {
				close(stop)
				wg.Wait()
				t.Fatalf("flip %d to %v not seen after %s (bound %s); Err: %v", i, on, time.Since(start), bound, k.Err())
			}
			time.Sleep(5 * time.Millisecond)
		}
		worst = max(worst, time.Since(start))
		time.Sleep(time.Duration(rand.IntN(600)) * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	t.Logf("worst flip under churn: %s (bound %s)", worst, bound)
	took := waitFor(t, 15*time.Second, "live again after the churn", func() bool { return k.Err() == nil })
	t.Logf("live again %s after the churn", took)
	on = !on
	if err := other.SetEnabled(ctx, "emails", on, "after"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "flip by message after the churn", ksIs(k, "emails", on))
}

// The subscription's connection is killed and the flip made at once, so
// its message is lost; go-redis makes the connection again inside
// Receive, its handshake held for 0 to 3s (the switch still says live
// while Receive has not returned). The flip is honoured within the stated
// 2.5s (plus a margin), and the switch is live again afterwards.
func TestRedisKillSwitchLostFlipDuringReconnect(t *testing.T) {
	srv, proxy, k := ksViaProxy(t, 0, 0, redisResync(time.Hour))
	other := ksNew(t, srv)
	killer := srv.Client(t)
	ksLoaded(t, other)
	ctx := context.Background()
	on := true
	for _, hold := range []time.Duration{0, 500 * time.Millisecond, time.Second, 1300 * time.Millisecond, 1800 * time.Millisecond, 3 * time.Second} {
		ksLoaded(t, k)
		time.Sleep(time.Duration(rand.IntN(500)) * time.Millisecond) // anywhere in the PING cycle
		seen, release := proxy.StallNext("HELLO")
		if err := killer.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
			t.Fatal(err)
		}
		on = !on
		if err := other.SetEnabled(ctx, "emails", on, "lost"); err != nil {
			t.Fatal(err)
		}
		held := make(chan struct{})
		go func() {
			defer close(held)
			select {
			case <-seen:
			case <-time.After(5 * time.Second):
			}
			time.Sleep(hold)
			release()
		}()
		took := waitFor(t, 6*time.Second, "the lost flip honoured", func() bool {
			got, _ := k.Enabled(ctx, "emails")
			return got == on
		})
		t.Logf("hold %s: lost flip honoured after %s", hold, took)
		if took > 2500*time.Millisecond+time.Second {
			t.Errorf("hold %s: lost flip honoured after %s (bound 2.5s)", hold, took)
		}
		<-held
		waitFor(t, 15*time.Second, "live again", func() bool { return k.Err() == nil })
	}
}

// The subscription is refused (ACL: the default user loses its channels,
// Redis drops the subscribed connection, and SUBSCRIBE is answered
// NOPERM, an error go-redis keeps the connection for): the switch is
// degraded, not live. Once the channels are given back, a subscription is
// confirmed again within ksSubscribeWithin and a check or two: never
// degraded for good while Redis is healthy.
func TestRedisKillSwitchRefusedSubscriptionRecovers(t *testing.T) {
	srv := redistest.Start(t)
	k := ksNew(t, srv)
	admin := srv.Client(t)
	ksLoaded(t, k)
	ctx := context.Background()
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "resetchannels").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refusal noticed", func() bool { return k.Err() != nil })
	time.Sleep(2 * ksSubscribeWithin) // several refused subscriptions
	if k.Err() == nil {
		t.Fatal("live while SUBSCRIBE is refused")
	}
	t.Logf("degraded: %v", k.Err())
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "allchannels").Err(); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, ksSubscribeWithin+5*time.Second, "live again once SUBSCRIBE is allowed", func() bool { return k.Err() == nil })
	t.Logf("live again %s after the channels were given back", took)
	other := ksNew(t, srv)
	ksLoaded(t, other)
	if err := other.SetEnabled(ctx, "emails", false, "after"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "flip by message", ksIs(k, "emails", false))
}

// The server stopped (SIGSTOP) for 2s and for 7s (past the 5s a new
// subscription has, and the client's 3s read timeout): the silence is
// noticed within the stated 2s plus a margin, and once the server runs
// again the switch is live again and flips arrive by message.
func TestRedisKillSwitchServerPausedRecovers(t *testing.T) {
	srv := redistest.Start(t)
	k := ksNew(t, srv)
	other := ksNew(t, srv)
	ksLoaded(t, k, other)
	ctx := context.Background()
	on := true
	for _, pause := range []time.Duration{2 * time.Second, 7 * time.Second} {
		srv.Pause(t)
		took := waitFor(t, 4*time.Second, "the pause noticed", func() bool { return k.Err() != nil })
		t.Logf("pause of %s noticed after %s", pause, took)
		time.Sleep(pause - took)
		srv.Continue(t)
		took = waitFor(t, 15*time.Second, "live again", func() bool { return k.Err() == nil && other.Err() == nil })
		t.Logf("live again %s after the server ran again", took)
		on = !on
		if err := other.SetEnabled(ctx, "emails", on, "after the pause"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "flip by message", ksIs(k, "emails", on))
	}
}
