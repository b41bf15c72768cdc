package cronguard

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// Tests of the tick claim without Redis: how a fire maps to a tick, the
// claim mark, missed ticks, and what the scheduler passes to the Locker.

// tickRecorder is a job that records tickFrom of each run.
type tickRecorder struct {
	mu    sync.Mutex
	ticks []time.Time
}

func (r *tickRecorder) Run(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ticks = append(r.ticks, tickFrom(ctx))
	return nil
}

func (r *tickRecorder) all() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.ticks...)
}

// The SIGSTOP scenario: robfig/cron remembered one tick, and after a pause
// longer than the interval it fires twice for it. The second fire stands for
// the same tick, which this instance ran already: it is skipped and
// reported, never run with a made-up tick.
func TestTickNeverInventedOnDoubleFire(t *testing.T) {
	s, rec := newTest(t)
	job := &tickRecorder{}
	if err := s.Register("sweep", "*/5 * * * * *", job); err != nil {
		t.Fatal(err)
	}
	e, _ := s.lookup("sweep")
	due := t0.Add(5 * time.Second)
	if n := e.ticks.Next(t0.Add(2 * time.Second)); !n.Equal(due) { // what robfig/cron asks before the pause
		t.Fatalf("Next = %v", n)
	}
	woke := due.Add(2300 * time.Millisecond) // frozen past the tick, woken before the next
	s.fireAt(e, woke)
	s.fireAt(e, woke.Add(400*time.Millisecond)) // the same stale tick, fired again
	if got := job.all(); len(got) != 1 || !got[0].Equal(due) {
		t.Fatalf("runs with ticks %v, want one run of %s", got, fmtTick(due))
	}
	sk := rec.skips("tick_taken")
	if len(sk) != 1 || !errors.Is(sk[0].Err, ErrTickTaken) || !sk[0].Tick.Equal(due) ||
		!strings.Contains(sk[0].Err.Error(), "run already") {
		t.Fatalf("skips = %+v, want one tick_taken for %s saying it ran here already", sk, fmtTick(due))
	}
	t.Logf("second fire: %v", sk[0].Err)
	// The next real tick runs as usual.
	e.ticks.Next(woke)
	s.fireAt(e, due.Add(5*time.Second+time.Millisecond))
	if got := job.all(); len(got) != 2 || !got[1].Equal(due.Add(5*time.Second)) {
		t.Fatalf("runs %v, want the next tick to run", got)
	}
}

// A fire maps to the latest tick the spec names at or before it, through
// the real chain, with a fake clock: late fires run the latest due tick, the
// ticks in between are reported missed once, and every tickFrom is a tick
// of the spec.
func TestTickLatestDueThroughChain(t *testing.T) {
	s, rec := newTest(t)
	job := &tickRecorder{}
	if err := s.Register("grid", "*/10 * * * * *", job); err != nil {
		t.Fatal(err)
	}
	e, _ := s.lookup("grid")
	sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
	steps := []struct {
		now  time.Time // when robfig/cron fires
		want time.Time // the tick that runs; zero: none
	}{
		{sec(0).Add(3 * time.Millisecond), sec(0)},
		{sec(10).Add(40 * time.Millisecond), sec(10)},
		{sec(47), sec(40)}, // late: 20 and 30 missed
		{sec(48), time.Time{}},
		{sec(50), sec(50)},
	}
	e.ticks.Next(sec(-1))
	for i, st := range steps {
		before := len(job.all())
		s.fireAt(e, st.now)
		e.ticks.Next(st.now) // robfig/cron asks for the next tick after each fire
		got := job.all()
		switch {
		case st.want.IsZero() && len(got) != before:
			t.Fatalf("step %d: fire at %s ran tick %s", i, fmtTick(st.now), fmtTick(got[len(got)-1]))
		case !st.want.IsZero() && (len(got) != before+1 || !got[len(got)-1].Equal(st.want)):
			t.Fatalf("step %d: fire at %s: runs %v, want tick %s", i, fmtTick(st.now), got, fmtTick(st.want))
		}
	}
	for _, tick := range job.all() {
		if tick.Second()%10 != 0 || tick.Nanosecond() != 0 {
			t.Errorf("tick %s is not one the spec names", fmtTick(tick))
		}
	}
	missed := rec.kind(EventMissed)
	if len(missed) != 1 || missed[0].Missed != 2 || !missed[0].MissedFirst.Equal(sec(20)) ||
		!missed[0].MissedLast.Equal(sec(30)) || !missed[0].Tick.Equal(sec(40)) || missed[0].Kind != EventMissed ||
		missed[0].Err == nil || !strings.Contains(missed[0].Err.Error(), `ticks missed: job "grid"`) {
		t.Fatalf("missed events = %+v, want one: 2 ticks, 20s to 30s, before 40s", missed)
	}
	if info, _ := s.Job("grid"); !info.Prev.Equal(sec(50)) {
		t.Errorf("JobInfo.Prev = %v", info.Prev)
	}
}

