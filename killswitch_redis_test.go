package cronguard

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
)

// ksQuiet is a logger for switches under test.
var ksQuiet = slog.New(slog.DiscardHandler)

// ksNew returns a quiet RedisKillSwitch on its own client to srv, closed
// when the test ends (before the client).
func ksNew(t *testing.T, srv *redistest.Server, opts ...Option) *RedisKillSwitch {
	t.Helper()
	k, _ := ksCounted(t, srv, 0, opts...)
	return k
}

// ksIs reports whether k answers want for flag, without error.
func ksIs(k KillSwitch, flag string, want bool) func() bool {
	return func() bool {
		on, err := k.Enabled(context.Background(), flag)
		return err == nil && on == want
	}
}

func TestRedisKillSwitchFlipRecordsWhoWhyWhen(t *testing.T) {
	srv := redistest.Start(t)
	a, b := ksNew(t, srv), ksNew(t, srv)
	ksLoaded(t, a, b)

	if on, err := b.Enabled(context.Background(), "emails"); err != nil || !on {
		t.Fatalf("absent flag: Enabled = %v, %v; want on", on, err)
	}
	before := time.Now()
	ctx := WithActor(context.Background(), "alice")
	if err := a.SetEnabled(ctx, "emails", false, "sends duplicates"); err != nil {
		t.Fatal(err)
	}
	// Read your writes on the flipping instance: no wait.
	if on, err := a.Enabled(context.Background(), "emails"); err != nil || on {
		t.Fatalf("flipping instance: Enabled = %v, %v; want off at once", on, err)
	}
	took := waitFor(t, time.Second, "other instance sees the flip", ksIs(b, "emails", false))
	t.Logf("flip reached the other instance in %s", took)

	st := b.state("emails")
	if st.Enabled || st.By != "alice" || st.Reason != "sends duplicates" || st.At.Before(before.Add(-time.Second)) || st.At.After(time.Now()) {
		t.Fatalf("State = %+v", st)
	}

	// Durable: a new instance reads it from Redis.
	c := ksNew(t, srv)
	waitFor(t, 5*time.Second, "new instance loads the state", ksIs(c, "emails", false))
	if got := c.state("emails"); got.By != "alice" || !got.At.Equal(st.At) {
		t.Fatalf("new instance State = %+v, want %+v", got, st)
	}
	raw, err := srv.Client(t).HGet(context.Background(), "cronguard:killswitch", "emails").Result()
	if err != nil || !strings.Contains(raw, `"by":"alice"`) {
		t.Fatalf("stored value = %q, %v", raw, err)
	}

	if err := b.SetEnabled(context.Background(), "emails", true, "fixed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "flip back reaches every instance", func() bool {
		return ksIs(a, "emails", true)() && ksIs(c, "emails", true)()
	})
	if other := a.state("other"); !other.Enabled {
		t.Fatalf("flags are independent: State(other) = %+v", other)
	}
}

func TestRedisKillSwitchOptions(t *testing.T) {
	srv := redistest.Start(t)
	off := ksNew(t, srv, redisDefaultOff(), WithKeyPrefix("svc-a:"))
	other := ksNew(t, srv) // prefix cronguard:
	ksLoaded(t, off, other)
	if off.key != "svc-a:killswitch" || off.channel != "svc-a:killswitch:flips:db0" {
		t.Fatalf("Key, Channel = %q, %q", off.key, off.channel)
	}
	if on, err := off.Enabled(context.Background(), "emails"); err != nil || on {
		t.Fatalf("DefaultOff: absent flag Enabled = %v, %v", on, err)
	}
	if err := off.SetEnabled(context.Background(), "emails", true, "go"); err != nil {
		t.Fatal(err)
	}
	if err := other.SetEnabled(context.Background(), "emails", false, "stop"); err != nil {
		t.Fatal(err)
	}
	// Prefixes keep the two apart.
	time.Sleep(50 * time.Millisecond)
	if !ksIs(off, "emails", true)() || !ksIs(other, "emails", false)() {
		t.Fatal("switches with different prefixes see each other's flags")
	}

	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"zero resync", []Option{redisResync(0)}},
		{"nil logger", []Option{WithLogger(nil)}},
		{"nil option", []Option{nil}},
	} {
		if _, err := NewRedisKillSwitch(srv.Client(t), tc.opts...); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: err = %v, want ErrInvalidOption", tc.name, err)
		}
	}
	if _, err := NewRedisKillSwitch(nil); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("nil client: err = %v", err)
	}
}

