package cronguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Tests of CatchUp: one catch-up run per gap of missed ticks, run by the
// winner of the tick after the gap, before that tick, under its lock; none
// by default, none for ticks skipped on purpose here; once across
// instances on a real Redis.

// catchUpLog is a job that records the trigger, tick and lease token of each
// run, in order.
type catchUpLog struct {
	mu   sync.Mutex
	runs []loggedRun
	fn   func(ctx context.Context) error // optional body
}

type loggedRun struct {
	trigger Trigger
	tick    time.Time
	token   int64 // 0 without a lease
}

func (l *catchUpLog) Run(ctx context.Context) error {
	run := runFrom(ctx)
	r := loggedRun{trigger: run.trigger, tick: tickFrom(ctx)}
	r.token = tokenFrom(ctx)
	l.mu.Lock()
	l.runs = append(l.runs, r)
	l.mu.Unlock()
	if l.fn != nil {
		return l.fn(ctx)
	}
	return nil
}

func (l *catchUpLog) all() []loggedRun {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.runs)
}

// byTrigger returns the finished reports of trigger trig.
func byTrigger(rec *recorder, trig Trigger) []Report {
	var out []Report
	for _, ev := range rec.kind(EventFinished) {
		if ev.Report != nil && ev.Report.Trigger == trig {
			out = append(out, *ev.Report)
		}
	}
	return out
}

func minute(n int) time.Time { return t0.Add(time.Duration(n) * time.Minute) }

// Off by default: a gap is reported, never run.
func TestCatchUpOffByDefault(t *testing.T) {
	s, rec := newTest(t)
	job := &catchUpLog{}
	if err := s.Register("j", "@every 1m", job); err != nil {
		t.Fatal(err)
	}
	tickAt(t, s, "j", minute(0))
	tickAt(t, s, "j", minute(4))
	if got := job.all(); len(got) != 2 || got[1].trigger != TriggerSchedule {
		t.Fatalf("runs %+v, want the two ticks only", got)
	}
	if n := len(rec.kind(EventMissed)); n != 1 {
		t.Fatalf("%d missed events, want 1", n)
	}
}

// One catch-up run for a gap of 3 ticks, before the tick, with the last
// missed tick as its tick, under the same lease; its own Report and events
// (Trigger catchup); none for the next consecutive tick; and one for a gap
// of 86,399 ticks (the count capped at 10,000), never more.
func TestCatchUpOneRunPerGap(t *testing.T) {
	s, rec := newTest(t)
	job := &catchUpLog{}
	if err := s.Register("j", "@every 1m", job, CatchUp()); err != nil {
		t.Fatal(err)
	}
	if r := tickAt(t, s, "j", minute(0)); r.Outcome() != "done" {
		t.Fatalf("first tick: %v", r)
	}
	rep := tickAt(t, s, "j", minute(4)) // 1, 2 and 3 missed
	if rep.Trigger != TriggerSchedule || !rep.Tick.Equal(minute(4)) || rep.Outcome() != "done" {
		t.Fatalf("the tick's report = %v, want the scheduled run of minute 4", rep)
	}
	got := job.all()
	if len(got) != 3 || got[1].trigger != TriggerCatchUp || !got[1].tick.Equal(minute(3)) ||
		got[2].trigger != TriggerSchedule || !got[2].tick.Equal(minute(4)) {
		t.Fatalf("runs %+v, want the first tick, then one catch-up of minute 3, then minute 4", got)
	}
	if got[1].token == 0 || got[1].token != got[2].token {
		t.Fatalf("lease tokens %d and %d: the catch-up and the tick must run under one lease", got[1].token, got[2].token)
	}
	cu := byTrigger(rec, TriggerCatchUp)
	if len(cu) != 1 || cu[0].Outcome() != "done" || !cu[0].Tick.Equal(minute(3)) || cu[0].Instance != "test" || cu[0].Start.IsZero() {
		t.Fatalf("catch-up reports %+v", cu)
	}
	// The order of events: missed, then the catch-up run, then the tick.
	var order []string
	for _, ev := range rec.all() {
		if ev.Tick.After(minute(0)) && ev.Kind != EventBatchDone {
			order = append(order, fmt.Sprintf("%s/%s", ev.Kind, ev.Trigger))
		}
	}
	want := []string{"missed/schedule", "started/catchup", "finished/catchup", "started/schedule", "finished/schedule"}
	if !slices.Equal(order, want) {
		t.Fatalf("events %v, want %v", order, want)
	}

	tickAt(t, s, "j", minute(5))
	if n := len(byTrigger(rec, TriggerCatchUp)); n != 1 {
		t.Fatalf("%d catch-up runs after a consecutive tick, want still 1", n)
	}

	// A day of seconds on a 1s spec: one catch-up run.
	job2 := &catchUpLog{}
	if err := s.Register("sec", "* * * * * *", job2, CatchUp()); err != nil {
		t.Fatal(err)
	}
	tickAt(t, s, "sec", t0)
	tickAt(t, s, "sec", t0.Add(24*time.Hour))
	got = job2.all()
	if len(got) != 3 || got[1].trigger != TriggerCatchUp || !got[1].tick.Equal(t0.Add(24*time.Hour-time.Second)) {
		t.Fatalf("runs after a day's gap: %+v, want one catch-up of the last missed second", got)
	}
	var missed Event
	for _, ev := range rec.kind(EventMissed) {
		if ev.Job == "sec" {
			missed = ev
		}
	}
	if !missed.MissedCapped || missed.Missed != maxMissedWalk {
		t.Fatalf("missed event %+v, want the capped count", missed)
	}
}

