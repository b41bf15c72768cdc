package cronguard

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// A tick this process fired and skipped before claiming it (switched off,
// previous run still going) was decided and reported as a skip: the claim
// that follows must not report it again as missed, and catch-up must never
// run it. Only ticks that no fire decided are missed.
func TestLocalSkipsAreNotMissed(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, rec := newTest(t, WithKillSwitch(ks))
	b := newBlocker()
	if err := s.Register("j", "@every 1m", b); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }

	done := goAsync(func() Report { return tickAt(t, s, "j", at(0)) })
	b.waitStarted(t)
	if rep := tickAt(t, s, "j", at(1)); skipOf(rep) != "overlap" {
		t.Fatalf("tick 1 while tick 0 runs: %v, want overlap", rep)
	}
	close(b.release)
	recv(t, done)

	_ = ks.SetEnabled(ctx, "j", false, "test")
	if rep := tickAt(t, s, "j", at(2)); skipOf(rep) != "killed" {
		t.Fatalf("tick 2 switched off: %v, want killed", rep)
	}
	_ = ks.SetEnabled(ctx, "j", true, "test")
	if rep := tickAt(t, s, "j", at(3)); skipOf(rep) != "" {
		t.Fatalf("tick 3: %v, want a run", rep)
	}
	if ev := rec.kind(EventMissed); len(ev) != 0 {
		t.Fatalf("skipped ticks reported as missed: %+v", ev)
	}

	// Ticks 4 and 5 are never fired here (the process was down): missed.
	if rep := tickAt(t, s, "j", at(6)); skipOf(rep) != "" {
		t.Fatalf("tick 6: %v, want a run", rep)
	}
	ev := rec.kind(EventMissed)
	if len(ev) != 1 || ev[0].Missed != 2 || !ev[0].MissedFirst.Equal(at(4)) || !ev[0].MissedLast.Equal(at(5)) {
		t.Fatalf("missed events = %+v, want one of ticks 4 and 5", ev)
	}
}

// failLocker fails every Claim while down is set, as a store that does
// not answer: the claim mark does not move.
type failLocker struct {
	Locker
	down atomic.Bool
}

func (f *failLocker) Claim(ctx context.Context, job string, tick time.Time, ttl time.Duration, inst string) (Claim, error) {
	if f.down.Load() {
		return Claim{}, errors.New("store down (test)")
	}
	return f.Locker.Claim(ctx, job, tick, ttl, inst)
}

// TestChaos's failure, on its own: the process is frozen over ticks 1 and
// 2, wakes, and its fire of tick 3 fails on a store that does not answer
// (a skip). The claim of tick 4 finds the mark at tick 0. Ticks 1 and 2
// were never taken up here: they are missed, though a later tick was
// decided. (Keeping only the latest decided tick reported nothing for
// them, and no event ever said what became of them.)
func TestPauseThenStoreErrorStillReportsMissed(t *testing.T) {
	lk := &failLocker{Locker: NewMemoryLocker()}
	s, rec := newTest(t, WithLocker(lk))
	if err := s.Register("j", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	e, _ := s.lookup("j")
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	fire := func(sec int) { s.fireAt(e, at(sec).Add(300*time.Millisecond)) } // as robfig/cron's goroutine would

	fire(0)
	// frozen over ticks 1 and 2
	lk.down.Store(true)
	fire(3)
	lk.down.Store(false)
	fire(4)

	if sk := rec.skips("backend"); len(sk) != 1 || !sk[0].Tick.Equal(at(3)) {
		t.Fatalf("skips = %+v, want tick 3 skipped for the store", sk)
	}
	ev := rec.kind(EventMissed)
	if len(ev) != 1 || ev[0].Missed != 2 || !ev[0].MissedFirst.Equal(at(1)) || !ev[0].MissedLast.Equal(at(2)) || !ev[0].Tick.Equal(at(4)) {
		t.Fatalf("missed events = %+v, want one for ticks 1 and 2, raised by tick 4", ev)
	}
}

// Skips with holes between them, all before one claim: each hole is its
// own EventMissed, the skipped ticks are in none, and a CatchUp run stands
// for the last missed tick.
func TestMissedStretchesBetweenSkips(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, rec := newTest(t, WithKillSwitch(ks))
	if err := s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil }), CatchUp()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }

	tickAt(t, s, "j", at(0))
	_ = ks.SetEnabled(ctx, "j", false, "test")
	for _, m := range []int{2, 3, 5} { // 1, 4 and 6 never fired here
		if rep := tickAt(t, s, "j", at(m)); skipOf(rep) != "killed" {
			t.Fatalf("tick %d: %v, want killed", m, rep)
		}
	}
	_ = ks.SetEnabled(ctx, "j", true, "test")
	if rep := tickAt(t, s, "j", at(7)); rep.Err != nil {
		t.Fatalf("tick 7: %v", rep)
	}
	var got [][2]time.Time
	for _, ev := range rec.kind(EventMissed) {
		if ev.Missed != 1 {
			t.Errorf("missed event %+v, want one tick each", ev)
		}
		got = append(got, [2]time.Time{ev.MissedFirst, ev.MissedLast})
	}
	want := [][2]time.Time{{at(1), at(1)}, {at(4), at(4)}, {at(6), at(6)}}
	if !slices.EqualFunc(got, want, func(a, b [2]time.Time) bool { return a[0].Equal(b[0]) && a[1].Equal(b[1]) }) {
		t.Fatalf("missed stretches %v, want %v", got, want)
	}
	var cu []Event
	for _, ev := range rec.kind(EventFinished) {
		if ev.Trigger == TriggerCatchUp {
			cu = append(cu, ev)
		}
	}
	if len(cu) != 1 || !cu[0].Tick.Equal(at(6)) {
		t.Fatalf("catch-up runs %+v, want one standing for tick 6", cu)
	}
}

