package cronguard

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunGateStopWaitsForEveryRun hammers a runGate from many goroutines
// while it closes: Wait returns only once no counted run goes, and no run
// gets in after close.
func TestRunGateStopWaitsForEveryRun(t *testing.T) {
	for round := range 100 {
		var g runGate
		var inside, after atomic.Int64
		var closed atomic.Bool
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					wasClosed := closed.Load()
					if !g.track() {
						time.Sleep(time.Microsecond) // refused: let Wait's goroutine run
						continue
					}
					if wasClosed {
						after.Add(1) // got in although close had returned
					}
					inside.Add(1)
					time.Sleep(time.Microsecond)
					inside.Add(-1)
					g.done()
				}
			})
		}
		time.Sleep(time.Duration(round%5) * 100 * time.Microsecond)
		g.close()
		closed.Store(true)
		waited := make(chan struct{})
		go func() { g.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			close(stop)
			wg.Wait()
			t.Fatalf("round %d: Wait did not return within 10s of close", round)
		}
		if n := inside.Load(); n != 0 {
			t.Fatalf("round %d: Wait returned with %d runs going", round, n)
		}
		close(stop)
		wg.Wait()
		if n := after.Load(); n != 0 {
			t.Fatalf("round %d: %d runs got in after close", round, n)
		}
		if g.track() {
			t.Fatalf("round %d: track after close let a run in", round)
		}
	}
}

// TestRunGateCloseIdle: closing a gate no run went through, or closing it
// twice, does not block Wait.
func TestRunGateCloseIdle(t *testing.T) {
	var g runGate
	if !g.track() {
		t.Fatal("an open gate refused a run")
	}
	g.done()
	g.close()
	g.close()
	g.Wait()
	g.Wait()
}

// TestStopAfterRunTickPanicked: a run that panics before its context is
// made (RunTick given a nil context) is counted out all the same, so Stop
// does not wait for it.
func TestStopAfterRunTickPanicked(t *testing.T) {
	s := quietScheduler(t)
	if err := s.Register("job", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("RunTick with a nil context did not panic")
			}
		}()
		var none context.Context
		_, _ = s.RunTick(none, "job", time.Date(2030, 1, 1, 0, 0, 1, 0, time.UTC))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}
