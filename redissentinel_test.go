package cronguard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Tests of the scheduler across a real Redis Sentinel failover
// (redistest.StartSentinel: a master, a replica, three sentinels;
// down-after-milliseconds 1000). They measure what a failover does to the
// schedule and show, deterministically, what it does when the replica had
// not received the latest claim, lock and fencing counter. The figures go
// to the README (Guarantees and their limits).

// sentinelClient returns a failover client of sn as the README advises
// (ContextTimeoutEnabled, so that socket I/O honours the call budget),
// closed at the end of the test.
func sentinelClient(t *testing.T, sn *redistest.Sentinel) *redis.Client {
	t.Helper()
	opts := sn.FailoverOptions()
	opts.ContextTimeoutEnabled = true
	c := redis.NewFailoverClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// pingUntilOK waits until c reaches a master that answers, after a
// failover (go-redis drops connections to the old master when a sentinel
// announces the switch, and dials the new one).
func pingUntilOK(t *testing.T, c *redis.Client) {
	t.Helper()
	waitFor(t, 15*time.Second, "the failover client to reach the new master", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Set(ctx, "test:ping", "1", 0).Err() == nil
	})
}

// failoverFigures is what one schedule across a failover came to, per job.
type failoverFigures struct {
	ticks, once, twice, missed int
	reported, unreported       int // missed ticks inside an EventMissed range, and not
	falseMissed                int // ticks inside an EventMissed range that ran
	lockLost                   int
	skips                      map[string]int
	outageFirst, outageLast    time.Time // the first and last tick no one ran
}

func (f failoverFigures) String() string {
	var skips []string
	for _, r := range []string{"tick_taken", "backend", "locked", "overlap"} {
		skips = append(skips, fmt.Sprintf("%s=%d", r, f.skips[r]))
	}
	outage := "none"
	if !f.outageFirst.IsZero() {
		outage = fmt.Sprintf("%s..%s", f.outageFirst.Format("15:04:05"), f.outageLast.Format("15:04:05"))
	}
	return fmt.Sprintf("ticks=%d once=%d twice=%d missed=%d (reported %d, unreported %d, reported but ran %d) lock_lost=%d skips[%s] ticks not run %s",
		f.ticks, f.once, f.twice, f.missed, f.reported, f.unreported, f.falseMissed, f.lockLost, strings.Join(skips, " "), outage)
}

// figures counts job's runs per tick from first to last (whole seconds),
// and the events of recs about it.
func figures(log *runLog, recs []*recorder, job string, first, last time.Time) failoverFigures {
	f := failoverFigures{skips: map[string]int{}}
	reported := map[int64]bool{} // Unix seconds: the events' ticks are in UTC, first and last local
	for _, rec := range recs {
		for _, e := range rec.all() {
			if e.Job != job {
				continue
			}
			switch {
			case e.Kind == EventMissed:
				for tick := e.MissedFirst; !tick.After(e.MissedLast); tick = tick.Add(time.Second) {
					reported[tick.Unix()] = true
				}
			case e.Kind == EventLockLost:
				f.lockLost++
			case e.Kind == EventSkipped && !e.Tick.Before(first) && !e.Tick.After(last):
				f.skips[e.Skip]++
				if e.Skip != "tick_taken" {
					// skipped here (overlap with a claim stalled by the
					// failover, store down): a reported decision, not a miss
					reported[e.Tick.Unix()] = true
				}
			}
		}
	}
	for tick := first; !tick.After(last); tick = tick.Add(time.Second) {
		f.ticks++
		n := len(log.who(job, tick))
		switch {
		case n == 0:
			f.missed++
			if reported[tick.Unix()] {
				f.reported++
			} else {
				f.unreported++
			}
			if f.outageFirst.IsZero() {
				f.outageFirst = tick
			}
			f.outageLast = tick
		case n == 1:
			f.once++
		default:
			f.twice++
		}
		if n > 0 && reported[tick.Unix()] {
			f.falseMissed++
		}
	}
	return f
}

