// Package redistest starts real redis-server processes for tests.
//
// Each call to Start runs its own redis-server, listening either on a free
// TCP port on 127.0.0.1 or on a unix socket in a temporary directory, with
// persistence turned off and its working directory in tb.TempDir(). The
// process is stopped and reaped when the test ends. A Server can be paused
// (SIGSTOP), stopped, killed and restarted on the same address to test how
// code behaves when Redis freezes, goes away and comes back.
//
// Built on Server: StartProxy puts a fault-injecting TCP proxy in front of
// a server (replies stalled or dropped), StartCluster starts a Redis
// Cluster, and StartSentinel a master, a replica and three sentinels.
//
// When redis-server is not on PATH the test is skipped, or fails when the
// environment variable CI is "true".
//
// The helper leaves no goroutine of its own running once the process it
// started has exited, so tests that use go.uber.org/goleak can use it.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// InstallHint tells how to install redis-server on a Debian machine. It is
// part of the message of a test that is skipped or fails because
// redis-server is missing.
const InstallHint = "install it: apt-get update && apt-get install -y redis-server"

const (
	// readyTimeout bounds how long Start and Restart wait for PING to work.
	readyTimeout = 10 * time.Second
	// stopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
	stopTimeout = 5 * time.Second
	// maxSocketPath is the longest unix socket path that works everywhere
	// (sun_path is 108 bytes on Linux, 104 on the BSDs and macOS).
	maxSocketPath = 100
	// startAttempts is how many free ports Start tries before giving up; a
	// port picked as free can be taken by another process before
	// redis-server binds it.
	startAttempts = 5
)

// Option changes how Start runs redis-server.
type Option func(*config)

type config struct {
	unix bool
	args []string
	// name names the process in failure messages and its log file
	// ("redis-server" unless a Cluster or Sentinel sets it).
	name string
	// head, when set, returns the arguments that go before all others
	// (a sentinel's config file and --sentinel); it may write files in
	// dir, the server's working directory.
	head func(dir string) ([]string, error)
	// portArgs, when set, returns arguments that depend on the port
	// picked (a cluster node's bus port); it runs once per attempt.
	portArgs func(port int) ([]string, error)
}

// named sets the process name used in messages and the log file name.
func named(name string) Option {
	return func(c *config) { c.name = name }
}

// Unix makes the server listen on a unix socket in a temporary directory
// instead of a TCP port. TCP is then turned off (--port 0).
func Unix() Option {
	return func(c *config) { c.unix = true }
}

// Args appends extra command-line arguments to redis-server, after the
// ones Start sets, so they can override them; for example
// Args("--maxmemory", "10mb") or Args("--requirepass", "secret").
func Args(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is a redis-server process started by Start. Its methods are safe
// for concurrent use.
type Server struct {
	name    string
	bin     string
	network string
	addr    string
	dir     string
	logPath string
	args    []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited and been reaped
}

// Start runs a new redis-server and waits until it answers PING. It fails
// the test, with the server's log, if the server is not ready within 10
// seconds. The server is stopped when the test and its subtests end
// (tb.Cleanup).
//
// By default the server listens on a free TCP port on 127.0.0.1; see Unix
// and Args for the options. It runs with --save "" and --appendonly no, so
// it keeps nothing on disk and a restarted server starts empty.
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	cfg := config{name: "redis-server"}
	for _, o := range opts {
		o(&cfg)
	}
	bin := lookPath(tb)

	dir := tb.TempDir()
	s := &Server{
		name:    cfg.name,
		bin:     bin,
		dir:     dir,
		logPath: filepath.Join(dir, cfg.name+".log"),
	}
	tb.Cleanup(func() { s.Stop(tb) })

	var head []string
	if cfg.head != nil {
		var err error
		if head, err = cfg.head(dir); err != nil {
			tb.Fatalf("redistest: %s: %v", s.name, err)
		}
	}

	if cfg.unix {
		s.network = "unix"
		s.addr = socketPath(tb, dir)
		s.args = append(append(head,
			"--port", "0",
			"--unixsocket", s.addr,
			"--unixsocketperm", "700",
		), s.commonArgs(cfg.args)...)
		s.mu.Lock()
		err := s.startLocked()
		s.mu.Unlock()
		if err != nil {
			tb.Fatalf("redistest: %v\n%s", err, s.logTail())
		}
		return s
	}

	s.network = "tcp"
	var err error
	for attempt := 0; attempt < startAttempts; attempt++ {
		var port int
		port, err = freePort()
		if err != nil {
			tb.Fatalf("redistest: pick a free port: %v", err)
		}
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.args = append(append([]string(nil), head...), "--port", strconv.Itoa(port))
		if cfg.portArgs != nil {
			more, perr := cfg.portArgs(port)
			if perr != nil {
				tb.Fatalf("redistest: %s: %v", s.name, perr)
			}
			s.args = append(s.args, more...)
		}
		s.args = append(s.args, s.commonArgs(cfg.args)...)
		s.mu.Lock()
		err = s.startLocked()
		s.mu.Unlock()
		if err == nil {
			return s
		}
		if !errors.Is(err, errExited) {
			break
		}
		// The process died: most likely the port was taken between
		// freePort and the bind. Try another one.
	}
	tb.Fatalf("redistest: %v\n%s", err, s.logTail())
	return nil
}

func (s *Server) commonArgs(extra []string) []string {
	args := []string{
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", "",
	}
	return append(args, extra...)
}