// latestTick agrees with a walk of Next on every kind of spec, with and
// without a hint.
func TestLatestTick(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip(err)
	}
	specs := []string{"* * * * * *", "*/7 * * * * *", "0 30 2 * * *", "@every 90s", "@every 1h",
		"CRON_TZ=Europe/Paris 30 2 * * *", "0 0 29 2 *", "15 10 * * 1-5"}
	nows := []time.Time{t0, t0.Add(123456789 * time.Nanosecond), time.Date(2026, 3, 29, 3, 10, 0, 0, paris),
		time.Date(2026, 10, 25, 2, 45, 0, 0, paris), time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC)}
	for _, spec := range specs {
		sched, err := parseSpec(spec, time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		for _, now := range nows {
			want := walkLatest(sched, now)
			if got := latestTick(sched, now, time.Time{}); !got.Equal(want) {
				t.Errorf("%q at %s: latestTick = %s, want %s", spec, fmtTick(now), fmtTick(got), fmtTick(want))
			}
			hint := walkLatest(sched, want.Add(-time.Nanosecond))
			if got := latestTick(sched, now, hint); !got.Equal(want) {
				t.Errorf("%q at %s, hint %s: latestTick = %s, want %s", spec, fmtTick(now), fmtTick(hint), fmtTick(got), fmtTick(want))
			}
			if got := latestTick(sched, now, want); !got.Equal(want) {
				t.Errorf("%q at %s, hint the answer: %s", spec, fmtTick(now), fmtTick(got))
			}
		}
	}
}

// walkLatest finds the latest tick at or before now by walking Next over
// ever larger windows before now (slow; for the test only).
func walkLatest(s cron.Schedule, now time.Time) time.Time {
	for _, window := range []time.Duration{time.Minute, 48 * time.Hour, 5 * 366 * 24 * time.Hour} {
		var last time.Time
		for tick := s.Next(now.Add(-window)); !tick.IsZero() && !tick.After(now); tick = s.Next(tick) {
			last = tick
		}
		if !last.IsZero() {
			return last
		}
	}
	return time.Time{}
}

// Missed ticks: none for the first claim ever, none between consecutive
// ticks, the count and range otherwise, raised once whatever the number of
// instances (only the winner of the tick raises it), and capped.
func TestMissedTicks(t *testing.T) {
	shared := NewMemoryLocker()
	a, recA := newTest(t, WithLocker(shared), WithInstanceID("a"))
	b, recB := newTest(t, WithLocker(shared), WithInstanceID("b"))
	for _, s := range []*Scheduler{a, b} {
		if err := s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil })); err != nil {
			t.Fatal(err)
		}
	}
	min := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }
	tickAt(t, a, "j", min(0))
	tickAt(t, b, "j", min(0))
	tickAt(t, b, "j", min(1))
	if n := len(recA.kind(EventMissed)) + len(recB.kind(EventMissed)); n != 0 {
		t.Fatalf("%d missed events for a first claim and consecutive ticks", n)
	}
	tickAt(t, a, "j", min(6))
	tickAt(t, b, "j", min(6))
	all := append(recA.kind(EventMissed), recB.kind(EventMissed)...)
	if len(all) != 1 {
		t.Fatalf("missed events: %+v, want exactly one across the instances", all)
	}
	if ev := all[0]; ev.Missed != 4 || ev.MissedCapped || !ev.MissedFirst.Equal(min(2)) || !ev.MissedLast.Equal(min(5)) ||
		ev.Instance != "a" || ev.Job != "j" || !ev.Tick.Equal(min(6)) {
		t.Fatalf("missed event = %+v", ev)
	}

	sched, _ := parseSpec("* * * * * *", time.UTC)
	n, first, last, capped := missedTicks(sched, t0, t0.Add(24*time.Hour))
	if n != maxMissedWalk || !capped || !first.Equal(t0.Add(time.Second)) || !last.Equal(t0.Add(24*time.Hour-time.Second)) {
		t.Errorf("a day of seconds: %d %v %s %s", n, capped, fmtTick(first), fmtTick(last))
	}
}