// The set of ticks taken up stays bounded however long no claim answers,
// and never loses a tick from the middle: joining needs no tick between.
func TestTakenSpansBounded(t *testing.T) {
	e, at := everySecondEntry(t)
	ts := &e.ticks
	ts.mu.Lock()
	for sec := range 1000 { // a long switch-off: every tick taken up
		ts.taken(at(sec).UnixNano())
	}
	ts.mu.Unlock()
	if len(ts.spans) > maxTakenSpans {
		t.Fatalf("%d spans, bound %d", len(ts.spans), maxTakenSpans)
	}
	if h := ts.untaken(at(-1), at(1000), nil); countTicks(e, h) != 0 {
		t.Fatalf("untaken %v inside ticks all taken up", h)
	}
	// Holes every third tick: more holes than spans kept. The oldest go,
	// and are then reported (untaken), never the reverse.
	ts.settled(at(2000))
	ts.mu.Lock()
	for sec := 3000; sec < 3300; sec++ {
		if sec%3 != 0 {
			ts.taken(at(sec).UnixNano())
		}
	}
	ts.mu.Unlock()
	if len(ts.spans) > maxTakenSpans {
		t.Fatalf("%d spans, bound %d", len(ts.spans), maxTakenSpans)
	}
	holes := ts.untaken(at(2999), at(3300), nil)
	for sec := 3000; sec < 3300; sec++ {
		if sec%3 == 0 && !inStretch(holes, at(sec)) {
			t.Fatalf("tick %d, never taken up, is not in an untaken stretch", sec)
		}
	}
	if n := countTicks(e, holes); n <= 100 || n >= 300 {
		t.Fatalf("%d ticks untaken: want the 100 holes and the dropped oldest spans, not all", n)
	}
}

func inStretch(hs []tickSpan, tk time.Time) bool {
	return slices.ContainsFunc(hs, func(h tickSpan) bool { return h.from < tk.UnixNano() && tk.UnixNano() < h.to })
}

func countTicks(e *entry, hs []tickSpan) int {
	n := 0
	for _, h := range hs {
		c, _, _, _ := missedTicks(e.sched(), e.ticks.time(h.from), e.ticks.time(h.to))
		n += c
	}
	return n
}

// Random orders of taking ticks up (mostly in order, with holes, some
// given twice or late as RunTick may): the spans stay sorted, apart and
// bounded, and a tick never taken up is always in an untaken stretch.
func TestTakenSpansNeverHideAnUntakenTick(t *testing.T) {
	e, at := everySecondEntry(t)
	ts := &e.ticks
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 300 {
		ts.settled(at(1 << 20)) // empty
		taken := map[int]bool{}
		sec := 0
		for range 1 + rng.IntN(60) {
			switch r := rng.IntN(10); {
			case r < 6:
				sec++
			case r < 8:
				sec += 2 + rng.IntN(3) // a hole
			}
			tk := sec
			if rng.IntN(8) == 0 && sec > 3 {
				tk = sec - 1 - rng.IntN(3) // late or twice
			}
			taken[tk] = true
			ts.takenTick(at(tk))
		}
		for k := 1; k < len(ts.spans); k++ {
			if ts.spans[k-1].to >= ts.spans[k].from || ts.spans[k].from > ts.spans[k].to {
				t.Fatalf("round %d: spans not sorted and apart: %v", round, ts.spans)
			}
		}
		if len(ts.spans) > maxTakenSpans {
			t.Fatalf("round %d: %d spans", round, len(ts.spans))
		}
		holes := ts.untaken(at(-1), at(sec+1), nil)
		for x := 0; x <= sec; x++ {
			if !taken[x] && !inStretch(holes, at(x)) {
				t.Fatalf("round %d: tick %d never taken up, not in an untaken stretch; spans %v", round, x, ts.spans)
			}
		}
	}
}

