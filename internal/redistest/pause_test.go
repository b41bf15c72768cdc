package redistest

import (
	"context"
	"testing"
	"time"
)

func TestPauseContinue(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Pause(t)
	if !s.Running() {
		t.Fatal("Running() = false while paused")
	}
	// A paused server accepts the connection (the kernel does) but
	// answers nothing.
	if err := ping(s.Network(), s.Addr()); err == nil {
		t.Fatal("ping of a paused server succeeded")
	}
	s.Continue(t)
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k after Continue = %q, %v; want the data kept", got, err)
	}
}

func TestStopPausedServer(t *testing.T) {
	s := Start(t)
	s.Pause(t)
	start := time.Now()
	s.Stop(t)
	// Without the SIGCONT, SIGTERM stays pending and Stop waits the whole
	// stopTimeout before it kills.
	if d := time.Since(start); d >= stopTimeout {
		t.Fatalf("Stop of a paused server took %v, want it to continue and exit", d)
	}
	if s.Running() {
		t.Fatal("Running() = true after Stop")
	}
	s.Pause(t)    // no-op when not running
	s.Continue(t) // no-op
}