// Ticks skipped here on purpose are not caught up: switched off, or
// skipped while this instance's run of the previous tick was going. A gap
// whose last tick was missed for another reason is.
func TestCatchUpNotForTicksSkippedOnPurpose(t *testing.T) {
	t.Run("switched off", func(t *testing.T) {
		s, rec := newTest(t)
		job := &catchUpLog{}
		if err := s.Register("j", "@every 1m", job, CatchUp()); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		tickAt(t, s, "j", minute(0))
		if err := s.SetEnabled(ctx, "j", false, "bad template"); err != nil {
			t.Fatal(err)
		}
		tickAt(t, s, "j", minute(1))
		tickAt(t, s, "j", minute(2))
		if err := s.SetEnabled(ctx, "j", true, "fixed"); err != nil {
			t.Fatal(err)
		}
		tickAt(t, s, "j", minute(3))
		if n := len(byTrigger(rec, TriggerCatchUp)); n != 0 {
			t.Fatalf("%d catch-up runs for ticks an operator switched off", n)
		}
		if n := len(rec.kind(EventMissed)); n != 0 {
			t.Fatalf("%d missed events, want none: switched-off ticks are skips, reported as such", n)
		}
		// Switched off at minute 4, then down at minute 5: minute 5 is caught up.
		_ = s.SetEnabled(ctx, "j", false, "")
		tickAt(t, s, "j", minute(4))
		_ = s.SetEnabled(ctx, "j", true, "")
		tickAt(t, s, "j", minute(6))
		cu := byTrigger(rec, TriggerCatchUp)
		if len(cu) != 1 || !cu[0].Tick.Equal(minute(5)) {
			t.Fatalf("catch-up runs %+v, want one, of minute 5", cu)
		}
	})
	t.Run("overlap", func(t *testing.T) {
		// The run of second 0 lasts past second 1 (on the ticks' clock:
		// its tick plus its duration), which is skipped for overlap.
		s, rec := newTest(t)
		b := newBlocker()
		if err := s.Register("j", "* * * * * *", b, CatchUp()); err != nil {
			t.Fatal(err)
		}
		sec := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }
		first := goAsync(func() Report { return tickAt(t, s, "j", sec(0)) })
		b.waitStarted(t)
		if r := tickAt(t, s, "j", sec(1)); skipOf(r) != "overlap" {
			t.Fatalf("tick during the run: %v", r)
		}
		time.Sleep(1100 * time.Millisecond)
		close(b.release)
		recv(t, first)
		tickAt(t, s, "j", sec(2))
		if n := len(byTrigger(rec, TriggerCatchUp)); n != 0 || b.runs.Load() != 2 {
			t.Fatalf("%d catch-up runs, %d runs: a tick skipped for overlap is not caught up", n, b.runs.Load())
		}
		// Seconds 3 to 9 missed after the run of second 2 ended: caught up.
		tickAt(t, s, "j", sec(10))
		if cu := byTrigger(rec, TriggerCatchUp); len(cu) != 1 || !cu[0].Tick.Equal(sec(9)) {
			t.Fatalf("catch-up runs %+v, want one of %s", cu, sec(9))
		}
	})
}

