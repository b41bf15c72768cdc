package redistest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func pingErr(t *testing.T, c *redis.Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Ping(ctx).Err()
}

// oneShotClient pings once with no retries and closes its client.
func oneShotPing(t *testing.T, s *Server) error {
	t.Helper()
	opt := s.Options()
	opt.MaxRetries = -1
	opt.DialTimeout = 500 * time.Millisecond
	c := redis.NewClient(opt)
	defer c.Close()
	return pingErr(t, c)
}

func TestStartPing(t *testing.T) {
	s := Start(t)
	if s.Network() != "tcp" {
		t.Fatalf("Network() = %q, want tcp", s.Network())
	}
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr() = %q, want 127.0.0.1:PORT", s.Addr())
	}
	if !s.Running() {
		t.Fatal("Running() = false after Start")
	}
	c := s.Client(t)
	if err := pingErr(t, c); err != nil {
		t.Fatalf("ping: %v", err)
	}
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k = %q, %v", got, err)
	}
	// Persistence is off.
	if got, err := c.ConfigGet(ctx, "save").Result(); err != nil || got["save"] != "" {
		t.Fatalf("CONFIG GET save = %v, %v; want empty", got, err)
	}
	if got, err := c.ConfigGet(ctx, "appendonly").Result(); err != nil || got["appendonly"] != "no" {
		t.Fatalf("CONFIG GET appendonly = %v, %v; want no", got, err)
	}
}

func TestStopMakesPingFail(t *testing.T) {
	s := Start(t)
	if err := oneShotPing(t, s); err != nil {
		t.Fatalf("ping before stop: %v", err)
	}
	s.Stop(t)
	if s.Running() {
		t.Fatal("Running() = true after Stop")
	}
	if err := oneShotPing(t, s); err == nil {
		t.Fatal("ping after Stop succeeded")
	}
	s.Stop(t) // idempotent
	s.Kill(t) // also a no-op now
}

func TestRestartSameAddr(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	s.Stop(t)
	if err := oneShotPing(t, s); err == nil {
		t.Fatal("ping after Stop succeeded")
	}
	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("Addr() after Restart = %q, want %q", s.Addr(), addr)
	}
	if !s.Running() {
		t.Fatal("Running() = false after Restart")
	}
	// The same client reconnects; the dataset is empty.
	if err := pingErr(t, c); err != nil {
		t.Fatalf("ping after Restart: %v", err)
	}
	if err := c.Get(ctx, "k").Err(); err != redis.Nil {
		t.Fatalf("GET k after Restart: err = %v, want redis.Nil", err)
	}

	// Restart of a running server stops it first.
	s.Restart(t)
	if err := pingErr(t, c); err != nil {
		t.Fatalf("ping after second Restart: %v", err)
	}
}

func TestKillThenRestart(t *testing.T) {
	s := Start(t)
	s.Kill(t)
	if s.Running() {
		t.Fatal("Running() = true after Kill")
	}
	if err := oneShotPing(t, s); err == nil {
		t.Fatal("ping after Kill succeeded")
	}
	s.Kill(t) // idempotent
	s.Restart(t)
	if err := oneShotPing(t, s); err != nil {
		t.Fatalf("ping after Restart: %v", err)
	}
}

func TestUnix(t *testing.T) {
	s := Start(t, Unix())
	if s.Network() != "unix" {
		t.Fatalf("Network() = %q, want unix", s.Network())
	}
	if !strings.HasSuffix(s.Addr(), ".sock") {
		t.Fatalf("Addr() = %q, want a socket path", s.Addr())
	}
	if _, err := os.Stat(s.Addr()); err != nil {
		t.Fatalf("socket: %v", err)
	}
	c := s.Client(t)
	if err := pingErr(t, c); err != nil {
		t.Fatalf("ping: %v", err)
	}
	// No TCP listener.
	if got, err := c.ConfigGet(context.Background(), "port").Result(); err != nil || got["port"] != "0" {
		t.Fatalf("CONFIG GET port = %v, %v; want 0", got, err)
	}
	s.Kill(t)
	if err := oneShotPing(t, s); err == nil {
		t.Fatal("ping after Kill succeeded")
	}
	s.Restart(t)
	if err := pingErr(t, c); err != nil {
		t.Fatalf("ping after Restart: %v", err)
	}
}

