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

// Two Schedulers share one memory locker and fire the same job's ticks at
// once, while a third goroutine takes the lock away (forget) at random:
// without forget no two runs ever overlap; with it, every run still ends,
// a lost run is told before it ends, and no pinned lock outlives its run
// (the lock is free once every run ended).
func TestMemoryPinnedLockStress(t *testing.T) {
	for _, noise := range []bool{false, true} {
		locker := NewMemoryLocker().(*memoryLocker)
		var running, maxRunning atomic.Int32
		job := JobFunc(func(ctx context.Context) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				m := maxRunning.Load()
				if n <= m || maxRunning.CompareAndSwap(m, n) {
					break
				}
			}
			select {
			case <-time.After(time.Duration(n) * 50 * time.Microsecond):
			case <-ctx.Done():
			}
			return nil
		})
		var scheds []*Scheduler
		var recs []*recorder
		for range 2 {
			s, rec := newTest(t, WithLocker(locker))
			if err := s.Register("j", "* * * * * *", job, LockTTL(time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			scheds, recs = append(scheds, s), append(recs, rec)
		}
		stop := make(chan struct{})
		var noiseDone sync.WaitGroup
		if noise {
			noiseDone.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
						locker.forget("j")
						time.Sleep(20 * time.Microsecond)
					}
				}
			})
		}
		var wg sync.WaitGroup
		for w := range 4 {
			s := scheds[w%2]
			wg.Go(func() {
				for i := range 300 {
					if w >= 2 { // manual runs: the lock alone (lockGuard)
						_, _ = s.RunManually(context.Background(), "j")
						continue
					}
					tickAt(t, s, "j", t0.Add(time.Duration(2*i+w)*time.Second))
				}
			})
		}
		wg.Wait()
		close(stop)
		noiseDone.Wait()
		if !noise && maxRunning.Load() > 1 {
			t.Errorf("%d runs of one job went at once on a memory locker", maxRunning.Load())
		}
		if l, err := locker.Acquire(context.Background(), "j", time.Hour); err != nil {
			t.Fatalf("noise %v: the lock after every run ended: %v (a pinned lock outlived its run)", noise, err)
		} else {
			_ = l.Release(context.Background())
		}
		lost, ran := 0, 0
		for _, rec := range recs {
			lost += len(rec.kind(EventLockLost))
			for _, ev := range rec.kind(EventFinished) {
				ran++
				if errors.Is(ev.Err, ErrLockLost) != (ev.Report.Outcome() == "lock_lost") {
					t.Errorf("run %v: outcome %s", ev.Err, ev.Report.Outcome())
				}
			}
		}
		t.Logf("noise %v: %d runs, max running %d, lock lost %d times", noise, ran, maxRunning.Load(), lost)
	}
}

// A pinned lock does not expire under its run, so ErrLocked must not name
// its original expiry, long past, as when it is free again: an operator
// reading "held until 12:00:00" at 12:05 looks for a stuck lock that is not.
func TestMemoryPinnedLockedErrorSaysRunning(t *testing.T) {
	locker := NewMemoryLocker().(*memoryLocker)
	now := time.Now()
	locker.now = func() time.Time { return now }
	s, _ := newTest(t, WithLocker(locker))
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b, LockTTL(time.Second))
	run := goAsync(func() Report { return tickAt(t, s, "j", t0) })
	b.waitStarted(t)
	now = now.Add(time.Hour)
	_, err := locker.Acquire(context.Background(), "j", time.Second)
	close(b.release)
	recv(t, run)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Acquire of a running job's lock: %v, want ErrLocked", err)
	}
	if strings.Contains(err.Error(), "held until") {
		t.Errorf("a pinned lock's ErrLocked names its expiry, an hour past: %v", err)
	}
}
