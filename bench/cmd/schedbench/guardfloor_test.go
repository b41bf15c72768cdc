package main

import (
	"testing"
	"time"

	"github.com/robfig/cron/v3"
)

// The guard floor keeps the promises it stands for: a tick runs once
// however often it is fired, not while switched off, and each run is
// recorded with its tick.
func TestGuardFloorRunsATickOnce(t *testing.T) {
	sc, err := cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow).Parse(specEverySecond)
	if err != nil {
		t.Fatal(err)
	}
	j := &floorJob{sched: sc}
	j.on.Store(true)
	p := newProbe(10)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	p.window(t0.Add(-time.Minute), t0.Add(time.Minute))

	j.runAt(p, t0.Add(300*time.Millisecond))
	j.runAt(p, t0.Add(700*time.Millisecond)) // the same tick, fired again
	j.runAt(p, t0.Add(1100*time.Millisecond))
	j.on.Store(false)
	j.runAt(p, t0.Add(2100*time.Millisecond))

	if n, errs := p.lat.n.Load(), p.errs.Load(); n != 2 || errs != 2 {
		t.Fatalf("%d runs and %d refusals, want 2 and 2 (a tick fired twice, a switched-off one)", n, errs)
	}
	if j.next != 2 || j.ring[0].tick != t0.UnixNano() || j.ring[1].tick != t0.Add(time.Second).UnixNano() {
		t.Fatalf("ring %+v (next %d), want ticks 0 and 1", j.ring[:2], j.next)
	}
}
