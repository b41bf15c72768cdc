package cronguard

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
)

// scriptedSwitch is a KillSwitch whose answer the test sets: no Redis
// needed for the fail policy's rules.
type scriptedSwitch struct {
	mu  sync.Mutex
	on  bool
	err error
}

func (s *scriptedSwitch) set(on bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on, s.err = on, err
}

func (s *scriptedSwitch) Enabled(context.Context, string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on, s.err
}

var errStoreDown = errors.New("store down")

// Fail closed, without Redis: a switch that always errors and was never
// answered for keeps the job from running, raises an EventFlag, and says
// ErrBackend (in the report and in JobInfo), naming the kill switch, the
// job and the flag.
func TestFailClosedWithoutAnswer(t *testing.T) {
	ks := &scriptedSwitch{err: errStoreDown}
	s, rec := newTest(t, WithKillSwitch(ks))
	ran := 0
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { ran++; return nil })); err != nil {
		t.Fatal(err)
	}
	rep := tickAt(t, s, "emails", t0)
	if ran != 0 || skipOf(rep) != "backend" || !errors.Is(rep.Err, ErrBackend) || !errors.Is(rep.Err, errStoreDown) {
		t.Fatalf("report = %v, ran %d; want skipped, ErrBackend", rep, ran)
	}
	if msg := rep.Err.Error(); !strings.Contains(msg, `kill switch: job "emails", flag "emails"`) {
		t.Errorf("report error %q: want the store, the job and the flag named", msg)
	}
	ev, ok := rec.find(EventFlag)
	if !ok || ev.Enabled || !errors.Is(ev.Err, errStoreDown) || ev.Job != "emails" {
		t.Fatalf("EventFlag = %+v, %v", ev, ok)
	}
	info, err := s.Job("emails")
	if err != nil || info.Enabled || !errors.Is(info.EnabledErr, ErrBackend) || !strings.Contains(info.EnabledErr.Error(), `job "emails"`) {
		t.Fatalf("JobInfo = %+v, %v", info, err)
	}
}

// A clean answer is remembered as the flag's last known value: when the
// store fails afterwards, that value holds — not the WithFailOpen default.
func TestLastKnownFlagValueIsRemembered(t *testing.T) {
	ks := &scriptedSwitch{on: false}
	s, rec := newTest(t, WithKillSwitch(ks), WithFailOpen())
	ran := 0
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { ran++; return nil })); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s, "emails", t0); skipOf(rep) != "killed" {
		t.Fatalf("switch says off: report = %v", rep)
	}
	ks.set(true, errStoreDown) // the value next to an error means nothing
	rep := tickAt(t, s, "emails", t0.Add(time.Hour))
	if skipOf(rep) != "killed" || ran != 0 {
		t.Fatalf("store down after an off: report = %v, ran %d; want the remembered off, not fail-open", rep, ran)
	}
	if ev, ok := rec.find(EventFlag); !ok || ev.Enabled {
		t.Fatalf("EventFlag = %+v, %v", ev, ok)
	}
	if info, _ := s.Job("emails"); info.Enabled || !errors.Is(info.EnabledErr, errStoreDown) {
		t.Fatalf("JobInfo = %+v", info)
	}
	// And the other way: a remembered on holds against a fail-closed
	// scheduler.
	ks2 := &scriptedSwitch{on: true}
	s2, _ := newTest(t, WithKillSwitch(ks2))
	if err := s2.Register("emails", "@hourly", JobFunc(func(context.Context) error { ran++; return nil })); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s2, "emails", t0); rep.Outcome() != "done" || ran != 1 {
		t.Fatalf("report = %v", rep)
	}
	ks2.set(false, errStoreDown)
	if rep := tickAt(t, s2, "emails", t0.Add(time.Hour)); rep.Outcome() != "done" || ran != 2 {
		t.Fatalf("store down after an on: report = %v, ran %d; want the remembered on", rep, ran)
	}
}

// A degraded answer (read from the store, freshness not guaranteed) is
// acted on and remembered, with an EventFlag.
func TestDegradedAnswerIsActedOn(t *testing.T) {
	ks := &scriptedSwitch{on: true}
	s, rec := newTest(t, WithKillSwitch(ks))
	if err := s.Register("emails", "@hourly", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s, "emails", t0); rep.Outcome() != "done" {
		t.Fatalf("report = %v", rep)
	}
	ks.set(false, &degradedError{on: false, err: errors.New("subscription silent")})
	if rep := tickAt(t, s, "emails", t0.Add(time.Hour)); skipOf(rep) != "killed" {
		t.Fatalf("degraded off: report = %v", rep)
	}
	if ev, ok := rec.find(EventFlag); !ok || ev.Enabled || !strings.Contains(ev.Err.Error(), "silent") {
		t.Fatalf("EventFlag = %+v, %v", ev, ok)
	}
	ks.set(true, errStoreDown)
	if rep := tickAt(t, s, "emails", t0.Add(2*time.Hour)); skipOf(rep) != "killed" {
		t.Fatalf("the degraded off is remembered: report = %v", rep)
	}
}

