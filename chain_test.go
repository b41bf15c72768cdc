package cronguard

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestGuardOrderKillSwitchBeforeClaim(t *testing.T) {
	spy := &spyLocker{Locker: NewMemoryLocker()}
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithLocker(spy), WithKillSwitch(ks))
	ran := 0
	if err := s.Register("j", "@every 1m", JobFunc(func(context.Context) error { ran++; return nil })); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_ = ks.SetEnabled(ctx, "j", false, "test")

	rep := tickAt(t, s, "j", t0)
	if skipOf(rep) != "killed" || !errors.Is(rep.Err, ErrKilled) {
		t.Fatalf("report = %+v, want skipped killed", rep)
	}
	if n := spy.claims.Load(); n != 0 {
		t.Fatalf("a killed job claimed its tick %d times: the kill switch must come first", n)
	}
	if ran != 0 {
		t.Fatal("killed job ran")
	}

	// Manual runs bypass the kill switch, but not the lock.
	rep, err := s.RunManually(ctx, "j")
	if err != nil || ran != 1 || rep.Trigger != TriggerManual {
		t.Fatalf("manual run of a killed job: ran=%d err=%v report=%+v", ran, err, rep)
	}
	if spy.claims.Load() != 0 || spy.acquires.Load() != 1 {
		t.Fatalf("manual run: claims=%d acquires=%d, want 0 claims and the lock taken", spy.claims.Load(), spy.acquires.Load())
	}
}

// The claim and the lock are one Locker call; a tick that is taken takes
// no lock (the fencing counter shows every lock taken).
func TestGuardOrderClaimBeforeLock(t *testing.T) {
	mem := NewMemoryLocker()
	spy := &spyLocker{Locker: mem}
	s, _ := newTest(t, WithLocker(spy))
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil }))
	if rep := tickAt(t, s, "j", t0); rep.Outcome() != "done" {
		t.Fatalf("first tick: %+v", rep)
	}
	rep := tickAt(t, s, "j", t0) // the same tick again, as a second instance would
	if skipOf(rep) != "tick_taken" || !errors.Is(rep.Err, ErrTickTaken) || !strings.Contains(rep.Err.Error(), `"test"`) {
		t.Fatalf("second run of one tick: %+v, want skipped tick_taken naming the holder", rep)
	}
	if spy.acquires.Load() != 0 || spy.claims.Load() != 2 {
		t.Fatalf("acquires = %d, claims = %d: scheduled runs claim and lock in one call", spy.acquires.Load(), spy.claims.Load())
	}
	l, err := mem.Acquire(context.Background(), "j", time.Second)
	if err != nil || l.Token() != 2 {
		t.Fatalf("lock after the two ticks: %v, token %v; a taken tick must not reach the lock", err, l)
	}
	_ = l.Release(context.Background())
	if rep := tickAt(t, s, "j", t0.Add(time.Minute)); rep.Outcome() != "done" {
		t.Fatalf("next tick: %+v; a skipped tick must not block the next", rep)
	}
}

func TestMiddlewareOutermost(t *testing.T) {
	var seen []string
	mw := func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			err := next.Run(ctx)
			var se *SkipError
			if errors.As(err, &se) && se.Job == "j" && se.Reason == ErrKilled {
				seen = append(seen, "killed")
			} else {
				seen = append(seen, "ran")
			}
			return err
		})
	}
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithMiddleware(mw), WithKillSwitch(ks))
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil }))
	tickAt(t, s, "j", t0)
	_ = ks.SetEnabled(context.Background(), "j", false, "")
	tickAt(t, s, "j", t0.Add(time.Minute))
	if want := []string{"ran", "killed"}; !slices.Equal(seen, want) {
		t.Fatalf("middleware saw %v, want %v: it must wrap the guards", seen, want)
	}
}

func TestOverlapSkip(t *testing.T) {
	s, rec := newTest(t)
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b)
	first := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	rep := tickAt(t, s, "j", t0.Add(time.Minute))
	if skipOf(rep) != "overlap" || !errors.Is(rep.Err, ErrOverlap) {
		t.Fatalf("tick during a run: %+v, want skipped overlap", rep)
	}
	if ev, ok := rec.find(EventSkipped); !ok || ev.Skip != "overlap" {
		t.Fatalf("no skipped event with reason overlap: %+v", ev)
	}
	close(b.release)
	if r := recv(t, first); r.Outcome() != "done" {
		t.Fatalf("first run: %+v", r)
	}
}

