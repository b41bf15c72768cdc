package main

import (
	"bytes"
	"runtime"
	"runtime/trace"
	"sync"
	"testing"
	"time"
)

// TestAnalyzeBurst traces a loop that starts 200 goroutines, each busy for
// about 50 µs, and checks that the analysis finds that loop and times them.
func TestAnalyzeBurst(t *testing.T) {
	if trace.IsEnabled() {
		t.Skip("a trace is running already")
	}
	var buf bytes.Buffer
	if err := trace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine() // with the tracer's own
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() { // the "cron loop"
		defer close(done)
		for range 200 {
			wg.Go(func() {
				for t0 := time.Now(); time.Since(t0) < 50*time.Microsecond; {
				}
			})
		}
	}()
	<-done
	wg.Wait()
	// wg.Done comes before a goroutine's exit: wait for the exits, or the
	// last goroutines' ends are not in the trace (and they do not count).
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > base; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines, %d before the burst", runtime.NumGoroutine(), base)
		}
	}
	trace.Stop()
	st, err := analyzeBurst(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Runs != 200 {
		t.Errorf("runs = %d, want the 200 goroutines the loop started", st.Runs)
	}
	if st.RunP50Us < 50 || st.RunMeanUs < 50 {
		t.Errorf("a goroutine ran p50 %.1f µs, mean %.1f µs; each is busy 50 µs at least", st.RunP50Us, st.RunMeanUs)
	}
	if st.DispatchMs <= 0 || st.StartP99Ms < st.StartP50Ms {
		t.Errorf("dispatch %.3f ms, start p50 %.3f p99 %.3f ms: not a burst's shape", st.DispatchMs, st.StartP50Ms, st.StartP99Ms)
	}
}