// What the scheduler passes to the Locker: the tick it runs, the job's lock
// TTL (none for AllowOverlap) and its instance; and the lock the claim
// takes lives for that TTL.
func TestClaimPassesTickAndLockTTL(t *testing.T) {
	mem := NewMemoryLocker().(*memoryLocker)
	spy := &spyLocker{Locker: mem}
	s, _ := newTest(t, WithLocker(spy), WithInstanceID("web-7"))
	var holdsFor time.Duration
	job := JobFunc(func(ctx context.Context) error {
		j := mem.job("locked")
		j.mu.Lock()
		holdsFor = time.Until(j.expires)
		j.mu.Unlock()
		return nil
	})
	_ = s.Register("locked", "@every 1m", job, LockTTL(7*time.Second))
	_ = s.Register("free", "@every 1m", JobFunc(func(context.Context) error { return nil }), AllowOverlap(), LockTTL(9*time.Second))
	_ = s.Register("default", "@every 1m", JobFunc(func(context.Context) error { return nil }))
	tickAt(t, s, "locked", t0)
	tickAt(t, s, "free", t0.Add(time.Minute))
	tickAt(t, s, "default", t0.Add(2*time.Minute))
	want := []spyClaim{
		{"locked", t0, 7 * time.Second, "web-7"},
		{"free", t0.Add(time.Minute), 0, "web-7"},
		{"default", t0.Add(2 * time.Minute), defaultLockTTL, "web-7"},
	}
	got := spy.claimCalls()
	if len(got) != len(want) {
		t.Fatalf("claims %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].job != want[i].job || !got[i].tick.Equal(want[i].tick) || got[i].lockTTL != want[i].lockTTL || got[i].instance != want[i].instance {
			t.Errorf("claim %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if holdsFor <= 6*time.Second || holdsFor > 7*time.Second {
		t.Errorf("during the run the lock held for %s more, want about the 7s LockTTL", holdsFor)
	}
	if spy.acquires.Load() != 0 {
		t.Errorf("scheduled runs called Acquire %d times: the claim takes the lock", spy.acquires.Load())
	}
}

// The memory claim mark: newer ticks win, older and equal ones lose naming
// the holder and tick, a won tick whose lock is held moves the mark all the
// same, and the lock comes with the claim.
func TestMemoryLockerClaimMark(t *testing.T) {
	m := NewMemoryLocker().(*memoryLocker)
	ctx := context.Background()
	c, err := m.Claim(ctx, "j", t0, time.Minute, "a")
	if err != nil || !c.Won || c.Holder != "a" || !c.Prev.IsZero() || c.Lease == nil || c.Lease.Token() != 1 {
		t.Fatalf("first claim = %+v, %v", c, err)
	}
	for _, tick := range []time.Time{t0, t0.Add(-time.Second)} {
		if c, err := m.Claim(ctx, "j", tick, time.Minute, "b"); err != nil || c.Won || c.Holder != "a" || !c.HolderTick.Equal(t0) || c.Lease != nil {
			t.Fatalf("claim of %s = %+v, %v; want lost to a at t0", fmtTick(tick), c, err)
		}
	}
	// The run of t0 still holds the lock: t0+1m is won, but locked.
	c2, err := m.Claim(ctx, "j", t0.Add(time.Minute), time.Minute, "b")
	if err != nil || !c2.Won || !c2.Prev.Equal(t0) || c2.Lease != nil || !errors.Is(c2.LockErr, ErrLocked) {
		t.Fatalf("claim while locked = %+v, %v; want won and locked", c2, err)
	}
	if c, _ := m.Claim(ctx, "j", t0.Add(time.Minute), time.Minute, "a"); c.Won || c.Holder != "b" {
		t.Fatalf("the won-but-locked tick was not recorded: %+v", c)
	}
	_ = c.Lease.Release(ctx)
	// Without a lock TTL, claim only.
	c3, err := m.Claim(ctx, "j", t0.Add(2*time.Minute), 0, "a")
	if err != nil || !c3.Won || c3.Lease != nil || c3.LockErr != nil {
		t.Fatalf("claim without lock = %+v, %v", c3, err)
	}
	if _, err := m.Claim(ctx, "j", t0.Add(3*time.Minute), time.Microsecond, "a"); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("lock TTL of 1µs: %v", err)
	}
	marks := 0
	m.jobs.Range(func(any, any) bool { marks++; return true })
	if marks != 1 {
		t.Errorf("%d marks for one job", marks)
	}
}

// A memory lease extends only its own lock: once its lock expired and
// another holder took it, Extend fails and leaves the new lock alone.
func TestMemoryLeaseCannotExtendRetakenLock(t *testing.T) {
	m := NewMemoryLocker().(*memoryLocker)
	now := t0
	m.now = func() time.Time { return now }
	ctx := context.Background()
	l1, err := m.Acquire(ctx, "j", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second) // l1 expired
	l2, err := m.Acquire(ctx, "j", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := l1.Extend(ctx, time.Hour); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Extend of a lease whose lock was re-taken: %v, want ErrLockLost", err)
	}
	if exp := m.job("j").expires; !exp.Equal(now.Add(time.Second)) {
		t.Fatalf("the new holder's lock expires at %s, want %s: the old lease extended it", fmtTick(exp), fmtTick(now.Add(time.Second)))
	}
	if err := l2.Extend(ctx, time.Minute); err != nil {
		t.Fatalf("the holder's own Extend: %v", err)
	}
}

// Manual runs of an AllowOverlap job still take the run lock, so two of
// them never overlap.
func TestManualRunsOfOverlapAllowExclude(t *testing.T) {
	s, _ := newTest(t)
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, AllowOverlap())
	ctx := context.Background()
	first := goAsync(func() error { _, err := s.RunManually(ctx, "j"); return err })
	b.waitStarted(t)
	second := goAsync(func() Report { rep, _ := s.RunManually(ctx, "j"); return rep })
	select {
	case rep := <-second:
		if !errors.Is(rep.Err, ErrLocked) || skipOf(rep) != "locked" {
			t.Errorf("second manual run of an AllowOverlap job: %+v, want ErrLocked", rep)
		}
	case <-b.started:
		t.Error("two manual runs of an AllowOverlap job ran at once")
		b.release <- struct{}{}
	case <-time.After(5 * time.Second):
		t.Fatal("second manual run neither ran nor failed")
	}
	close(b.release)
	if err := recv(t, first); err != nil {
		t.Fatal(err)
	}
}