func TestOverlapQueueCoalesces(t *testing.T) {
	s, _ := newTest(t)
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, QueueOverlap())
	first, queued := queueBehind(t, s, b)
	// The second run is queued: a third tick is coalesced.
	if rep := tickAt(t, s, "j", t0.Add(2*time.Minute)); skipOf(rep) != "overlap" {
		t.Fatalf("third tick while one waits: %+v, want skipped (coalesced)", rep)
	}
	b.release <- struct{}{} // ends the first run
	if tick := b.waitStarted(t); !tick.Equal(t0.Add(time.Minute)) {
		t.Fatalf("queued run has tick %v, want %v", tick, t0.Add(time.Minute))
	}
	close(b.release)
	if r := recv(t, first); r.Outcome() != "done" {
		t.Fatalf("first: %+v", r)
	}
	if r := recv(t, queued); r.Outcome() != "done" || !r.Tick.Equal(t0.Add(time.Minute)) {
		t.Fatalf("queued: %+v", r)
	}
	if n := b.runs.Load(); n != 2 {
		t.Fatalf("runs = %d, want 2 (first + one queued)", n)
	}
}

func TestOverlapAllow(t *testing.T) {
	s, _ := newTest(t)
	b := newBlocker()
	var tokens []int64
	_ = s.Register("j", "@every 1m", JobFunc(func(ctx context.Context) error {
		tokens = append(tokens, tokenFrom(ctx))
		return b.Run(ctx)
	}), AllowOverlap())
	first := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	second := goAsync(func() Report { return tickAt(t, s, "j", t0.Add(time.Minute)) })
	b.waitStarted(t) // both run at once
	close(b.release)
	for _, ch := range []<-chan Report{first, second} {
		if r := recv(t, ch); r.Outcome() != "done" || r.Token != 0 {
			t.Fatalf("run: %+v; want done, with no lock's token", r)
		}
	}
	if tokens[0] != 0 || tokens[1] != 0 {
		t.Fatal("AllowOverlap runs took the run lock")
	}
	// Each tick still runs once.
	if r := tickAt(t, s, "j", t0); skipOf(r) != "tick_taken" {
		t.Fatalf("repeat tick under AllowOverlap: %+v", r)
	}
}

func TestManualVsScheduledContention(t *testing.T) {
	s, _ := newTest(t)
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b)
	ctx := context.Background()

	scheduled := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	rep, err := s.RunManually(ctx, "j")
	if !errors.Is(err, ErrLocked) || skipOf(rep) != "locked" || !strings.Contains(err.Error(), `"j"`) {
		t.Fatalf("manual run during a scheduled one: err=%v report=%+v, want ErrLocked naming the job", err, rep)
	}
	b.release <- struct{}{}
	recv(t, scheduled)

	manual := goAsync(func() error { _, err := s.RunManually(ctx, "j"); return err })
	b.waitStarted(t)
	if r := tickAt(t, s, "j", t0.Add(time.Minute)); skipOf(r) != "locked" || !errors.Is(r.Err, ErrLocked) {
		t.Fatalf("tick during a manual run: %+v, want skipped locked", r)
	}
	close(b.release)
	if err := recv(t, manual); err != nil {
		t.Fatal(err)
	}
}

func TestLockLostCancelsRun(t *testing.T) {
	locker := NewMemoryLocker().(*memoryLocker)
	s, rec := newTest(t, WithLocker(locker))
	b := newBlocker()
	var token int64
	_ = s.Register("j", "@every 1m", JobFunc(func(ctx context.Context) error {
		token = tokenFrom(ctx)
		return b.Run(ctx)
	}), LockTTL(150*time.Millisecond))
	run := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	locker.forget("j") // as if the key expired or was deleted
	rep := recv(t, run)
	if rep.Outcome() != "lock_lost" || !errors.Is(rep.Err, ErrLockLost) {
		t.Fatalf("report = %+v, want lock_lost", rep)
	}
	if _, ok := rec.find(EventLockLost); !ok {
		t.Fatal("no lock_lost event")
	}
	if token != 1 || rep.Token != 1 {
		t.Fatalf("first lease token = %d in the job, %d in the report; want 1", token, rep.Token)
	}
	// The lock is free again and the fencing token grows.
	_ = s.Register("k", "@every 1m", JobFunc(func(context.Context) error { return nil }))
	l, err := locker.Acquire(context.Background(), "j", time.Second)
	if err != nil || l.Token() != 2 {
		t.Fatalf("re-acquire: %v, token %v", err, l)
	}
}

