package cronguard

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// These tests hold the Redis kill switch to "the hash is the only truth"
// against a shared, hostile or broken Redis (issue 7, items 5-9).

// ksCounter is a go-redis hook that counts commands by name.
type ksCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *ksCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *ksCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *ksCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.mu.Lock()
		if c.n == nil {
			c.n = map[string]int{}
		}
		c.n[strings.ToLower(cmd.Name())]++
		c.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (c *ksCounter) get(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[name]
}

// ksCounted returns a switch on its own client to srv (options changed by
// opt) with a command counter.
func ksCounted(t *testing.T, srv *redistest.Server, db int, opts ...Option) (*RedisKillSwitch, *ksCounter) {
	t.Helper()
	o := srv.Options()
	o.DB = db
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	c := &ksCounter{}
	rdb.AddHook(c)
	opts = append([]Option{WithLogger(ksQuiet)}, opts...)
	k, err := NewRedisKillSwitch(rdb, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	return k, c
}

// ksEmails returns a loaded switch on srv, re-synced every 200ms, and a
// scheduler on it with one job, "emails", whose runs are counted in *ran.
func ksEmails(t *testing.T, srv *redistest.Server) (k *RedisKillSwitch, s *Scheduler, rec *recorder, ran *int) {
	t.Helper()
	k, _ = ksCounted(t, srv, 0, redisResync(200*time.Millisecond))
	ksLoaded(t, k)
	s, rec = newTest(t, WithKillSwitch(k))
	ran = new(int)
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { *ran++; return nil })); err != nil {
		t.Fatal(err)
	}
	return k, s, rec, ran
}

// ksLoaded waits until every switch follows Redis.
func ksLoaded(t *testing.T, ks ...*RedisKillSwitch) {
	t.Helper()
	waitFor(t, 5*time.Second, "switches follow Redis", func() bool {
		for _, k := range ks {
			if k.Err() != nil {
				return false
			}
		}
		return true
	})
}

// Item 5: a message only says which flag to re-read. A forged PUBLISH
// claiming {"enabled":true} for a switched-off job makes the instance read
// the hash again, which still says off: the job stays off. A flood of
// forged messages costs at most one HMGET each, never a state change.
func TestRedisKillSwitchForgedMessageCannotFlip(t *testing.T) {
	srv := redistest.Start(t)
	k, cnt := ksCounted(t, srv, 0, redisResync(time.Minute))
	ksLoaded(t, k)
	s, _ := newTest(t, WithKillSwitch(k))
	ran := 0
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { ran++; return nil })); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.SetEnabled(ctx, "emails", false, "incident"); err != nil {
		t.Fatal(err)
	}
	attacker := srv.Client(t)
	forged := `{"flag":"emails","state":{"enabled":true,"reason":"forged"},"enabled":true}`
	before := cnt.get("hmget")
	if err := attacker.Publish(ctx, k.channel, forged).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the forged message makes a re-read", func() bool { return cnt.get("hmget") > before })
	if on, err := k.Enabled(ctx, "emails"); err != nil || on {
		t.Fatalf("after a forged message: Enabled = %v, %v; want off, from the hash", on, err)
	}
	if st := k.state("emails"); st.Reason != "incident" {
		t.Fatalf("State = %+v; want the hash's", st)
	}
	if rep := tickAt(t, s, "emails", t0); skipOf(rep) != "killed" || ran != 0 {
		t.Fatalf("report = %v, ran %d; want the job to stay off", rep, ran)
	}

	// A flood: each message costs at most one bounded re-read, and the
	// reads of waiting messages merge.
	before, full := cnt.get("hmget"), cnt.get("hgetall")
	const flood = 200
	for i := range flood {
		if err := attacker.Publish(ctx, k.channel, fmt.Sprintf(`{"flag":"emails","n":%d,"state":{"enabled":true}}`, i)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The last message names a flag written without a message: once the
	// cache has it, every message of the flood has been acted on.
	if err := attacker.HSet(ctx, k.key, "sentinel", "off").Err(); err != nil {
		t.Fatal(err)
	}
	if err := attacker.Publish(ctx, k.channel, `{"flag":"sentinel"}`).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "flood read", ksIs(k, "sentinel", false))
	rereads := cnt.get("hmget") - before
	t.Logf("%d forged messages: %d HMGETs, %d HGETALLs", flood+1, rereads, cnt.get("hgetall")-full)
	if rereads < 1 || rereads > flood+1 || cnt.get("hgetall") != full {
		t.Fatalf("%d forged messages caused %d HMGET, %d HGETALL", flood+1, rereads, cnt.get("hgetall")-full)
	}
	if rep := tickAt(t, s, "emails", t0.Add(time.Hour)); skipOf(rep) != "killed" || ran != 0 {
		t.Fatalf("after the flood: report = %v, ran %d", rep, ran)
	}

	// A flood of distinct names: the waiting re-reads stay bounded (256
	// flags), the rest wait for a full reload, one per health check at most.
	before, full = cnt.get("hmget"), cnt.get("hgetall")
	start := time.Now()
	const names = 3000
	pipe := attacker.Pipeline()
	for i := range names {
		pipe.Publish(ctx, k.channel, fmt.Sprintf(`{"flag":"forged-%d","state":{"enabled":true}}`, i))
	}
	pipe.HSet(ctx, k.key, "sentinel2", "off")
	pipe.Publish(ctx, k.channel, `{"flag":"sentinel2"}`)
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "distinct-name flood read", ksIs(k, "sentinel2", false))
	time.Sleep(300 * time.Millisecond) // a last reload may follow
	elapsed := time.Since(start)
	hm, hg := cnt.get("hmget")-before, cnt.get("hgetall")-full
	t.Logf("%d forged names in %s: %d HMGETs, %d HGETALLs", names, elapsed, hm, hg)
	if hm > names+1 || hg > int(elapsed/ksCheckEvery)+2 {
		t.Fatalf("%d forged names: %d HMGET, %d HGETALL in %s", names, hm, hg, elapsed)
	}
	k.mu.RLock()
	cached := len(k.flags)
	k.mu.RUnlock()
	if cached > 3 { // emails, sentinel, sentinel2
		t.Fatalf("forged names that are not in the hash are cached: %d flags", cached)
	}
	if rep := tickAt(t, s, "emails", t0.Add(2*time.Hour)); skipOf(rep) != "killed" || ran != 0 {
		t.Fatalf("after the flood of names: report = %v, ran %d", rep, ran)
	}
}

