package cronguard

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// panickySwitch is a KillSwitch (a user's) that panics once told to.
type panickySwitch struct{ panicNow atomic.Bool }

func (p *panickySwitch) Enabled(context.Context, string) (bool, error) {
	if p.panicNow.Load() {
		panic("kill switch broke")
	}
	return true, nil
}

// A queued run (QueueOverlap) whose kill switch re-check panics is a failed
// run (ErrPanic), and it is counted out of the job's overlap state: the
// next tick runs, it is not skipped as an overlap for ever.
func TestQueuedRecheckPanicCountsOut(t *testing.T) {
	ks := &panickySwitch{}
	s, _ := newTest(t, WithKillSwitch(ks))
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, QueueOverlap())
	first, queued := queueBehind(t, s, b)
	ks.panicNow.Store(true)
	b.release <- struct{}{}
	recv(t, first)
	if r := recv(t, queued); !errors.Is(r.Err, ErrPanic) {
		t.Fatalf("queued run whose re-check panicked: %+v, want ErrPanic", r)
	}
	e, _ := s.lookup("j")
	e.overlap.mu.Lock()
	running := e.overlap.running
	e.overlap.mu.Unlock()
	if running != 0 { // else every later tick queues behind a run that is over, for ever
		t.Fatalf("overlap running = %d after both runs ended, want 0: the panicked run was never counted out", running)
	}
	ks.panicNow.Store(false)
	close(b.release)
	if r := tickAt(t, s, "j", t0.Add(2*time.Minute)); r.Outcome() != "done" {
		t.Fatalf("next tick: %+v (outcome %q), want done", r, r.Outcome())
	}
}