// A flip written to Redis without its message (lost, or an operator's
// HSET) is picked up by every instance within the resync interval.
func TestRedisKillSwitchResyncCorrectsLostMessage(t *testing.T) {
	srv := redistest.Start(t)
	const resync = 200 * time.Millisecond
	a := ksNew(t, srv, redisResync(resync))
	b := ksNew(t, srv, redisResync(resync))
	ksLoaded(t, a, b)
	rdb := srv.Client(t)
	ctx := context.Background()

	// The message is lost: the state changes in Redis, nothing is published.
	if err := rdb.HSet(ctx, a.key, "emails", `{"enabled":false,"reason":"lost message"}`).Err(); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 2*resync+500*time.Millisecond, "lost flip corrected", func() bool {
		return ksIs(a, "emails", false)() && ksIs(b, "emails", false)()
	})
	t.Logf("lost flip corrected on both instances in %s (resync %s)", took, resync)
	if st := b.state("emails"); st.Reason != "lost message" {
		t.Fatalf("State = %+v", st)
	}

	// An operator's hand edit, in the short form, and a deletion.
	if err := rdb.HSet(ctx, a.key, "emails", "on", "reports", "off").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*resync+500*time.Millisecond, "hand edit picked up", func() bool {
		return ksIs(b, "emails", true)() && ksIs(b, "reports", false)()
	})
	if err := rdb.HDel(ctx, a.key, "reports").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*resync+500*time.Millisecond, "deleted flag back to default", ksIs(b, "reports", true))

	// A value nobody can read: Enabled fails for that flag only, so the
	// scheduler's fail policy decides.
	if err := rdb.HSet(ctx, a.key, "emails", "maybe").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*resync+500*time.Millisecond, "unreadable value fails", func() bool {
		_, err := b.Enabled(ctx, "emails")
		return err != nil && strings.Contains(err.Error(), `"maybe"`)
	})
	if st := b.state("emails"); st.Enabled || !strings.Contains(st.Reason, "cannot read") {
		t.Fatalf("State of unreadable flag = %+v", st)
	}
	if !ksIs(b, "other", true)() {
		t.Fatal("an unreadable flag affects others")
	}
}