// A 1 MiB forged message or flag value never makes a 1 MiB log line or
// error: everything read from Redis is cut to 200 bytes.
func TestRedisKillSwitchHugeValuesAreClipped(t *testing.T) {
	srv := redistest.Start(t)
	var logs ksLogBuffer
	k, _ := ksCounted(t, srv, 0, redisResync(200*time.Millisecond), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	ksLoaded(t, k)
	s, _ := newTest(t, WithKillSwitch(k), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	huge := strings.Repeat("é", 512<<10) // 1 MiB
	rdb := srv.Client(t)
	if err := rdb.Publish(ctx, k.channel, huge).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, k.key, "emails", huge).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "huge value read", func() bool {
		_, err := k.Enabled(ctx, "emails")
		return err != nil
	})
	_, err := k.Enabled(ctx, "emails")
	if len(err.Error()) > 600 || !strings.Contains(err.Error(), "(1048576 bytes)") {
		t.Fatalf("error of a 1 MiB value: %d bytes: %.300s", len(err.Error()), err)
	}
	info, _ := s.Job("emails")
	if info.EnabledErr == nil || len(info.EnabledErr.Error()) > 700 {
		t.Fatalf("EnabledErr = %.300v", info.EnabledErr)
	}
	_ = tickAt(t, s, "emails", t0)
	for line := range strings.Lines(logs.String()) {
		if len(line) > 2048 {
			t.Fatalf("a log line of %d bytes: %.300s", len(line), line)
		}
	}
	if !strings.Contains(logs.String(), "names no flag") {
		t.Fatalf("the huge message was not logged:\n%.2000s", logs.String())
	}
}

