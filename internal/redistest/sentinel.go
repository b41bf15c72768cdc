package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// sentinelMasterName is the name the sentinels monitor the master under.
	sentinelMasterName = "cronguard"
	// sentinelCount and sentinelQuorum: 3 sentinels, 2 of which must agree
	// that the master is down before a failover.
	sentinelCount  = 3
	sentinelQuorum = 2
	// sentinelDownAfter is down-after-milliseconds: how long the master
	// may not answer before a sentinel considers it down.
	sentinelDownAfter = 1000
	// sentinelFailoverTimeout is failover-timeout in milliseconds.
	sentinelFailoverTimeout = 5000
	// sentinelReadyTimeout bounds how long StartSentinel waits for the
	// replica to be in sync and the sentinels to see everything.
	sentinelReadyTimeout = 30 * time.Second
	// failoverWait bounds how long Failover waits for the promotion.
	failoverWait = 20 * time.Second
)

// FailoverMode says how Sentinel.Failover takes the master away.
type FailoverMode int

const (
	// ForceFailover asks a sentinel for SENTINEL FAILOVER: no detection
	// delay (about a second). The old master stays up, and a master,
	// until the sentinels turn it into a replica of the new one, about
	// 10 seconds later.
	ForceFailover FailoverMode = iota
	// KillMaster kills the master with SIGKILL, as a crash would; the
	// sentinels notice after down-after-milliseconds (1 s) and elect a
	// leader, which promotes the replica. A restarted old master comes
	// back empty, as a master, until the sentinels turn it into a
	// replica of the new one.
	KillMaster
	// PauseMaster freezes the master with SIGSTOP (Server.Pause), as a
	// long GC pause or a VM migration would; the sentinels promote the
	// replica. The old master stays frozen until Continue; then it answers
	// what it received meanwhile, as a master, until the sentinels turn
	// it into a replica of the new one.
	PauseMaster
)

// Sentinel is a Redis Sentinel setup started by StartSentinel: two data
// servers (a master and its replica) and three sentinels. Its methods are
// safe for concurrent use.
type Sentinel struct {
	data      [2]*Server // the two data servers, in start order
	sentinels []*Server

	mu    sync.Mutex
	known *Server // the master as last seen
}

// StartSentinel starts one master, one replica of it (--replicaof) and
// three sentinels (redis-server --sentinel, with a config file in a
// temporary directory) that monitor the master under MasterName with
// quorum 2, down-after-milliseconds 1000 and failover-timeout 5000. It
// waits until the replica is in sync and every sentinel sees the master,
// the replica and the two other sentinels, and fails the test after 30
// seconds. Every process listens on a free port of 127.0.0.1 and is
// stopped when the test ends; like Start, it skips the test (fails it
// under CI=true) when redis-server is missing.
//
// Sentinels stop acting for 30 seconds (TILT mode) when their timer sees
// a jump of 2 seconds or more, which a machine loaded to a standstill can
// cause; Failover then times out.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	// No diskless sync delay (5 s by default): the replica syncs at once.
	fast := Args("--repl-diskless-sync-delay", "0")
	master := Start(tb, named("data-a"), fast)
	host, port, _ := net.SplitHostPort(master.Addr())
	replica := Start(tb, named("data-b"), fast, Args("--replicaof", host, port))
	s := &Sentinel{data: [2]*Server{master, replica}, known: master}
	deadline := time.Now().Add(sentinelReadyTimeout)
	// Sentinels learn the replicas from the master's INFO, which they
	// poll every 10 s once started: start them once the replica is in.
	s.waitFor(tb, deadline, func(ctx context.Context) error { return replicaInSync(ctx, replica, master) })
	for i := range sentinelCount {
		s.sentinels = append(s.sentinels, Start(tb, named(fmt.Sprintf("sentinel-%d", i)), sentinelConf(host, port)))
	}
	s.waitFor(tb, deadline, func(ctx context.Context) error { return s.sentinelsSee(ctx, master, replica) })
	return s
}

// sentinelConf runs the server as a sentinel with a config file it may
// rewrite, in its working directory.
func sentinelConf(host, port string) Option {
	return func(c *config) {
		c.head = func(dir string) ([]string, error) {
			path := filepath.Join(dir, "sentinel.conf")
			conf := fmt.Sprintf("sentinel monitor %[1]s %[2]s %[3]s %[4]d\n"+
				"sentinel down-after-milliseconds %[1]s %[5]d\n"+
				"sentinel failover-timeout %[1]s %[6]d\n"+
				"sentinel parallel-syncs %[1]s 1\n",
				sentinelMasterName, host, port, sentinelQuorum, sentinelDownAfter, sentinelFailoverTimeout)
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				return nil, err
			}
			return []string{path, "--sentinel"}, nil
		}
	}
}

