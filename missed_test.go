package cronguard

import (
	"context"
	"testing"
	"time"
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