// No catch-up when the tick after the gap does not run (its lock is held
// by a manual run): the gap is reported once and is not seen again.
func TestCatchUpNotWhenTheTickDoesNotRun(t *testing.T) {
	s, rec := newTest(t)
	b := newBlocker()
	if err := s.Register("j", "@every 1m", b, CatchUp()); err != nil {
		t.Fatal(err)
	}
	go func() { b.release <- struct{}{} }() // the first run ends at once
	tickAt(t, s, "j", minute(0))
	b.waitStarted(t)
	manual := goAsync(func() Report { r, _ := s.RunManually(context.Background(), "j"); return r })
	b.waitStarted(t)
	if r := tickAt(t, s, "j", minute(3)); skipOf(r) != "locked" {
		t.Fatalf("tick while a manual run holds the lock: %v", r)
	}
	close(b.release)
	recv(t, manual)
	tickAt(t, s, "j", minute(4))
	if n := len(byTrigger(rec, TriggerCatchUp)); n != 0 || b.runs.Load() != 3 {
		t.Fatalf("%d catch-up runs, %d runs, want none and 3", n, b.runs.Load())
	}
	if n := len(rec.kind(EventMissed)); n != 1 {
		t.Fatalf("%d missed events, want 1", n)
	}
}

// A catch-up run is a run of its own: a panic in it fails it alone (with
// its stack), user middleware wraps it (with its own ReportFrom), its
// Timeout is its own, and the tick runs after it.
func TestCatchUpIsARunOfItsOwn(t *testing.T) {
	var mu sync.Mutex
	var seen []string // what the middleware saw, in order
	mw := func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			err := next.Run(ctx)
			r, _ := ReportFrom(ctx, err)
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%s/%s", r.Trigger, r.Outcome()))
			mu.Unlock()
			return err
		})
	}
	s, rec := newTest(t, WithMiddleware(mw))
	job := &catchUpLog{fn: func(ctx context.Context) error {
		if runFrom(ctx).trigger != TriggerCatchUp {
			return nil
		}
		switch tickFrom(ctx) {
		case minute(1):
			panic("catch-up blew up")
		case minute(4):
			return errors.New("catch-up failed")
		}
		<-ctx.Done() // minute 7: past the Timeout
		return ctx.Err()
	}}
	if err := s.Register("j", "@every 1m", job, CatchUp(), Timeout(300*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	tickAt(t, s, "j", minute(0))
	for _, k := range []int{2, 5, 8} {
		if rep := tickAt(t, s, "j", minute(k)); rep.Outcome() != "done" || rep.Err != nil {
			t.Fatalf("minute %d, after its catch-up run: %v", k, rep)
		}
	}
	cu := byTrigger(rec, TriggerCatchUp)
	if len(cu) != 3 || cu[0].Outcome() != "error" || !errors.Is(cu[0].Err, ErrPanic) ||
		cu[1].Outcome() != "error" || cu[2].Outcome() != "timeout" || !errors.Is(cu[2].Err, ErrTimeout) {
		t.Fatalf("catch-up reports %+v, want a panic, an error, a timeout", cu)
	}
	var stack string
	for _, ev := range rec.kind(EventFinished) {
		if ev.Trigger == TriggerCatchUp && stack == "" {
			stack = ev.Stack
		}
	}
	if !strings.Contains(stack, "catchup_test.go") {
		t.Errorf("the panicking catch-up's finished event has no stack: %q", stack)
	}
	mu.Lock()
	defer mu.Unlock()
	// The middleware wraps the tick's whole chain, so it sees the catch-up
	// run (inside it) end first; a panic goes past it, as in every chain.
	want := []string{"schedule/done", "schedule/done", "catchup/error", "schedule/done", "catchup/timeout", "schedule/done"}
	if !slices.Equal(seen, want) {
		t.Fatalf("middleware saw %v, want %v", seen, want)
	}
}

// The tick does not run after its catch-up run when the job was switched
// off meanwhile, or when the scheduler stops during it.
func TestCatchUpThenTickStops(t *testing.T) {
	t.Run("switched off", func(t *testing.T) {
		s, rec := newTest(t)
		job := &catchUpLog{}
		job.fn = func(ctx context.Context) error {
			if runFrom(ctx).trigger == TriggerCatchUp {
				return s.SetEnabled(ctx, "j", false, "seen in the catch-up")
			}
			return nil
		}
		if err := s.Register("j", "@every 1m", job, CatchUp()); err != nil {
			t.Fatal(err)
		}
		tickAt(t, s, "j", minute(0))
		rep := tickAt(t, s, "j", minute(2))
		if skipOf(rep) != "killed" || !errors.Is(rep.Err, ErrKilled) || len(job.all()) != 2 {
			t.Fatalf("the tick after a catch-up that switched the job off: %v, runs %+v", rep, job.all())
		}
		if n := len(byTrigger(rec, TriggerCatchUp)); n != 1 {
			t.Fatalf("%d catch-up runs", n)
		}
	})
	t.Run("stopped", func(t *testing.T) {
		s, rec := newTest(t)
		b := newBlocker()
		if err := s.Register("j", "@every 1m", b, CatchUp()); err != nil {
			t.Fatal(err)
		}
		second := startCatchUp(t, s, b)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_ = s.Stop(ctx) // cancels the catch-up run
		rep := recv(t, second)
		if skipOf(rep) != "stopped" || !errors.Is(rep.Err, ErrStopped) || b.runs.Load() != 2 {
			t.Fatalf("the tick after a catch-up canceled by Stop: %v (%d runs)", rep, b.runs.Load())
		}
		if cu := byTrigger(rec, TriggerCatchUp); len(cu) != 1 || cu[0].Outcome() != "canceled" {
			t.Fatalf("catch-up reports %+v, want one, canceled", cu)
		}
	})
}

// Item 2's test, in process on a real redis-server: 3 instances run ticks
// 0 to 2 (all three fire each tick), then all stop; ticks 3, 4 and 5 pass
// with none running; 3 new instances run ticks 6 and 7. The 3 missed ticks
// are recorded once (one EventMissed, one history entry), and with CatchUp
// there is exactly one catch-up run (of tick 5), before tick 6, on the
// instance that won tick 6; without CatchUp, none.
func TestRedisMissedTicksAndCatchUpThreeInstances(t *testing.T) {
	for _, catchUp := range []bool{true, false} {
		t.Run(fmt.Sprintf("catchup=%v", catchUp), func(t *testing.T) {
			srv := redistest.Start(t)
			var opts []JobOption
			if catchUp {
				opts = append(opts, CatchUp())
			}
			type instance struct {
				s   *Scheduler
				rec *recorder
				job *catchUpLog
			}
			start := func(gen int) []instance {
				var out []instance
				for i := range 3 {
					rec := &recorder{}
					s, err := New(WithRedis(srv.Client(t)), WithInstanceID(fmt.Sprintf("g%d-i%d", gen, i)),
						WithLogger(slog.New(slog.DiscardHandler)), WithObserver(rec.observe), WithLocation(time.UTC))
					if err != nil {
						t.Fatal(err)
					}
					job := &catchUpLog{}
					if err := s.Register("j", "@every 1m", job, opts...); err != nil {
						t.Fatal(err)
					}
					waitFor(t, 5*time.Second, "kill switch loaded", func() bool {
						info, _ := s.Job("j")
						return info.EnabledErr == nil
					})
					out = append(out, instance{s, rec, job})
				}
				return out
			}
			fire := func(insts []instance, tick time.Time) {
				var wg sync.WaitGroup
				for _, in := range insts {
					wg.Go(func() { tickAt(t, in.s, "j", tick) })
				}
				wg.Wait()
			}
			var all []instance
			gen1 := start(1)
			for k := range 3 {
				fire(gen1, minute(k))
			}
			for _, in := range gen1 {
				stopSched(t, in.s) // writes the history entries still queued
			}
			gen2 := start(2)
			t.Cleanup(func() {
				for _, in := range gen2 {
					stopSched(t, in.s)
				}
			})
			fire(gen2, minute(6))
			fire(gen2, minute(7))
			all = append(gen1, gen2...)

			var missed []Event
			var runs []loggedRun
			runsOn := map[string][]loggedRun{}
			for _, in := range all {
				missed = append(missed, in.rec.kind(EventMissed)...)
				runs = append(runs, in.job.all()...)
				runsOn[in.s.cfg.instance] = in.job.all()
			}
			if len(missed) != 1 {
				t.Fatalf("missed events: %+v, want exactly one across the 6 instances", missed)
			}
			ev := missed[0]
			if ev.Missed != 3 || !ev.MissedFirst.Equal(minute(3)) || !ev.MissedLast.Equal(minute(5)) || !ev.Tick.Equal(minute(6)) {
				t.Fatalf("missed event %+v, want 3 ticks, minutes 3 to 5, before minute 6", ev)
			}
			perTick := map[time.Time]int{}
			catchUps := 0
			for _, r := range runs {
				if r.trigger == TriggerCatchUp {
					catchUps++
					continue
				}
				perTick[r.tick]++
			}
			for _, k := range []int{0, 1, 2, 6, 7} {
				if perTick[minute(k)] != 1 {
					t.Errorf("minute %d ran %d times, want once", k, perTick[minute(k)])
				}
			}
			wantCU := 0
			if catchUp {
				wantCU = 1
				// On the instance that won minute 6, right before it.
				mine := runsOn[ev.Instance]
				i := slices.IndexFunc(mine, func(r loggedRun) bool { return r.trigger == TriggerCatchUp })
				if i < 0 || !mine[i].tick.Equal(minute(5)) || i+1 >= len(mine) || !mine[i+1].tick.Equal(minute(6)) {
					t.Fatalf("runs on %s: %+v, want the catch-up of minute 5 right before minute 6", ev.Instance, mine)
				}
			}
			if catchUps != wantCU {
				t.Fatalf("%d catch-up runs, want %d", catchUps, wantCU)
			}
			checkHistoryOnce(t, srv, 3, wantCU)
		})
	}
}

// checkHistoryOnce reads job j's history stream with a fresh scheduler and
// checks it holds one missed entry of wantMissed ticks and wantCatchUp
// catch-up runs, each scheduled tick's run at most once.
func checkHistoryOnce(t *testing.T, srv *redistest.Server, wantMissed, wantCatchUp int) []HistoryEntry {
	t.Helper()
	reader, err := New(WithRedis(srv.Client(t)), WithInstanceID("reader"), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer stopSched(t, reader)
	if err := reader.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	var hist []HistoryEntry
	var missed, catchUps int
	seen := map[time.Time]bool{}
	// Instances write their history in the background: wait for the
	// entries to land (the stopped ones have flushed already).
	waitFor(t, 10*time.Second, "history entries", func() bool {
		hist, err = reader.History(context.Background(), "j", 0)
		if err != nil {
			return false
		}
		missed, catchUps = 0, 0
		clear(seen)
		for _, h := range hist {
			switch {
			case h.Kind == EventMissed:
				missed++
			case h.Kind == EventFinished && h.Trigger == TriggerCatchUp:
				catchUps++
			case h.Kind == EventFinished:
				if seen[h.Tick] {
					t.Fatalf("history holds the run of %s twice: %+v", fmtTick(h.Tick), hist)
				}
				seen[h.Tick] = true
			}
		}
		return missed >= 1 && catchUps >= wantCatchUp
	})
	if missed != 1 || catchUps != wantCatchUp {
		t.Fatalf("history: %d missed entries, %d catch-up runs; want 1 and %d: %+v", missed, catchUps, wantCatchUp, hist)
	}
	for _, h := range hist {
		if h.Kind == EventMissed && h.Missed != wantMissed {
			t.Fatalf("history's missed entry %+v, want %d ticks", h, wantMissed)
		}
	}
	return hist
}

// Middleware that lets one run through at a time (a mutex, as robfig's
// DelayIfStillRunning) does not deadlock a catch-up run, which goes inside
// its tick's run: the catch-up run gets the middleware wrapped anew.
func TestCatchUpUnderOneAtATimeMiddleware(t *testing.T) {
	mw := func(next Job) Job {
		var mu sync.Mutex
		return JobFunc(func(ctx context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			return next.Run(ctx)
		})
	}
	s, rec := newTest(t, WithMiddleware(mw))
	if err := s.Register("j", "@every 1m", &catchUpLog{}, CatchUp()); err != nil {
		t.Fatal(err)
	}
	tickAt(t, s, "j", minute(0))
	e, _ := s.lookup("j")
	done := make(chan Report, 1)
	go func() { done <- s.execute(s.base, e, TriggerSchedule, minute(2), nil) }()
	select {
	case rep := <-done:
		if rep.Outcome() != "done" {
			t.Fatalf("tick after the gap: %v", rep)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the catch-up run waits on the tick's own middleware: deadlock")
	}
	if cu := byTrigger(rec, TriggerCatchUp); len(cu) != 1 || cu[0].Outcome() != "done" {
		t.Fatalf("catch-up runs %+v, want one, done", cu)
	}
}

// A HardKill job's catch-up run is hard-killed like its ticks: the flag
// going off cancels it at once (ErrKilled), and the tick after it does not
// run. Before, only the tick's own run was watched, so a long catch-up run
// went on after the switch went off.
func TestCatchUpRunIsHardKilled(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, rec := newTest(t, WithKillSwitch(ks), WithKillPoll(5*time.Millisecond))
	b := newBlocker()
	if err := s.Register("j", "@every 1m", b, CatchUp(), HardKill()); err != nil {
		t.Fatal(err)
	}
	second := startCatchUp(t, s, b)
	_ = ks.SetEnabled(context.Background(), "j", false, "stop now")
	rep := recv(t, second)
	if skipOf(rep) != "killed" || b.runs.Load() != 2 {
		t.Fatalf("the tick after a hard-killed catch-up: %v (%d runs)", rep, b.runs.Load())
	}
	if cu := byTrigger(rec, TriggerCatchUp); len(cu) != 1 || cu[0].Outcome() != "killed" || !errors.Is(cu[0].Err, ErrKilled) {
		t.Fatalf("catch-up reports %+v, want one, killed", cu)
	}
}

// startCatchUp runs minute 0 of job "j" (b, registered with CatchUp), then
// minute 2 in the background, and returns once b has started the
// catch-up run of minute 1; the channel gets minute 2's Report.
func startCatchUp(t *testing.T, s *Scheduler, b *blocker) <-chan Report {
	t.Helper()
	go func() { b.release <- struct{}{} }()
	tickAt(t, s, "j", minute(0))
	b.waitStarted(t)
	second := goAsync(func() Report { return tickAt(t, s, "j", minute(2)) })
	if tick := b.waitStarted(t); !tick.Equal(minute(1)) {
		t.Fatalf("catch-up run of %s, want minute 1", tick)
	}
	return second
}