// ksLogBuffer is a bytes.Buffer safe for concurrent writes.
type ksLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *ksLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *ksLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Item 6: pub/sub ignores SELECT. Two services on DB 0 and DB 1 of one
// server, with the default prefix, use different channels: a flip on one
// does not even make the other re-read, while flips within each service
// still reach all its instances at once.
func TestRedisKillSwitchChannelPerDatabase(t *testing.T) {
	srv := redistest.Start(t)
	const resync = time.Minute // only messages can propagate in time
	a1, ca1 := ksCounted(t, srv, 0, redisResync(resync))
	a2, _ := ksCounted(t, srv, 0, redisResync(resync))
	b1, cb1 := ksCounted(t, srv, 1, redisResync(resync))
	b2, cb2 := ksCounted(t, srv, 1, redisResync(resync))
	ksLoaded(t, a1, a2, b1, b2)
	if a1.channel != "cronguard:killswitch:flips:db0" || b1.channel != "cronguard:killswitch:flips:db1" {
		t.Fatalf("channels %q and %q", a1.channel, b1.channel)
	}
	ctx := context.Background()
	sa, _ := newTest(t, WithKillSwitch(a1))
	sb, _ := newTest(t, WithKillSwitch(b1))
	job := JobFunc(func(context.Context) error { return nil })
	for _, s := range []*Scheduler{sa, sb} {
		if err := s.Register("emails", "@hourly", job); err != nil {
			t.Fatal(err)
		}
	}

	b1Reads, b2Reads := cb1.get("hmget"), cb2.get("hmget")
	if err := sa.SetEnabled(ctx, "emails", false, "service A only"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "A's other instance sees A's flip", ksIs(a2, "emails", false))
	time.Sleep(100 * time.Millisecond) // B would have heard it by now
	if !ksIs(b1, "emails", true)() || !ksIs(b2, "emails", true)() {
		t.Fatal("a flip on DB 0 switched off the job on DB 1")
	}
	if cb1.get("hmget") != b1Reads || cb2.get("hmget") != b2Reads {
		t.Fatalf("a flip on DB 0 made the DB 1 instances re-read (%d, %d HMGETs)", cb1.get("hmget")-b1Reads, cb2.get("hmget")-b2Reads)
	}
	if rep := tickAt(t, sb, "emails", t0); rep.Outcome() != "done" {
		t.Fatalf("service B: report = %v", rep)
	}

	aReads := ca1.get("hmget")
	if err := sb.SetEnabled(ctx, "emails", false, "service B"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "B's other instance sees B's flip", ksIs(b2, "emails", false))
	if err := sb.SetEnabled(ctx, "emails", true, "service B again"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "B's other instance sees B's flip back", ksIs(b2, "emails", true))
	time.Sleep(100 * time.Millisecond)
	if !ksIs(a1, "emails", false)() || ca1.get("hmget") != aReads {
		t.Fatal("a flip on DB 1 reached the DB 0 instances")
	}
}

// Item 7: the hash key overwritten with another type (WRONGTYPE) is a
// broken store, not a healthy one: Enabled fails (the fail policy holds the
// last known value, with an EventFlag), Err and JobInfo.EnabledErr say so,
// SetEnabled returns the error but an off still stops the job on this
// instance; once the key is repaired the switch follows Redis again.
func TestRedisKillSwitchWrongTypeSurfaces(t *testing.T) {
	srv := redistest.Start(t)
	k, s, rec, ran := ksEmails(t, srv)
	if rep := tickAt(t, s, "emails", t0); rep.Outcome() != "done" || *ran != 1 {
		t.Fatalf("report = %v", rep)
	}
	ctx := context.Background()
	rdb := srv.Client(t)
	if err := rdb.Set(ctx, k.key, "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, 3*time.Second, "Err reports the broken key", func() bool {
		err := k.Err()
		return err != nil && strings.Contains(err.Error(), "WRONGTYPE")
	})
	t.Logf("WRONGTYPE noticed after %s (resync 200ms)", took)
	if _, err := k.Enabled(ctx, "emails"); err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("Enabled err = %v", err)
	}
	// The last known value (on) holds, visibly.
	if rep := tickAt(t, s, "emails", t0.Add(time.Hour)); rep.Outcome() != "done" || *ran != 2 {
		t.Fatalf("report = %v; want the last known on to hold", rep)
	}
	if ev, ok := rec.find(EventFlag); !ok || !ev.Enabled || !strings.Contains(ev.Err.Error(), "WRONGTYPE") {
		t.Fatalf("EventFlag = %+v, %v", ev, ok)
	}
	info, err := s.Job("emails")
	if err != nil || !info.Enabled || info.EnabledErr == nil || !strings.Contains(info.EnabledErr.Error(), "WRONGTYPE") {
		t.Fatalf("JobInfo = %+v, %v", info, err)
	}

	// Switching off cannot be written, says so, and still stops the job here.
	err = s.SetEnabled(ctx, "emails", false, "stop it")
	if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") || !strings.Contains(err.Error(), `"emails"`) {
		t.Fatalf("SetEnabled on a broken key: err = %v", err)
	}
	if rep := tickAt(t, s, "emails", t0.Add(2*time.Hour)); skipOf(rep) != "killed" || *ran != 2 {
		t.Fatalf("after a failed SetEnabled off: report = %v, ran %d; want off here", rep, *ran)
	}

	// Repaired: the store's answer replaces the local off.
	if err := rdb.Del(ctx, k.key).Err(); err != nil {
		t.Fatal(err)
	}
	ksLoaded(t, k)
	if rep := tickAt(t, s, "emails", t0.Add(3*time.Hour)); rep.Outcome() != "done" || *ran != 3 {
		t.Fatalf("after repair: report = %v", rep)
	}
}