// Addr returns the address the server listens on: "127.0.0.1:PORT" for TCP,
// the socket's path for a unix socket. It stays the same across Restart.
func (s *Server) Addr() string { return s.addr }

// Network returns "tcp" or "unix", as net.Dial and redis.Options expect.
func (s *Server) Network() string { return s.network }

// Options returns new go-redis options that connect to the server. The
// caller may change them.
func (s *Server) Options() *redis.Options {
	return &redis.Options{Network: s.network, Addr: s.addr}
}

// Client returns a new go-redis client connected to the server. It is
// closed when the test ends, before the server is stopped.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(s.Options())
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Running reports whether the server process is running. It is false after
// Stop or Kill and after the process died by itself.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runningLocked()
}

func (s *Server) runningLocked() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Stop stops the server: SIGTERM, then SIGKILL if it has not exited within
// 5 seconds. It returns once the process has been reaped. Stopping a server
// that is not running does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(tb, syscall.SIGTERM)
}

// Kill kills the server with SIGKILL, as a crash would, and returns once
// the process has been reaped. Killing a server that is not running does
// nothing.
func (s *Server) Kill(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(tb, syscall.SIGKILL)
}

func (s *Server) stopLocked(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if !s.runningLocked() {
		return
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		tb.Errorf("redistest: signal %s (pid %d): %v", s.name, s.cmd.Process.Pid, err)
	}
	if sig != syscall.SIGKILL {
		// A process stopped by Pause keeps SIGTERM pending until it is
		// continued.
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		timer := time.NewTimer(stopTimeout)
		select {
		case <-s.done:
			timer.Stop()
			return
		case <-timer.C:
			tb.Logf("redistest: %s (pid %d) did not exit %v after %v; killing it",
				s.name, s.cmd.Process.Pid, stopTimeout, sig)
			_ = s.cmd.Process.Kill()
		}
	}
	<-s.done
}

// Restart starts the server again on the same address and waits until it
// answers PING, failing the test with the server's log if it does not
// within 10 seconds. A server that is running is stopped first (SIGTERM).
// The restarted server starts with an empty dataset.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked(tb, syscall.SIGTERM)

	// The old process may have left its socket file behind (SIGKILL);
	// redis-server replaces it, but remove it to be sure.
	if s.network == "unix" {
		_ = os.Remove(s.addr)
	}
	deadline := time.Now().Add(readyTimeout)
	var err error
	for {
		if err = s.startLocked(); err == nil {
			return
		}
		// The port may still be held briefly by a closing socket; retry
		// while time remains.
		if !errors.Is(err, errExited) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("redistest: restart: %v\n%s", err, s.logTail())
}

var errExited = errors.New("redis-server exited before it was ready")

// startLocked runs the process and waits until it answers PING. On failure
// the process is killed and reaped. s.mu must be held.
func (s *Server) startLocked() error {
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	fmt.Fprintf(logf, "==== redistest: %s %s\n", s.bin, strings.Join(quoteArgs(s.args), " "))

	cmd := exec.Command(s.bin, s.args...)
	cmd.Dir = s.dir
	// Give the process the log file itself, not a pipe, so that exec
	// starts no copying goroutines.
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	err = startCmd(cmd)
	logf.Close()
	if err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}

	done := make(chan struct{})
	go func() {
		// Ends when the process ends; reaps it.
		_ = cmd.Wait()
		close(done)
	}()

	s.cmd, s.done = cmd, done

	if err := waitReady(s.network, s.addr, done, readyTimeout); err != nil {
		_ = cmd.Process.Kill()
		<-done
		return err
	}
	return nil
}

// waitReady polls the server with PING until it answers +PONG, the process
// exits (done is closed), or the timeout passes.
func waitReady(network, addr string, done <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		select {
		case <-done:
			return errExited
		default:
		}
		if last = ping(network, addr); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server at %s %s not ready after %v: %v", network, addr, timeout, last)
		}
		select {
		case <-done:
			return errExited
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping sends one inline PING on a fresh connection and checks for +PONG
// (or -NOAUTH). A server that is loading answers -LOADING, which counts as
// not ready.
func ping(network, addr string) error {
	conn, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	// -NOAUTH: the server is up but wants a password (Args("--requirepass", ...)).
	if line = strings.TrimSpace(line); line != "+PONG" && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// logTail returns the end of the server's log, for failure messages.
func (s *Server) logTail() string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no %s log: %v)", s.name, err)
	}
	const max = 8 << 10
	if len(b) > max {
		b = append([]byte("...\n"), b[len(b)-max:]...)
	}
	return s.name + " log (" + s.logPath + "):\n" + string(b)
}

func lookPath(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err == nil {
		return bin
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("redistest: redis-server not found on PATH (%v); %s", err, InstallHint)
	}
	tb.Skipf("\n"+
		"************************************************************\n"+
		"*** redistest: SKIPPING: redis-server not found on PATH\n"+
		"*** %s\n"+
		"************************************************************", InstallHint)
	return ""
}

// socketPath returns a path for the unix socket in dir, or in a new short
// temporary directory when dir is too long for a socket path.
func socketPath(tb testing.TB, dir string) string {
	tb.Helper()
	p := filepath.Join(dir, "redis.sock")
	if len(p) <= maxSocketPath {
		return p
	}
	short, err := os.MkdirTemp("", "redistest")
	if err != nil {
		tb.Fatalf("redistest: make socket dir: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(short) })
	return filepath.Join(short, "redis.sock")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func quoteArgs(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return q
}