// waitFor polls check every 100 ms until it succeeds, or fails the test
// with the last error and every process's log once deadline passes.
func (s *Sentinel) waitFor(tb testing.TB, deadline time.Time, check func(context.Context) error) {
	tb.Helper()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := check(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: sentinel setup: %v\n%s", err, s.logTails())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replicaInSync checks that replica replicates master with its link up.
func replicaInSync(ctx context.Context, replica, master *Server) error {
	return withClient(replica, func(rdb *redis.Client) error {
		info, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: %w", replica.name, err)
		}
		host, port, _ := net.SplitHostPort(master.Addr())
		if infoField(info, "role") != "slave" || infoField(info, "master_host") != host ||
			infoField(info, "master_port") != port || infoField(info, "master_link_status") != "up" {
			return fmt.Errorf("%s is not a replica of %s in sync yet", replica.name, master.name)
		}
		return nil
	})
}

// sentinelsSee checks that every running sentinel names master as
// master, sees it up, knows replica as its replica, up, and sees the
// other sentinels: what a sentinel needs to fail over (with the replica in
// sync, which callers check on the replica itself).
func (s *Sentinel) sentinelsSee(ctx context.Context, master, replica *Server) error {
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		err := withSentinel(sn, func(sc *redis.SentinelClient) error {
			m, err := sc.Master(ctx, sentinelMasterName).Result()
			if err != nil {
				return err
			}
			if addr := net.JoinHostPort(m["ip"], m["port"]); addr != master.Addr() {
				return fmt.Errorf("names %s as master, want %s (%s)", addr, master.Addr(), master.name)
			}
			if m["flags"] != "master" || m["num-other-sentinels"] != strconv.Itoa(sentinelCount-1) {
				return fmt.Errorf("sees the master as flags=%s with %s other sentinels", m["flags"], m["num-other-sentinels"])
			}
			rs, err := sc.Replicas(ctx, sentinelMasterName).Result()
			if err != nil {
				return err
			}
			for _, r := range rs {
				// Flags only: the link status a sentinel shows is as of
				// its last INFO, up to 10 s old, and it polls every
				// second once the master is down, before it picks.
				if net.JoinHostPort(r["ip"], r["port"]) == replica.Addr() {
					if r["flags"] != "slave" {
						return fmt.Errorf("sees the replica %s as flags=%s", replica.name, r["flags"])
					}
					return nil
				}
			}
			return fmt.Errorf("does not see the replica %s yet", replica.name)
		})
		if err != nil {
			return fmt.Errorf("%s: %w", sn.name, err)
		}
	}
	return nil
}

func withSentinel(s *Server, f func(*redis.SentinelClient) error) error {
	sc := redis.NewSentinelClient(s.Options())
	defer sc.Close()
	return f(sc)
}

// MasterName returns the name the sentinels monitor the master under, for
// redis.FailoverOptions.MasterName.
func (s *Sentinel) MasterName() string { return sentinelMasterName }

// SentinelAddrs returns the sentinels' addresses, "127.0.0.1:PORT".
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sn := range s.sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// Sentinels returns the three sentinel processes, so that a test can stop
// or pause one.
func (s *Sentinel) Sentinels() []*Server {
	return append([]*Server(nil), s.sentinels...)
}

// FailoverOptions returns new go-redis options for a client that finds the
// master through the sentinels. The caller may change them (timeouts).
func (s *Sentinel) FailoverOptions() *redis.FailoverOptions {
	return &redis.FailoverOptions{MasterName: sentinelMasterName, SentinelAddrs: s.SentinelAddrs()}
}