// A memory lock is pinned to its run, not extended every ttl/3: taking it
// away reaches the run at once, even with a TTL of an hour (a watchdog
// would have noticed 20 minutes later), and a pinned lock never expires
// under a run, whatever the clock says.
func TestMemoryLockPinnedToItsRun(t *testing.T) {
	locker := NewMemoryLocker().(*memoryLocker)
	now := time.Now()
	locker.now = func() time.Time { return now }
	s, _ := newTest(t, WithLocker(locker))
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, LockTTL(time.Hour))
	run := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	now = now.Add(2 * time.Hour) // past the TTL: the run still holds its lock
	if _, err := locker.Acquire(context.Background(), "j", time.Second); !errors.Is(err, ErrLocked) {
		t.Fatalf("a running job's lock, past its TTL: %v, want ErrLocked", err)
	}
	locker.forget("j")
	rep := recv(t, run)
	if rep.Outcome() != "lock_lost" || !errors.Is(rep.Err, ErrLockLost) {
		t.Fatalf("report = %+v, want lock_lost", rep)
	}
	if _, err := locker.Acquire(context.Background(), "j", time.Second); err != nil {
		t.Fatalf("the lock after the run: %v", err)
	}
}

// forgettingLocker takes every lock it grants away again at once, between
// the claim and the run, as a key deleted in that instant would be.
type forgettingLocker struct{ *memoryLocker }

func (f forgettingLocker) Claim(ctx context.Context, job string, tick time.Time, ttl time.Duration, inst string) (Claim, error) {
	c, err := f.memoryLocker.Claim(ctx, job, tick, ttl, inst)
	f.forget(job)
	return c, err
}

// A pinned lock taken away before the run starts: the job does not run.
func TestMemoryLockLostBeforeStart(t *testing.T) {
	s, rec := newTest(t, WithLocker(forgettingLocker{NewMemoryLocker().(*memoryLocker)}))
	var ran atomic.Bool
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error { ran.Store(true); return nil }))
	rep := tickAt(t, s, "j", t0)
	if rep.Outcome() != "lock_lost" || !errors.Is(rep.Err, ErrLockLost) || ran.Load() {
		t.Fatalf("report = %+v, job ran: %v; want lock_lost and no run", rep, ran.Load())
	}
	if _, ok := rec.find(EventLockLost); !ok {
		t.Fatal("no lock_lost event")
	}
}

func TestLeaseExtendedWhileJobRuns(t *testing.T) {
	locker := NewMemoryLocker()
	s, _ := newTest(t, WithLocker(locker))
	_ = s.Register("j", "@every 1m", JobFunc(func(ctx context.Context) error {
		select { // runs for 4 TTLs: only the watchdog keeps the lock
		case <-time.After(1200 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}), LockTTL(300*time.Millisecond))
	run := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	time.Sleep(750 * time.Millisecond)
	if _, err := locker.Acquire(context.Background(), "j", time.Second); !errors.Is(err, ErrLocked) {
		t.Fatalf("lock not held 2.5 TTLs into the run: %v", err)
	}
	if rep := recv(t, run); rep.Outcome() != "done" {
		t.Fatalf("report = %+v", rep)
	}
	if _, err := locker.Acquire(context.Background(), "j", time.Second); err != nil {
		t.Fatalf("lock not released after the run: %v", err)
	}
}

func TestTimeout(t *testing.T) {
	s, _ := newTest(t)
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, Timeout(30*time.Millisecond))
	rep := tickAt(t, s, "j", t0)
	if rep.Outcome() != "timeout" || !errors.Is(rep.Err, ErrTimeout) {
		t.Fatalf("report = %+v, want timeout", rep)
	}
}

func TestHardKill(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithKillSwitch(ks), WithKillPoll(5*time.Millisecond))
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, HardKill())
	run := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	_ = ks.SetEnabled(context.Background(), "j", false, "stop now")
	rep := recv(t, run)
	if rep.Outcome() != "killed" || !errors.Is(rep.Err, ErrKilled) {
		t.Fatalf("report = %+v, want killed", rep)
	}
}

func TestPanicBecomesFailedReport(t *testing.T) {
	s, rec := newTest(t)
	calls := 0
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error {
		calls++
		if calls == 1 {
			panic("boom")
		}
		return nil
	}))
	rep := tickAt(t, s, "j", t0)
	if rep.Outcome() != "error" || !errors.Is(rep.Err, ErrPanic) || !strings.Contains(rep.Err.Error(), "boom") {
		t.Fatalf("report = %+v, want ErrPanic", rep)
	}
	ev, _ := rec.find(EventFinished)
	if !strings.Contains(ev.Stack, "chain_test.go") {
		t.Fatalf("finished event has no stack of the panic: %q", ev.Stack)
	}
	if r := tickAt(t, s, "j", t0.Add(time.Minute)); r.Outcome() != "done" {
		t.Fatalf("the run after a panic: %+v", r)
	}
	// The lock was released despite the panic.
	if _, err := s.RunManually(context.Background(), "j"); err != nil {
		t.Fatal(err)
	}
}