// The watchdog extends every TTL/3, not only the first time: a run of 5
// TTLs sees about 15 extensions.
func TestWatchdogKeepsTTLThird(t *testing.T) {
	spy := &spyLocker{Locker: NewMemoryLocker()}
	s, _ := newTest(t, WithLocker(spy))
	const ttl = 300 * time.Millisecond
	_ = s.Register("j", "@every 1m", JobFunc(func(ctx context.Context) error {
		select {
		case <-time.After(5 * ttl):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}), LockTTL(ttl))
	if rep := tickAt(t, s, "j", t0); rep.Outcome() != "done" {
		t.Fatalf("report %+v", rep)
	}
	n := spy.extensions.Load()
	t.Logf("%d extensions in a run of 5 TTLs at TTL/3: %v", n, spy.extendTimes())
	// 15 on time; every TTL instead of TTL/3 after the first gives 5.
	if n < 9 || n > 15 {
		t.Errorf("%d extensions in a run of 5 TTLs, want about 15 (one every TTL/3)", n)
	}
}

// QueueOverlap: the queued run claims its tick only when its turn comes;
// another instance claimed a newer tick meanwhile (and found the lock
// held), so the queued tick is skipped as taken, not run late.
func TestOverlapQueueClaimsWhenItsTurnComes(t *testing.T) {
	shared := NewMemoryLocker()
	spy := &spyLocker{Locker: shared}
	a, _ := newTest(t, WithLocker(spy), WithInstanceID("a"))
	b, _ := newTest(t, WithLocker(shared), WithInstanceID("b"))
	blk := newBlocker()
	_ = a.Register("j", "@every 1m", blk, QueueOverlap())
	_ = b.Register("j", "@every 1m", blk, QueueOverlap())
	first, queued := queueBehind(t, a, blk)
	if n := spy.claims.Load(); n != 1 {
		t.Fatalf("%d claims while the second run waits, want 1: a queued run claims when its turn comes", n)
	}
	if r := tickAt(t, b, "j", t0.Add(2*time.Minute)); skipOf(r) != "locked" {
		t.Fatalf("b's newer tick while a runs: %+v, want won but locked", r)
	}
	close(blk.release)
	recv(t, first)
	r := recv(t, queued)
	if skipOf(r) != "tick_taken" || !strings.Contains(r.Err.Error(), `"b"`) {
		t.Fatalf("queued run: %+v, want tick_taken by b", r)
	}
	if n := blk.runs.Load(); n != 1 {
		t.Fatalf("runs = %d, want 1", n)
	}
}