// Redis dies and comes back around a flip. The state is durable (Redis
// persists it), the cache holds while Redis is away, and a flip the
// instance could not hear (written before it subscribed again) is picked up
// by the reload on resubscription — the periodic resync here is far away.
func TestRedisKillSwitchRedisRestartedAroundFlip(t *testing.T) {
	srv := redistest.Start(t, redistest.Args("--appendonly", "yes", "--appendfsync", "always"))
	const resync = time.Minute // only the resubscription can correct in time
	a := ksNew(t, srv, redisResync(resync))
	b := ksNew(t, srv, redisResync(resync))
	ksLoaded(t, a, b)
	ctx := context.Background()
	if err := a.SetEnabled(ctx, "emails", false, "incident"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "flip seen", ksIs(b, "emails", false))

	exercised := false
	for attempt := 1; attempt <= 3 && !exercised; attempt++ {
		srv.Kill(t)
		waitFor(t, 5*time.Second, "switch notices Redis is gone", func() bool { return b.Err() != nil })
		// Enabled says Redis is gone (the scheduler's fail policy then holds
		// the last answer, with an event), the cache still knows the last
		// state, and flips fail.
		if _, err := b.Enabled(ctx, "emails"); err == nil {
			t.Fatal("Redis down: Enabled answered without an error")
		}
		if st := b.state("emails"); st.Enabled {
			t.Fatalf("Redis down: State = %+v; want the last known off", st)
		}
		if err := a.SetEnabled(ctx, "emails", true, "while down"); err == nil {
			t.Fatal("SetEnabled succeeded with Redis down")
		}
		time.Sleep(1500 * time.Millisecond) // the switches back off to their longest wait

		srv.Restart(t)
		rdb := srv.Client(t)
		if st, err := rdb.HGet(ctx, a.key, "emails").Result(); err != nil || !strings.Contains(st, `"enabled":false`) {
			t.Fatalf("state after Redis restart = %q, %v; want it persisted", st, err)
		}
		// Flip on with nobody subscribed to hear it: the message is lost.
		if err := setScript.Run(ctx, rdb, []string{a.key}, "emails", `{"enabled":true,"reason":"unheard"}`,
			a.channel, `{"flag":"emails","state":{"enabled":true,"reason":"unheard"}}`).Err(); err != nil {
			t.Fatal(err)
		}
		n, err := rdb.PubSubNumSub(ctx, a.channel).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n[a.channel] != 0 {
			t.Logf("attempt %d: a switch resubscribed before the flip; again", attempt)
			if err := a.SetEnabled(ctx, "emails", false, "incident"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "reset", ksIs(b, "emails", false))
			continue
		}
		exercised = true
		took := waitFor(t, 5*time.Second, "unheard flip picked up on resubscription", func() bool {
			return ksIs(a, "emails", true)() && ksIs(b, "emails", true)()
		})
		t.Logf("attempt %d: unheard flip picked up %s after the restart (resync interval %s)", attempt, took, resync)
		if b.Err() != nil {
			t.Fatalf("Err after recovery = %v", b.Err())
		}
	}
	if !exercised {
		t.Fatal("could not restart Redis before the switches resubscribed")
	}
	// And flips propagate again.
	if err := b.SetEnabled(ctx, "emails", false, "again"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "flip after recovery", ksIs(a, "emails", false))
}

// Without Redis the switch does not answer from its cache on its own: the
// scheduler's fail policy decides (last answer holds) and raises an
// EventFlag for each such decision.
func TestRedisKillSwitchOutageDefersToFailPolicy(t *testing.T) {
	srv := redistest.Start(t)
	const resync = 300 * time.Millisecond
	k := ksNew(t, srv, redisResync(resync))
	ksLoaded(t, k)
	s, rec := newTest(t, WithKillSwitch(k))
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if err := s.SetEnabled(context.Background(), "emails", false, "incident"); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s, "emails", t0); skipOf(rep) != "killed" {
		t.Fatalf("report = %v", rep)
	}
	srv.Stop(t)
	waitFor(t, 5*time.Second, "switch notices it cannot read Redis", func() bool {
		_, err := k.Enabled(context.Background(), "emails")
		return err != nil && !errors.As(err, new(*degradedError))
	})
	rep := tickAt(t, s, "emails", t0.Add(time.Hour))
	if skipOf(rep) != "killed" {
		t.Fatalf("Redis down: report = %v; want the last known off to hold", rep)
	}
	evs := rec.kind(EventFlag)
	ev, ok := Event{}, len(evs) > 0
	if ok {
		ev = evs[len(evs)-1]
	}
	if !ok || ev.Enabled || !strings.Contains(ev.Err.Error(), "cannot read the hash") {
		t.Fatalf("EventFlag = %+v, %v", ev, ok)
	}
	srv.Restart(t) // empty: the flag is back to its default, on
	waitFor(t, 5*time.Second, "follows Redis again", ksIs(k, "emails", true))
}