// A job reads its tick from ReportFrom: the scheduled tick, zero for a
// manual run.
func TestReportFromTick(t *testing.T) {
	s, _ := newTest(t)
	var got []time.Time
	_ = s.Register("j", "@every 1m", JobFunc(func(ctx context.Context) error {
		r, _ := ReportFrom(ctx, nil)
		got = append(got, r.Tick)
		return nil
	}))
	tickAt(t, s, "j", t0)
	if _, err := s.RunManually(context.Background(), "j"); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got[0].Equal(t0) || !got[1].IsZero() {
		t.Fatalf("ticks = %v, want [%v, zero]", got, t0)
	}
}

func TestEventsAndLogging(t *testing.T) {
	var buf bytes.Buffer
	rec := &recorder{}
	s, err := New(WithObserver(rec.observe), WithInstanceID("i1"),
		WithLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	_ = s.Register("mail", "@every 1m", Batch[int]{
		Fetch: pages(3, 2),
		Process: func(_ context.Context, i int) error {
			if i == 3 {
				return errors.New("bounced")
			}
			return nil
		},
		Key:  itoa,
		Size: 2,
	})
	tickAt(t, s, "mail", t0)
	want := []EventKind{EventStarted, EventBatchDone, EventItemFailed, EventBatchDone, EventBatchDone, EventFinished}
	if got := rec.kinds("mail"); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	ev, _ := rec.find(EventItemFailed)
	if ev.Item != "3" || ev.Instance != "i1" || !ev.Tick.Equal(t0) {
		t.Fatalf("item_failed event = %+v", ev)
	}
	for _, s := range []string{"cronguard: started", "cronguard: item_failed", `item=3`, "bounced", "cronguard: finished", "processed=5", "failed=1"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, buf.String())
		}
	}
}

func TestFinishedLogLevel(t *testing.T) {
	for _, c := range []struct {
		r    Report
		want slog.Level
	}{
		{Report{}, slog.LevelInfo},
		{Report{More: true}, slog.LevelInfo},
		{Report{Err: ended(ErrKilled, nil)}, slog.LevelWarn},
		{Report{Err: ended(ErrStopped, context.Canceled)}, slog.LevelWarn},
		{Report{Err: ErrRunaway}, slog.LevelError},
		{Report{Err: ended(ErrLockLost, nil)}, slog.LevelError},
		{Report{Err: errors.New("boom")}, slog.LevelError},
	} {
		if got := finishedLevel(&c.r); got != c.want {
			t.Errorf("%s: level %v, want %v", c.r.Outcome(), got, c.want)
		}
	}
}

func TestReportString(t *testing.T) {
	r := Report{Job: "mail", Trigger: TriggerManual, Duration: 161 * time.Microsecond, Batches: 1, Processed: 1}
	if got, want := r.String(), "mail (manual): done after 161µs, 1 batch(es), 1 processed, 0 failed"; got != want {
		t.Fatalf("String = %q, want %q", got, want)
	}
	r = Report{Job: "mail", Trigger: TriggerSchedule, Err: &SkipError{Job: "mail", Reason: ErrKilled}}
	if got := r.String(); !strings.Contains(got, "skipped (killed)") {
		t.Fatalf("String = %q", got)
	}
}

// A run queued behind another (QueueOverlap) asks the kill switch again when
// its turn comes: a flip while it waited stops it.
func TestOverlapQueueRechecksKillSwitch(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithKillSwitch(ks))
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, QueueOverlap())
	first, queued := queueBehind(t, s, b)
	_ = ks.SetEnabled(context.Background(), "j", false, "operator")
	close(b.release)
	recv(t, first)
	if r := recv(t, queued); skipOf(r) != "killed" {
		t.Fatalf("queued run after the flip: %+v, want skipped killed", r)
	}
	if n := b.runs.Load(); n != 1 {
		t.Fatalf("runs = %d, want 1", n)
	}
}

// queueBehind starts a run of job "j" (an QueueOverlap job on blocker b)
// at tick t0, then one at t0+1m, and returns once the second waits behind
// the first.
func queueBehind(t *testing.T, s *Scheduler, b *blocker) (first, queued <-chan Report) {
	t.Helper()
	first = goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	queued = goAsync(func() Report { return tickAt(t, s, "j", t0.Add(time.Minute)) })
	e, _ := s.lookup("j")
	waitFor(t, 5*time.Second, "second tick queued", func() bool {
		e.overlap.mu.Lock()
		defer e.overlap.mu.Unlock()
		return e.overlap.waiting
	})
	return first, queued
}