// dumpEvents logs job's events from one tick to another, but starts and
// finishes, to tell a failure's story.
func dumpEvents(t *testing.T, recs []*recorder, job string, from, to time.Time) {
	t.Helper()
	for _, rec := range recs {
		for _, e := range rec.all() {
			if e.Job == job && !e.Tick.Before(from) && !e.Tick.After(to) && e.Kind != EventStarted && e.Kind != EventFinished {
				t.Logf("  %s %s tick %s: %s %s %v", e.Time.Format("05.000"), e.Instance, e.Tick.Format("05"), e.Kind, e.Skip, e.Err)
			}
		}
	}
}

// checkTokensGrow checks that job's fencing tokens grow strictly with the
// tick from first to last, across the failover.
func checkTokensGrow(t *testing.T, log *runLog, job string, first, last time.Time) {
	t.Helper()
	var prev int64
	var prevTick time.Time
	for tick := first; !tick.After(last); tick = tick.Add(time.Second) {
		for _, tok := range log.tokens(job, tick) {
			if tok <= prev {
				t.Errorf("job %s: token %d at tick %s is not above %d at tick %s", job, tok, fmtTick(tick), prev, fmtTick(prevTick))
			}
			prev, prevTick = tok, tick
		}
	}
}

// Five instances (WithRedis on a failover client each) run two jobs on
// "* * * * * *" — short, and long (600ms, LockTTL 900ms: claims bounded by
// TTL/3 = 300ms) — with runs delayed 0-200ms at random. Three seconds in,
// while a run of a third job (LockTTL 1.5s) is in flight, the master is
// killed (SIGKILL) or frozen (SIGSTOP, continued once the replica is
// promoted); the schedule goes on for four more seconds.
//
// Guaranteed, and asserted: no tick runs twice (replication was in sync:
// on loopback the replica is microseconds behind, and no instance is late
// for a tick by more than the failover takes); fencing tokens grow with the
// tick across the failover; every tick no one ran is reported by
// EventMissed (the kill falls mid-second, away from the claims, so no claim
// reply is lost); the schedule resumes by itself (the last tick runs once);
// the run in flight is canceled with ErrLockLost within 2×TTL/3 of the
// failover's start (its next extension, bounded by TTL/3, fails). Measured
// and logged: the ticks missed, the skips by reason, the failover time.
func TestRedisSentinelFailoverMidSchedule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mode redistest.FailoverMode
	}{{"kill", redistest.KillMaster}, {"pause", redistest.PauseMaster}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			failoverSchedule(t, tc.name, tc.mode)
		})
	}
}

