package cronguard

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A job that ignores its context: Stop cancels it when ctx ends, waits the
// grace, then returns without it, naming it.
func TestStopGraceJobIgnoringContext(t *testing.T) {
	s, _ := newTest(t)
	const wait, grace = 100 * time.Millisecond, 300 * time.Millisecond
	s.cfg.stopGrace = grace
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before newTest's Stop: the deaf job must end for goleak
	started := make(chan struct{})
	_ = s.Register("deaf", "@every 1m", JobFunc(func(context.Context) error {
		close(started)
		<-release // ignores its context
		return nil
	}))
	run := goAsync(func() Report { return tickAt(t, s, "deaf", t0) })
	recv(t, goAsync(func() struct{} { <-started; return struct{}{} }))
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := recv(t, goAsync(func() error { return s.Stop(ctx) }))
	took := time.Since(begin)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "deaf") ||
		!strings.Contains(err.Error(), "still running after the 300ms grace") {
		t.Fatalf("Stop = %v; want the deadline, and deaf named as still running after the grace", err)
	}
	if took < wait+grace {
		t.Fatalf("Stop returned after %s, before ctx (%s) + grace (%s)", took, wait, grace)
	}
	free()
	if rep := recv(t, run); rep.Outcome() != "canceled" || !errors.Is(rep.Err, ErrStopped) {
		t.Fatalf("the deaf run, once it returned: %+v", rep)
	}
}

// A job that takes a while to return once canceled, within the grace: Stop
// waits for it (and not for the whole grace), then names it as canceled.
func TestStopGraceWaitsForJobReturningDuringGrace(t *testing.T) {
	s, _ := newTest(t) // the default grace, 5s
	const cleanup = 200 * time.Millisecond
	var returned atomic.Bool
	started := make(chan struct{})
	_ = s.Register("slow-cleanup", "@every 1m", JobFunc(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		time.Sleep(cleanup) // flushing what it did
		returned.Store(true)
		return ctx.Err()
	}))
	run := goAsync(func() Report { return tickAt(t, s, "slow-cleanup", t0) })
	recv(t, goAsync(func() struct{} { <-started; return struct{}{} }))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := recv(t, goAsync(func() error { return s.Stop(ctx) }))
	took := time.Since(begin)
	if !returned.Load() {
		t.Fatal("Stop returned before the canceled job did, within the grace")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "slow-cleanup") ||
		strings.Contains(err.Error(), "still running") {
		t.Fatalf("Stop = %v; want the deadline, slow-cleanup named as canceled, not as still running", err)
	}
	if took >= s.cfg.stopGrace {
		t.Fatalf("Stop took %s: it waited out the whole grace although the job had returned", took)
	}
	if rep := recv(t, run); rep.Outcome() != "canceled" {
		t.Fatalf("run: %+v", rep)
	}
}