// Item 8: the subscription's connection is black-holed while command
// connections work. The switch notices within its stated bound (2s), falls
// back to re-reading the hash, and a flip whose message it never got stops
// the job, with EventFlags that show the degradation.
func TestRedisKillSwitchSilentSubscription(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	rdb := proxy.Client(t)
	cnt := &ksCounter{}
	rdb.AddHook(cnt)
	k, err := NewRedisKillSwitch(rdb, WithLogger(ksQuiet), redisResync(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	other := ksNew(t, srv)
	ksLoaded(t, k, other)
	s, rec := newTest(t, WithKillSwitch(k))
	var ran atomic.Int32
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { ran.Add(1); return nil })); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Replies on the subscription's connection are lost, and that
	// connection stays silent for good (a black-holed TCP connection);
	// commands work.
	proxy.BlackholeSubscribers()
	silent := time.Now()
	time.Sleep(100 * time.Millisecond)
	flip := time.Now()
	if err := other.SetEnabled(ctx, "emails", false, "while the subscription is silent"); err != nil {
		t.Fatal(err)
	}
	tick := t0
	var last Report
	took := waitFor(t, 4*time.Second, "the job stops without the flip's message", func() bool {
		time.Sleep(20 * time.Millisecond)
		tick = tick.Add(time.Hour)
		last = tickAt(t, s, "emails", tick)
		return skipOf(last) == "killed"
	})
	noticed := k.Err()
	t.Logf("silent subscription: flip honoured %s after the flip (%s after going silent; bound 2s), %d runs meanwhile",
		took, time.Since(silent), ran.Load())
	if d := time.Since(flip); d > 4*time.Second {
		t.Fatalf("flip honoured after %s", d)
	}
	if noticed == nil || !strings.Contains(noticed.Error(), "subscription") {
		t.Fatalf("Err = %v; want the silent subscription", noticed)
	}
	evs := rec.kind(EventFlag)
	if len(evs) == 0 || evs[len(evs)-1].Enabled || !strings.Contains(evs[len(evs)-1].Err.Error(), "answering from the hash") {
		t.Fatalf("EventFlags = %+v", evs)
	}
	if info, _ := s.Job("emails"); info.Enabled || info.EnabledErr == nil {
		t.Fatalf("JobInfo = %+v", info)
	}
	// Still silent: the hash is re-read every 500ms (not only when the
	// next new subscription is found silent too, every 1.5s or so).
	reads := cnt.get("hgetall")
	time.Sleep(3 * time.Second)
	if n := cnt.get("hgetall") - reads; n < 4 {
		t.Fatalf("%d full reads of the hash in 3s of silence; want one every 500ms", n)
	}

	// Replies flow again on new connections: the subscription is made anew
	// and the switch is healthy; flips arrive by message again.
	proxy.Resume()
	ksLoaded(t, k)
	if err := other.SetEnabled(ctx, "emails", true, "fixed"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Second, "flip by message after recovery", ksIs(k, "emails", true))
}

// How fast a silent subscription is noticed, against its stated bound.
func TestRedisKillSwitchSilentSubscriptionNoticedWithinBound(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	k, err := NewRedisKillSwitch(proxy.Client(t), WithLogger(ksQuiet))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	ksLoaded(t, k)
	const bound = 2 * time.Second // stated; ksPingEvery+ksPongTimeout is 1.5s
	for i := range 3 {
		proxy.BlackholeSubscribers()
		took := waitFor(t, bound+2*time.Second, "silence noticed", func() bool { return k.Err() != nil })
		t.Logf("round %d: silence noticed after %s (stated bound %s)", i, took, bound)
		proxy.Resume()
		ksLoaded(t, k)
		time.Sleep(time.Duration(i) * 200 * time.Millisecond)
	}
}