// FailoverClient returns a new go-redis client (redis.NewFailoverClient)
// that finds the master through the sentinels and follows failovers. It
// is closed when the test ends, before the servers stop.
func (s *Sentinel) FailoverClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(s.FailoverOptions())
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Master returns the data server that the sentinels name as master now:
// the answer of the first sentinel that answers within a second. When no
// sentinel answers, it returns the master they named last.
func (s *Sentinel) Master() *Server {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		addr, err := masterAddrOf(ctx, sn)
		if err != nil {
			continue
		}
		if m := s.byAddr(addr); m != nil {
			s.mu.Lock()
			s.known = m
			s.mu.Unlock()
			return m
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.known
}

// Replica returns the data server that is not Master.
func (s *Sentinel) Replica() *Server {
	if s.Master() == s.data[0] {
		return s.data[1]
	}
	return s.data[0]
}

func (s *Sentinel) byAddr(addr string) *Server {
	for _, d := range s.data {
		if d.Addr() == addr {
			return d
		}
	}
	return nil
}

// masterAddrOf asks one sentinel for the master's address.
func masterAddrOf(ctx context.Context, sn *Server) (string, error) {
	var addr string
	err := withSentinel(sn, func(sc *redis.SentinelClient) error {
		hp, err := sc.GetMasterAddrByName(ctx, sentinelMasterName).Result()
		if err != nil {
			return err
		}
		if len(hp) != 2 {
			return fmt.Errorf("GET-MASTER-ADDR-BY-NAME answered %q", hp)
		}
		addr = net.JoinHostPort(hp[0], hp[1])
		return nil
	})
	return addr, err
}

// Failover takes the master away as mode says, waits until every running
// sentinel names the other data server as master and that server says it
// is one, and returns it. It fails the test, with every process's log,
// after 20 seconds. It does not wait for the old master to become a
// replica (see WaitReplica): a second Failover needs one.
func (s *Sentinel) Failover(tb testing.TB, mode FailoverMode) *Server {
	tb.Helper()
	old := s.Master()
	promoted := s.data[0]
	if old == s.data[0] {
		promoted = s.data[1]
	}
	deadline := time.Now().Add(failoverWait)
	switch mode {
	case ForceFailover:
		s.waitFor(tb, deadline, s.forceFailover)
	case KillMaster:
		old.Kill(tb)
	case PauseMaster:
		old.Pause(tb)
	default:
		tb.Fatalf("redistest: Failover: unknown mode %d", mode)
	}
	s.waitFor(tb, deadline, func(ctx context.Context) error { return s.promotedTo(ctx, promoted) })
	s.mu.Lock()
	s.known = promoted
	s.mu.Unlock()
	return promoted
}

// forceFailover asks the first sentinel that accepts for SENTINEL
// FAILOVER. A sentinel refuses while a failover is in progress or when it
// has no good replica yet; waitFor retries.
func (s *Sentinel) forceFailover(ctx context.Context) error {
	var errs []string
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		err := withSentinel(sn, func(sc *redis.SentinelClient) error {
			return sc.Failover(ctx, sentinelMasterName).Err()
		})
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Sprintf("%s: %v", sn.name, err))
	}
	return fmt.Errorf("SENTINEL FAILOVER: %s", strings.Join(errs, "; "))
}

// promotedTo checks that every running sentinel names m as master and
// that m says it is one.
func (s *Sentinel) promotedTo(ctx context.Context, m *Server) error {
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		addr, err := masterAddrOf(ctx, sn)
		if err != nil {
			return fmt.Errorf("%s: %w", sn.name, err)
		}
		if addr != m.Addr() {
			return fmt.Errorf("%s still names %s as master, want %s (%s)", sn.name, addr, m.Addr(), m.name)
		}
	}
	return withClient(m, func(rdb *redis.Client) error {
		info, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		if role := infoField(info, "role"); role != "master" {
			return fmt.Errorf("%s has role %s, want master", m.name, role)
		}
		return nil
	})
}

// WaitReplica waits until Replica is a replica of Master in sync and every
// running sentinel sees it so, which a Failover needs, and fails the test
// after 30 seconds. After a ForceFailover the sentinels turn the old master
// into a replica within about 10 seconds (their INFO period); after
// KillMaster or PauseMaster, Restart or Continue the old master first.
func (s *Sentinel) WaitReplica(tb testing.TB) {
	tb.Helper()
	m := s.Master()
	r := s.data[0]
	if m == s.data[0] {
		r = s.data[1]
	}
	s.waitFor(tb, time.Now().Add(sentinelReadyTimeout), func(ctx context.Context) error {
		if err := replicaInSync(ctx, r, m); err != nil {
			return err
		}
		return s.sentinelsSee(ctx, m, r)
	})
}

// Stop stops the sentinels, then the data servers (SIGTERM, then SIGKILL
// after 5 seconds each). StartSentinel already arranges it for the end of
// the test.
func (s *Sentinel) Stop(tb testing.TB) {
	tb.Helper()
	for _, sn := range s.sentinels {
		sn.Stop(tb)
	}
	for _, d := range s.data {
		d.Stop(tb)
	}
}

func (s *Sentinel) logTails() string {
	var b strings.Builder
	for _, p := range append(s.data[:], s.sentinels...) {
		b.WriteString(p.logTail())
		b.WriteString("\n")
	}
	return b.String()
}
