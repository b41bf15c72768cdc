package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of the redis-server the benchmark starts.
const (
	redisReadyTimeout = 10 * time.Second // from exec to the first PONG
	redisStopTimeout  = 5 * time.Second  // from SIGTERM to SIGKILL
)

// redisServer is a redis-server process of our own on a free loopback port,
// with persistence off, so that no phase depends on a Redis set up by hand.
type redisServer struct {
	addr  string
	dir   string
	cmd   *exec.Cmd
	done  chan struct{}
	admin *redis.Client // the benchmark's own connection: command statistics
}

// startRedis runs redis-server and waits until it answers PING.
func startRedis() (*redisServer, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server not found on PATH (apt-get install -y redis-server): %w", err)
	}
	dir, err := os.MkdirTemp("", "schedbench-redis")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", "")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, log, log
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	r := &redisServer{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(r.done) }() // reaps the process
	if err := r.waitReady(); err != nil {
		r.stop()
		return nil, err
	}
	r.admin = redis.NewClient(&redis.Options{Addr: r.addr, PoolSize: 1})
	return r, nil
}

func (r *redisServer) waitReady() error {
	c := redis.NewClient(&redis.Options{Addr: r.addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(redisReadyTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-r.done:
			return errors.New("redis-server exited before answering PING; see its log in " + r.dir)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server at %s not ready after %s: %w", r.addr, redisReadyTimeout, err)
		}
	}
}

// stop ends the server (SIGTERM, then SIGKILL after 5s), reaps it and
// removes its directory. It may be called more than once.
func (r *redisServer) stop() {
	if r.admin != nil {
		_ = r.admin.Close()
	}
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(redisStopTimeout):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	}
	_ = os.RemoveAll(r.dir)
}

// cpu returns the user+system CPU the server has used so far, read from
// /proc (Linux; zero elsewhere). Its resolution is one clock tick (10 ms).
func (r *redisServer) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: fields are counted after its ')'.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const clockTick = 10 * time.Millisecond // USER_HZ is 100 on every Linux ABI Go supports
	return time.Duration(utime+stime) * clockTick
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