// Redis is down when the instance starts: nothing blocks, Enabled fails
// until the first load, so the fail policy applies; then it follows Redis.
func TestRedisKillSwitchRedisDownAtStart(t *testing.T) {
	srv := redistest.Start(t)
	srv.Stop(t)

	start := time.Now()
	k := ksNew(t, srv)
	s, rec := newTest(t, WithRedis(srv.Client(t)), WithCallBudget(200*time.Millisecond))
	open, _ := newTest(t, WithKillSwitch(k), WithFailOpen())
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("NewRedisKillSwitch, New(WithRedis) and Start took %s with Redis down", d)
	}
	if _, err := k.Enabled(context.Background(), "emails"); err == nil {
		t.Fatal("Enabled before the first load: no error")
	}
	waitFor(t, 5*time.Second, "Enabled tells why", func() bool {
		_, err := k.Enabled(context.Background(), "emails")
		return err != nil && strings.Contains(err.Error(), "refused")
	})
	if _, ok := s.cfg.killSwitch.(*RedisKillSwitch); !ok {
		t.Fatalf("WithRedis made a %T", s.cfg.killSwitch)
	}

	ran := 0
	job := JobFunc(func(context.Context) error { ran++; return nil })
	for _, sc := range []*Scheduler{s, open} {
		if err := sc.Register("emails", "@hourly", job); err != nil {
			t.Fatal(err)
		}
	}
	rep := tickAt(t, s, "emails", t0)
	if skipOf(rep) != "backend" || !errors.Is(rep.Err, ErrBackend) {
		t.Fatalf("fail closed: report = %v", rep)
	}
	if ev, ok := rec.find(EventFlag); !ok || ev.Enabled {
		t.Fatalf("EventFlag = %+v, %v", ev, ok)
	}
	if rep := tickAt(t, open, "emails", t0); skipOf(rep) != "" || ran != 1 {
		t.Fatalf("WithFailOpen: report = %v, ran %d", rep, ran)
	}

	srv.Restart(t)
	waitFor(t, 5*time.Second, "loads once Redis is up", ksIs(k, "emails", true))
	waitFor(t, 5*time.Second, "WithRedis switch loads too", ksIs(s.cfg.killSwitch, "emails", true))
	// The locker's client may take a second more to dial again.
	tick := t0
	waitFor(t, 5*time.Second, "runs once Redis is up", func() bool {
		tick = tick.Add(time.Hour)
		rep := tickAt(t, s, "emails", tick)
		return skipOf(rep) == "" && rep.Outcome() == "done"
	})
}