func TestUnixLongTestName(t *testing.T) {
	name := strings.Repeat("a_very_long_subtest_name_", 6)
	t.Run(name, func(t *testing.T) {
		s := Start(t, Unix())
		if len(s.Addr()) > maxSocketPath {
			t.Fatalf("socket path too long (%d): %s", len(s.Addr()), s.Addr())
		}
		if err := oneShotPing(t, s); err != nil {
			t.Fatalf("ping: %v", err)
		}
	})
}

func TestTwoServers(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers on %s", a.Addr())
	}
	ca, cb := a.Client(t), b.Client(t)
	ctx := context.Background()
	if err := ca.Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cb.Get(ctx, "k").Err(); err != redis.Nil {
		t.Fatalf("GET k on b: err = %v, want redis.Nil", err)
	}
	a.Stop(t)
	if err := pingErr(t, cb); err != nil {
		t.Fatalf("b ping after a stopped: %v", err)
	}
}

func TestManyConcurrentStarts(t *testing.T) {
	const n = 4
	var wg sync.WaitGroup
	addrs := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Start from a goroutine is fine as long as it does not fail.
			addrs[i] = Start(t).Addr()
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("address %s used twice: %v", a, addrs)
		}
		seen[a] = true
	}
}

func TestArgs(t *testing.T) {
	s := Start(t, Args("--requirepass", "secret", "--maxmemory", "10mb"))
	if err := oneShotPing(t, s); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("ping without password: %v, want NOAUTH", err)
	}
	opt := s.Options()
	opt.Password = "secret"
	c := redis.NewClient(opt)
	defer c.Close()
	if err := pingErr(t, c); err != nil {
		t.Fatalf("ping with password: %v", err)
	}
	got, err := c.ConfigGet(context.Background(), "maxmemory").Result()
	if err != nil || got["maxmemory"] != "10485760" {
		t.Fatalf("CONFIG GET maxmemory = %v, %v", got, err)
	}
}

func TestNoGoroutineAfterStop(t *testing.T) {
	before := goleak.IgnoreCurrent()
	s := Start(t)
	s.Restart(t)
	s.Kill(t)
	s.Restart(t)
	s.Stop(t)
	if err := goleak.Find(before); err != nil {
		t.Fatal(err)
	}
}

func TestNoZombieAfterStop(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	s := Start(t)
	s.mu.Lock()
	pid := s.cmd.Process.Pid
	s.mu.Unlock()
	s.Stop(t)
	// A zombie would still have /proc/PID with state Z; a reaped process
	// has no /proc entry (unless the pid was reused, which is unlikely
	// this fast and would not be a zombie of ours).
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil && strings.Contains(string(b), ") Z ") {
		t.Fatalf("redis-server pid %d is a zombie: %s", pid, b)
	}
}

func TestStartFailsWithLog(t *testing.T) {
	ft := &fakeTB{TB: t}
	ft.run(func() { Start(ft, Args("--no-such-option", "x")) })
	if !ft.failed {
		t.Fatal("Start with a bad option did not fail the test")
	}
	if !strings.Contains(ft.msg, "redis-server log") || !strings.Contains(ft.msg, "no-such-option") {
		t.Fatalf("failure message lacks the server's log:\n%s", ft.msg)
	}
}

func TestMissingRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())

	t.Run("skip", func(t *testing.T) {
		t.Setenv("CI", "")
		ft := &fakeTB{TB: t}
		ft.run(func() { Start(ft) })
		if !ft.skipped || ft.failed {
			t.Fatalf("skipped=%v failed=%v, want a skip", ft.skipped, ft.failed)
		}
		if !strings.Contains(ft.msg, InstallHint) {
			t.Fatalf("skip message lacks the hint: %s", ft.msg)
		}
	})
	t.Run("ci", func(t *testing.T) {
		t.Setenv("CI", "true")
		ft := &fakeTB{TB: t}
		ft.run(func() { Start(ft) })
		if !ft.failed {
			t.Fatal("Start without redis-server did not fail under CI=true")
		}
		if !strings.Contains(ft.msg, InstallHint) {
			t.Fatalf("failure message lacks the hint: %s", ft.msg)
		}
	})
}

// fakeTB records Fatalf and Skipf instead of ending the real test; the
// function under test runs in its own goroutine, which they end.
type fakeTB struct {
	testing.TB
	mu      sync.Mutex
	failed  bool
	skipped bool
	msg     string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Skipf(format string, args ...any) {
	f.mu.Lock()
	f.skipped, f.msg = true, fmt.Sprintf(format, args...)
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) run(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}