func failoverSchedule(t *testing.T, name string, mode redistest.FailoverMode) {
	t.Cleanup(rlAwaitDialers)
	sn := redistest.StartSentinel(t)
	log := newRunLog()
	const inflightTTL = 1500 * time.Millisecond
	inflight := newEndingJob()
	delay := func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			if tickFrom(ctx).Equal(t0) { // the run in flight starts at once
				return next.Run(ctx)
			}
			select {
			case <-time.After(time.Duration(rand.IntN(5)) * 50 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			return next.Run(ctx)
		})
	}
	var scheds []*Scheduler
	var recs []*recorder
	for i := range 5 {
		id := fmt.Sprintf("%s-%d", name, i)
		s, rec := redisSched(t, id, sentinelClient(t, sn), WithMiddleware(delay))
		if err := s.Register("short", "* * * * * *", log.job("short", id, jitter(5*time.Millisecond, 30*time.Millisecond))); err != nil {
			t.Fatal(err)
		}
		if err := s.Register("long", "* * * * * *", log.job("long", id, jitter(600*time.Millisecond, 600*time.Millisecond)),
			LockTTL(900*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if err := s.Register("inflight", "0 0 0 1 1 *", inflight.job(), LockTTL(inflightTTL)); err != nil {
			t.Fatal(err)
		}
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	waitSwitchLoaded(t, scheds...)
	startAll(t, scheds...)
	first := nextSecond(time.Now()).Add(time.Second)
	// Mid-second, away from the claims (at 0-200ms past each second), so
	// that no claim is caught between its execution and its reply.
	sleepUntil(first.Add(3*time.Second + 400*time.Millisecond))

	inflightRep := goAsync(func() Report { return tickAt(t, scheds[0], "inflight", t0) })
	inflight.waitStarted(t)
	old := sn.Master()
	began := time.Now()
	promoted := sn.Failover(t, mode)
	took := time.Since(began)
	if mode == redistest.PauseMaster {
		old.Continue(t) // a frozen VM resumes, a master until the sentinels demote it
	}
	if promoted == old {
		t.Fatal("the failover kept the old master")
	}
	last := nextSecond(time.Now()).Add(3 * time.Second)
	sleepUntil(last.Add(time.Second)) // the latest run (200ms + 600ms) is done
	var wg sync.WaitGroup
	for _, s := range scheds {
		wg.Go(func() { stopSched(t, s) })
	}
	wg.Wait()

	e := inflight.ended(t)
	canceled := e.at.Sub(began)
	t.Logf("failover by %s: the run in flight (LockTTL %s) was canceled %s after the failover began: %v",
		name, inflightTTL, canceled.Round(10*time.Millisecond), e.cause)
	if !errors.Is(e.cause, ErrLockLost) {
		t.Errorf("run in flight across the failover ended with %v, want ErrLockLost", e.cause)
	}
	if limit := 2*inflightTTL/3 + time.Second; canceled > limit { // 1s of slack for a busy machine
		t.Errorf("run in flight canceled %s after the failover began, want within 2×TTL/3 (+1s) = %s", canceled, limit)
	}
	if rep := recv(t, inflightRep); rep.Outcome() != "lock_lost" {
		t.Errorf("report of the run in flight: %v", rep)
	}

	for _, job := range []string{"short", "long"} {
		f := figures(log, recs, job, first, last)
		t.Logf("failover by %s, job %s: %v; failover took %s", name, job, f, took.Round(10*time.Millisecond))
		if f.twice != 0 {
			t.Errorf("job %s: %d ticks ran twice across a failover with replication in sync", job, f.twice)
		}
		checkTokensGrow(t, log, job, first, last)
		if f.unreported != 0 {
			t.Errorf("job %s: %d ticks no one ran were reported neither by EventMissed nor as skipped", job, f.unreported)
		}
		if t.Failed() {
			dumpEvents(t, recs, job, f.outageFirst.Add(-time.Second), f.outageLast.Add(time.Second))
		}
	}
	if who := log.who("short", last); len(who) != 1 {
		t.Errorf("the last tick %s ran %d times %v: the schedule did not resume after the failover", fmtTick(last), len(who), who)
	}
}

// runEnd is when and why a run ended.
type runEnd struct {
	at    time.Time
	cause error
}

// endingJob runs until its context ends (at most a minute), and tells
// when it started and how it ended.
type endingJob struct {
	started chan int64 // the run's fencing token
	end     chan runEnd
}

func newEndingJob() *endingJob {
	return &endingJob{started: make(chan int64, 1), end: make(chan runEnd, 1)}
}

func (j *endingJob) job() Job {
	return JobFunc(func(ctx context.Context) error {
		j.started <- tokenFrom(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(time.Minute):
		}
		j.end <- runEnd{time.Now(), context.Cause(ctx)}
		return context.Cause(ctx)
	})
}

func (j *endingJob) waitStarted(t *testing.T) int64 {
	t.Helper()
	select {
	case tok := <-j.started:
		return tok
	case <-time.After(5 * time.Second):
		t.Fatal("the run did not start")
		return 0
	}
}

func (j *endingJob) ended(t *testing.T) runEnd {
	t.Helper()
	select {
	case e := <-j.end:
		return e
	case <-time.After(15 * time.Second):
		t.Fatal("the run did not end")
		return runEnd{}
	}
}

// The replica had not received the latest writes when the master died:
// its link was cut (CLIENT KILL TYPE replica on the master, with the
// replica frozen by SIGSTOP so that it cannot reconnect and catch up),
// then instance "a" claimed and ran tick T1 of job dup, ran dup by hand
// three times (fencing tokens) and started a long run of job hold (its lock
// taken, LockTTL 30s); then the master was killed, the replica continued
// and promoted. On the new master:
//
//   - the claim mark of dup is at T0, the lock of hold is gone, and the fence
//     counter of dup is below the tokens issued before the failover;
//   - instance "b", late for T1, claims it and runs it: T1 runs twice (the
//     documented limit, provoked on purpose);
//   - b's token is above every token issued before (guaranteed: the token
//     is raised to the server's clock in microseconds, and here both
//     servers share one clock);
//   - b runs hold by hand while a's run of it still goes: two runs at once,
//     told apart by their tokens;
//   - a's run of hold is canceled with ErrLockLost at its next extension,
//     within TTL/3 plus a round trip of the promotion (guaranteed), because
//     the lock is not on the new master.
func TestRedisSentinelFailoverBeforeReplication(t *testing.T) {
	t.Parallel()
	t.Cleanup(rlAwaitDialers)
	const ttl = 30 * time.Second
	sn := redistest.StartSentinel(t)
	ctx := context.Background()
	ca, cb := sentinelClient(t, sn), sentinelClient(t, sn)
	a, recA := rlSched(t, "a", rlLocker(t, ca, WithInstanceID("a")))
	b, _ := rlSched(t, "b", rlLocker(t, cb, WithInstanceID("b")))
	log := newRunLog()
	holdStarted := make(chan int64, 1)
	holdEnded := make(chan runEnd, 1)
	hold := func(id string) Job {
		return JobFunc(func(ctx context.Context) error {
			log.record("hold", id, tickFrom(ctx), tokenFrom(ctx))
			if tickFrom(ctx).IsZero() {
				return nil // a manual run ends at once
			}
			holdStarted <- tokenFrom(ctx)
			<-ctx.Done()
			holdEnded <- runEnd{time.Now(), context.Cause(ctx)}
			return context.Cause(ctx)
		})
	}
	for _, x := range []struct {
		s  *Scheduler
		id string
	}{{a, "a"}, {b, "b"}} {
		if err := x.s.Register("dup", "* * * * * *", log.job("dup", x.id, func() time.Duration { return 0 })); err != nil {
			t.Fatal(err)
		}
		if err := x.s.Register("hold", "* * * * * *", hold(x.id), LockTTL(ttl)); err != nil {
			t.Fatal(err)
		}
	}
	T0, T1 := t0, t0.Add(time.Second)
	if rep := tickAt(t, a, "dup", T0); skipOf(rep) != "" || rep.Err != nil {
		t.Fatalf("tick T0: %v", rep)
	}
	if n, err := ca.Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v: the replica did not get T0", n, err)
	}

	// Cut replication: freeze the replica, then close its link.
	master, replica := sn.Master(), sn.Replica()
	replica.Pause(t)
	mc := master.Client(t)
	if n, err := mc.ClientKillByFilter(ctx, "TYPE", "replica").Result(); err != nil || n < 1 {
		t.Fatalf("CLIENT KILL TYPE replica = %d, %v", n, err)
	}

	// Writes the replica will never see.
	if rep := tickAt(t, a, "dup", T1); skipOf(rep) != "" || rep.Err != nil {
		t.Fatalf("tick T1 on the cut-off master: %v", rep)
	}
	before := log.tokens("dup", T1)
	for range 3 {
		if rep, err := a.RunManually(ctx, "dup"); err != nil {
			t.Fatalf("manual run of dup: %v (%v)", err, rep)
		}
		before = append(before, slices.Max(log.tokens("dup", time.Time{})))
	}
	holdDone := goAsync(func() Report { return tickAt(t, a, "hold", T1) })
	var holdToken int64
	select {
	case holdToken = <-holdStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("the hold run did not start")
	}
	before = append(before, holdToken)
	maxBefore := slices.Max(before)
	if info := mc.Info(ctx, "replication").Val(); !strings.Contains(info, "connected_slaves:0") {
		t.Fatalf("the replica is still connected to the master:\n%s", info)
	}

	// The master dies before the replica could catch up; the replica,
	// continued, finds its link closed and the master gone; the sentinels
	// promote it.
	master.Kill(t)
	replica.Continue(t)
	began := time.Now()
	if got := sn.Failover(t, redistest.KillMaster); got != replica {
		t.Fatalf("promoted %s, want the replica %s", got.Addr(), replica.Addr())
	}
	promoted := time.Now()
	took := promoted.Sub(began)

	nc := replica.Client(t)
	l := &redisStore{keyPrefix: "cronguard:"}
	if mark := nc.HGet(ctx, l.claimKey("dup"), "tick").Val(); mark != fmtTick(T0) {
		t.Fatalf("claim mark of dup on the new master = %q, want T0 %s: the replica got T1", mark, fmtTick(T0))
	}
	if n := nc.Exists(ctx, l.lockKey("hold")).Val(); n != 0 {
		t.Fatal("the lock of hold is on the new master: the replica got it")
	}
	fence, err := nc.Get(ctx, l.fenceKey("dup")).Int64()
	if err != nil || fence >= maxBefore {
		t.Fatalf("fence counter of dup on the new master = %d, %v; want below the last token issued, %d", fence, err, maxBefore)
	}

	// Not guaranteed: an instance late for T1 runs it again.
	pingUntilOK(t, cb)
	rep := tickAt(t, b, "dup", T1)
	if skipOf(rep) != "" || rep.Err != nil {
		t.Fatalf("b's late claim of T1 after the failover: %v", rep)
	}
	who := log.who("dup", T1)
	if len(who) != 2 {
		t.Fatalf("tick T1 ran %v; want twice (a before the failover, b after)", who)
	}
	// Guaranteed: the token still grows, although the counter went back.
	toks := log.tokens("dup", T1)
	after := toks[len(toks)-1]
	if after <= maxBefore {
		t.Errorf("token after the failover %d, want above every token before it (max %d): the counter went back to %d", after, maxBefore, fence)
	}

	// Two runs of hold at once: the lock is not on the new master.
	mrep, err := b.RunManually(ctx, "hold")
	if err != nil {
		t.Fatalf("b's manual run of hold while a's run goes: %v (%v); want it to run, the lock is gone", err, mrep)
	}
	bTok := log.tokens("hold", time.Time{})
	if len(bTok) != 1 || bTok[0] <= holdToken {
		t.Errorf("b's token for hold %v, want one above a's %d", bTok, holdToken)
	}
	select {
	case <-holdEnded:
		t.Fatal("a's run of hold ended before its extension")
	default:
	}

	// Guaranteed: a's run learns at its next extension, and is canceled.
	var e runEnd
	select {
	case e = <-holdEnded:
	case <-time.After(ttl/3 + 5*time.Second):
		t.Fatalf("a's run of hold still goes %s after the promotion; want canceled within TTL/3", time.Since(promoted))
	}
	pingStart := time.Now()
	ca.Ping(ctx)
	rtt := time.Since(pingStart)
	if !errors.Is(e.cause, ErrLockLost) || !strings.Contains(e.cause.Error(), errGone.Error()) {
		t.Errorf("cause of a's cancellation = %v; want ErrLockLost because the lock is gone", e.cause)
	}
	if d := e.at.Sub(promoted); d > ttl/3+rtt+time.Second {
		t.Errorf("a's run canceled %s after the promotion, want within TTL/3 + RTT = %s", d, ttl/3+rtt)
	}
	hr := recv(t, holdDone)
	if hr.Outcome() != "lock_lost" || !errors.Is(hr.Err, ErrLockLost) {
		t.Errorf("a's hold report: %v", hr)
	}
	if n := len(recA.kind(EventLockLost)); n != 1 {
		t.Errorf("%d lock_lost events on a, want 1", n)
	}
	t.Logf("failover before replication: promoted %s after SIGKILL; tick T1 ran %d times %v; tokens before max %d, counter on the new master %d, token after %d (+%s); a's run canceled %s after the promotion: %v",
		took.Round(10*time.Millisecond), len(who), who, maxBefore, fence, after, time.Duration(after-maxBefore)*time.Microsecond,
		e.at.Sub(promoted).Round(10*time.Millisecond), e.cause)
}