// Item 9: values an operator wrote by hand that cannot be read. The last
// known value holds (documented) and JobInfo.EnabledErr names the value.
func TestRedisKillSwitchUnreadableValueShowsInJobInfo(t *testing.T) {
	srv := redistest.Start(t)
	k, s, rec, ran := ksEmails(t, srv)
	ctx := context.Background()
	rdb := srv.Client(t)
	tick := t0
	for i, v := range []string{"disabled", "no", `{"enabled":"false"}`} {
		if err := rdb.HDel(ctx, k.key, "emails").Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Second, "readable again", ksIs(k, "emails", true))
		tick = tick.Add(time.Hour)
		if rep := tickAt(t, s, "emails", tick); rep.Outcome() != "done" {
			t.Fatalf("%s: report = %v", v, rep)
		}
		if err := rdb.HSet(ctx, k.key, "emails", v).Err(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Second, "unreadable value seen", func() bool {
			_, err := k.Enabled(ctx, "emails")
			return err != nil
		})
		tick = tick.Add(time.Hour)
		if rep := tickAt(t, s, "emails", tick); rep.Outcome() != "done" || *ran != 2*(i+1) {
			t.Fatalf("%s: report = %v, ran %d; want the last known on to hold", v, rep, *ran)
		}
		info, err := s.Job("emails")
		if err != nil || !info.Enabled || info.EnabledErr == nil || !strings.Contains(info.EnabledErr.Error(), fmt.Sprintf("%q", v)) {
			t.Fatalf("%s: JobInfo = %+v, %v", v, info, err)
		}
		if evs := rec.kind(EventFlag); len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Err.Error(), "cannot read value") {
			t.Fatalf("%s: EventFlags = %v", v, evs)
		}
	}
}

// Item 9: a flag name that is not valid UTF-8 would be flipped under
// another name (JSON turns it into U+FFFD): refused with ErrInvalidFlag,
// naming the job and the value.
func TestInvalidUTF8FlagRefused(t *testing.T) {
	s, _ := newTest(t)
	job := JobFunc(func(context.Context) error { return nil })
	for _, tc := range []struct {
		name string
		opts []JobOption
		want string
	}{
		{"emails\xff", nil, `"emails\xff"`},
		{"emails", []JobOption{Flag("fl\xfeg")}, `"fl\xfeg"`},
	} {
		err := s.Register(tc.name, "@hourly", job, tc.opts...)
		if !errors.Is(err, ErrInvalidFlag) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.name)) {
			t.Errorf("Register(%q): err = %v", tc.name, err)
		}
	}
	if err := s.Register("émails", "@hourly", job); err != nil {
		t.Fatalf("valid UTF-8 refused: %v", err)
	}
	srv := redistest.Start(t)
	k := ksNew(t, srv)
	err := k.SetEnabled(context.Background(), "a\xffb", false, "")
	if !errors.Is(err, ErrInvalidFlag) || !strings.Contains(err.Error(), `"a\xffb"`) {
		t.Fatalf("RedisKillSwitch.SetEnabled: err = %v", err)
	}
}

// A reload (HGETALL) under way when this instance flips a flag must not
// put the older value back: the reload's reply is held by the proxy until
// after SetEnabled returned. The subscription is black-holed meanwhile, so
// no message re-read can hide a wrong overwrite.
func TestRedisKillSwitchReloadKeepsFlipMadeDuringIt(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.StartProxy(t, srv.Addr())
	k, err := NewRedisKillSwitch(proxy.Client(t), WithLogger(ksQuiet), redisResync(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Close() })
	ksLoaded(t, k)
	ctx := context.Background()

	proxy.DropSubscribers()
	held, release := proxy.StallNext("HGETALL")
	defer release()
	k.requestAll("test")
	select {
	case <-held:
	case <-time.After(time.Second):
		t.Fatal("reload not held within 1s")
	}
	if err := k.SetEnabled(ctx, "emails", false, "during the reload"); err != nil {
		t.Fatal(err)
	}
	reloads := func() time.Time { k.mu.RLock(); defer k.mu.RUnlock(); return k.lastReload }
	startedAt := reloads()
	release()
	// The held reload applies now; the next one (none before the silence
	// is noticed, 1s at least) would read the flip anyway.
	time.Sleep(200 * time.Millisecond)
	if reloads() != startedAt {
		t.Skip("another reload ran meanwhile: the check would prove nothing")
	}
	if st := k.state("emails"); st.Enabled || st.Reason != "during the reload" {
		t.Fatalf("after a reload that began before the flip: State = %+v; want the flip", st)
	}
}