// Hard kill: a flip on one instance cancels a run in flight on another
// with cause ErrKilled, within the kill poll.
func TestRedisKillSwitchHardKillOnAnotherInstance(t *testing.T) {
	srv := redistest.Start(t)
	a, _ := newTest(t, WithRedis(srv.Client(t)), WithInstanceID("a"))
	b, _ := newTest(t, WithRedis(srv.Client(t)), WithInstanceID("b"))
	started := make(chan struct{})
	var cause atomic.Value
	job := Batch[int]{
		Fetch: func(context.Context, Page) ([]int, error) { return []int{1}, nil },
		Process: func(ctx context.Context, _ int) error {
			close(started)
			<-ctx.Done() // one long step: only a hard kill stops it
			cause.Store(context.Cause(ctx))
			return ctx.Err()
		},
		Key: func(i int) string { return itoa(i) },
	}
	for _, s := range []*Scheduler{a, b} {
		if err := s.Register("purge", "@hourly", job, HardKill()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "switches loaded", func() bool {
		return ksIs(a.cfg.killSwitch, "purge", true)() && ksIs(b.cfg.killSwitch, "purge", true)()
	})
	done := goAsync(func() Report { return tickAt(t, b, "purge", t0) })
	<-started
	flip := time.Now()
	if err := a.SetEnabled(WithActor(context.Background(), "oncall"), "purge", false, "deletes too much"); err != nil {
		t.Fatal(err)
	}
	rep := recv(t, done)
	took := time.Since(flip)
	t.Logf("hard kill on the other instance took %s (kill poll %s)", took, b.cfg.killPoll)
	c, _ := cause.Load().(error)
	if rep.Outcome() != "killed" || !errors.Is(rep.Err, ErrKilled) || !errors.Is(c, ErrKilled) {
		t.Fatalf("report = %v; cause seen by the job = %v", rep, c)
	}
	if rep.Instance != "b" || took > b.cfg.killPoll+500*time.Millisecond {
		t.Fatalf("instance %q, took %s", rep.Instance, took)
	}
}

// The switch WithRedis made is closed by Stop; one given with
// WithKillSwitch is the caller's.
func TestRedisKillSwitchClosedByStop(t *testing.T) {
	srv := redistest.Start(t)
	s, err := New(WithRedis(srv.Client(t)), WithLogger(ksQuiet))
	if err != nil {
		t.Fatal(err)
	}
	k := s.cfg.killSwitch.(*RedisKillSwitch)
	waitFor(t, 5*time.Second, "loaded", ksIs(k, "x", true))
	mine := ksNew(t, srv)
	s2, err := New(WithRedis(srv.Client(t)), WithKillSwitch(mine), WithLogger(ksQuiet))
	if err != nil {
		t.Fatal(err)
	}
	if s2.cfg.killSwitch != KillSwitch(mine) {
		t.Fatal("WithKillSwitch lost to WithRedis")
	}
	for _, sc := range []*Scheduler{s, s2} {
		if err := sc.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := k.Enabled(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after Stop: Enabled err = %v", err)
	}
	if err := k.SetEnabled(context.Background(), "x", false, ""); err == nil {
		t.Fatal("SetEnabled after Close succeeded")
	}
	waitFor(t, time.Second, "caller's switch still works", ksIs(mine, "x", true))
	_ = k.Close() // twice is fine
}

// An unreadable message makes the switch reload rather than guess.
func TestRedisKillSwitchUnreadableMessage(t *testing.T) {
	srv := redistest.Start(t)
	k := ksNew(t, srv)
	ksLoaded(t, k)
	rdb := srv.Client(t)
	ctx := context.Background()
	if err := rdb.HSet(ctx, k.key, "emails", "off").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Publish(ctx, k.channel, "garbage").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "reload after an unreadable message", ksIs(k, "emails", false))
}

// Enabled is the hot path: a map lookup under a read lock.
func BenchmarkRedisKillSwitchEnabled(b *testing.B) {
	srv := redistest.Start(b)
	k, err := NewRedisKillSwitch(srv.Client(b), WithLogger(ksQuiet))
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	for k.Err() != nil {
		time.Sleep(time.Millisecond)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := k.Enabled(ctx, "emails"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestRedisKillSwitchCheckAllocatesNothing: the kill switch check of a run
// on a RedisKillSwitch, which answers from its cache, allocates nothing when
// the answer is clean: no call budget (a context and a timer per run) and
// no event built. It still answers with the flag's value.
func TestRedisKillSwitchCheckAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	srv := redistest.Start(t)
	s, _ := redisSched(t, "a", srv.Client(t))
	if err := s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	waitSwitchLoaded(t, s)
	ctx := context.Background()
	n := testing.AllocsPerRun(1000, func() {
		if on, err := s.enabled(ctx, "j", "j"); !on || err != nil {
			t.Fatalf("enabled = %v, %v; want on", on, err)
		}
	})
	if n != 0 {
		t.Errorf("the kill switch check allocates %.0f objects per run; want 0", n)
	}
	if err := s.SetEnabled(ctx, "j", false, "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the switch sees the flag off", func() bool {
		on, err := s.enabled(ctx, "j", "j")
		return !on && err == nil
	})
}