// The memory switch reports flips: a HardKill run is canceled at once,
// not at the next poll (an hour away here).
func TestHardKillPushedByMemorySwitch(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithKillSwitch(ks), WithKillPoll(time.Hour))
	b := newBlocker()
	if err := s.Register("j", "@hourly", b, HardKill()); err != nil {
		t.Fatal(err)
	}
	run := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	flip := time.Now()
	_ = ks.SetEnabled(context.Background(), "j", false, "stop now")
	rep := recv(t, run)
	t.Logf("memory switch: flip to canceled in %s", time.Since(flip))
	if rep.Outcome() != "killed" || !errors.Is(rep.Err, ErrKilled) {
		t.Fatalf("report = %+v, want killed without waiting for the poll", rep)
	}
}

// A switch-store outage is not an off: with Redis stopped under a
// HardKill run, the run goes on (the last known on holds) until it ends by
// itself.
func TestHardKillSurvivesSwitchStoreOutage(t *testing.T) {
	srv := redistest.Start(t)
	k := ksNew(t, srv)
	ksLoaded(t, k)
	s, _ := newTest(t, WithKillSwitch(k), WithKillPoll(10*time.Millisecond)) // memory locker: only the switch fails
	b := newBlocker()
	if err := s.Register("purge", "@hourly", b, HardKill()); err != nil {
		t.Fatal(err)
	}
	run := goAsync(func() Report { return tickAt(t, s, "purge", t0) })
	b.waitStarted(t)
	srv.Stop(t)
	waitFor(t, 5*time.Second, "switch cannot read Redis", func() bool {
		_, err := k.Enabled(context.Background(), "purge")
		return err != nil && !errors.As(err, new(*degradedError))
	})
	time.Sleep(300 * time.Millisecond) // thirty polls, and a few failed re-reads
	select {
	case rep := <-run:
		t.Fatalf("an outage of the switch store ended the run: %v", rep)
	default:
	}
	close(b.release)
	if rep := recv(t, run); rep.Outcome() != "done" || rep.Err != nil {
		t.Fatalf("report = %v; want done", rep)
	}
}

// A switch that answers off without error only after an error must still
// kill; one that never answered must not (no known value is not an off).
func TestHardKillUnavailableIsNotOff(t *testing.T) {
	ks := &scriptedSwitch{on: true}
	s, _ := newTest(t, WithKillSwitch(ks), WithKillPoll(5*time.Millisecond), WithFailOpen())
	var runs atomic.Int32
	b := newBlocker()
	if err := s.Register("j", "@hourly", JobFunc(func(ctx context.Context) error { runs.Add(1); return b.Run(ctx) }), HardKill()); err != nil {
		t.Fatal(err)
	}
	ks.set(false, errStoreDown) // never answered: fail open lets it run
	run := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	time.Sleep(50 * time.Millisecond)
	select {
	case rep := <-run:
		t.Fatalf("no answer at all killed the run: %v", rep)
	default:
	}
	ks.set(false, nil)
	if rep := recv(t, run); rep.Outcome() != "killed" {
		t.Fatalf("report = %v; want killed once the switch says off", rep)
	}
}

// brokenSwitch answers until broken; then Enabled and SetEnabled fail, as a
// flag store does when it goes away.
type brokenSwitch struct{ broken atomic.Bool }

func (b *brokenSwitch) Enabled(context.Context, string) (bool, error) {
	if b.broken.Load() {
		return false, errors.New("store down")
	}
	return true, nil
}

func (b *brokenSwitch) SetEnabled(context.Context, string, bool, string) error {
	if b.broken.Load() {
		return errors.New("store down")
	}
	return nil
}

// The runaway guard uses the one switch-off SetEnabled uses: when the store
// cannot take the write, this instance still keeps the job off, so the next
// tick does not repeat the harm while the store is down.
func TestRunawayWithBrokenStoreKeepsJobOffHere(t *testing.T) {
	ks := &brokenSwitch{}
	s, _ := newTest(t, WithKillSwitch(ks), WithFailOpen())
	var fetches atomic.Int32
	job := Batch[int]{
		Fetch: func(context.Context, Page) ([]int, error) {
			if fetches.Add(1) == 1 {
				ks.broken.Store(true) // the store goes away during the run
			}
			return []int{1, 2}, nil
		},
		Process: func(context.Context, int) error { return nil },
		Key:     strconv.Itoa,
	}
	if err := s.Register("same-users", "* * * * *", job); err != nil {
		t.Fatal(err)
	}
	rep := tickAt(t, s, "same-users", t0)
	if !errors.Is(rep.Err, ErrRunaway) || !strings.Contains(rep.Err.Error(), "switching flag") {
		t.Fatalf("first tick: %v, want ErrRunaway saying the switch-off failed", rep)
	}
	rep = tickAt(t, s, "same-users", t0.Add(time.Minute))
	if skipOf(rep) != "killed" {
		t.Fatalf("second tick while the store is down: %v, want skipped as killed", rep)
	}
}