// everySecondEntry registers a job on "* * * * * *" and returns its entry
// and the tick sec seconds after t0.
func everySecondEntry(t *testing.T) (*entry, func(sec int) time.Time) {
	t.Helper()
	s, _ := newTest(t)
	if err := s.Register("j", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	e, _ := s.lookup("j")
	return e, func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
}

// countingSchedule counts the calls of a spec's Next.
type countingSchedule struct {
	cron.Schedule
	n atomic.Int64
}

func (c *countingSchedule) Next(t time.Time) time.Time {
	c.n.Add(1)
	return c.Schedule.Next(t)
}

// Fired as robfig/cron fires (it asks the job's Next at start and right
// after each fire, then fires when the tick is due), an on-time fire finds
// its tick, and its claim finds no gap since the last, without calling
// the spec's Next (tickSchedule.quiet): on the memory Locker and on any
// other. When robfig/cron's loop stalls past a tick, before a fire or
// between a fire and its Next, the ticks it never fired are reported
// missed: the shortcut never hides a gap.
func TestOnTimeFiresNeedNoNextAndStallsStillMiss(t *testing.T) {
	for _, spec := range []string{"* * * * * *", "0 * * * * *", "@every 90s", "CRON_TZ=Asia/Tokyo 30 0 9 * * *"} {
		for _, locker := range []Locker{NewMemoryLocker(), &failLocker{Locker: NewMemoryLocker()}} {
			name := spec + " on " + reflect.TypeOf(locker).String()
			s, rec := newTest(t, WithLocker(locker))
			if err := s.Register("j", spec, JobFunc(func(context.Context) error { return nil })); err != nil {
				t.Fatal(err)
			}
			e, _ := s.lookup("j")
			count := &countingSchedule{Schedule: e.ticks.inner}
			e.ticks.inner = count
			next := e.ticks.Next(t0.Add(300 * time.Millisecond)) // Start
			var ran []time.Time
			for range 4 {
				now := next.Add(2 * time.Millisecond)
				before := count.n.Load()
				s.fireAt(e, now)
				if n := count.n.Load() - before; n != 0 && len(ran) > 0 {
					t.Errorf("%s: an on-time fire of %s called the spec's Next %d times", name, next, n)
				}
				ran = append(ran, next)
				next = e.ticks.Next(now.Add(time.Millisecond)) // right after the fire
			}
			// The loop stalls: it wakes past the next tick and fires late.
			skipped := []time.Time{next}
			late := e.sched().Next(next)
			s.fireAt(e, late.Add(5*time.Millisecond))
			ran = append(ran, late)
			// It stalls again between that fire and asking Next: the tick
			// Next answers is the first after a time past another tick.
			stalled := e.sched().Next(late).Add(10 * time.Millisecond)
			skipped = append(skipped, e.sched().Next(late))
			next = e.ticks.Next(stalled)
			s.fireAt(e, next.Add(2*time.Millisecond))
			ran = append(ran, next)

			var got []time.Time
			for _, ev := range rec.kind(EventFinished) {
				got = append(got, ev.Tick)
			}
			if !slices.EqualFunc(got, ran, time.Time.Equal) {
				t.Errorf("%s: ran %v, want %v", name, got, ran)
			}
			var missed []time.Time
			for _, ev := range rec.kind(EventMissed) {
				if ev.Missed != 1 {
					t.Errorf("%s: %+v, want one tick missed in each event", name, ev)
				}
				missed = append(missed, ev.MissedFirst)
			}
			if !slices.EqualFunc(missed, skipped, time.Time.Equal) {
				t.Errorf("%s: missed %v, want %v", name, missed, skipped)
			}
		}
	}
}
