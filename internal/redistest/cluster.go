package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterReadyTimeout bounds how long StartCluster and WaitOK wait for
	// cluster_state:ok on every node.
	clusterReadyTimeout = 30 * time.Second
	// clusterNodeTimeout is the nodes' cluster-node-timeout in
	// milliseconds: how long a node may not answer before the others
	// flag it as failing (and, with no replicas, the cluster goes down).
	// Short, so that tests that kill a node do not wait long.
	clusterNodeTimeout = 2000
	// clusterSlots is the number of hash slots of a Redis Cluster.
	clusterSlots = 16384
)

// Cluster is a Redis Cluster of masters with no replicas, each its own
// redis-server process, started by StartCluster. Its methods are safe for
// concurrent use.
type Cluster struct {
	nodes []*Server
}

// StartCluster starts masters redis-server processes with
// --cluster-enabled yes, each on a free port of 127.0.0.1 with a cluster
// bus port of its own, splits the 16384 slots evenly among them in node
// order, and waits until every node reports cluster_state:ok, failing the
// test after 30 seconds. The nodes use cluster-node-timeout 2000 ms and the
// default cluster-require-full-coverage yes: while a node is down the
// whole cluster refuses commands, as a real one without replicas does.
//
// The cluster is created with CLUSTER ADDSLOTSRANGE and CLUSTER MEET
// rather than redis-cli --cluster create, which would need redis-cli and
// at least 3 masters: any count from 1 works. Every node is stopped when
// the test ends; like Start, it skips the test (fails it under CI=true)
// when redis-server is missing.
//
// A node stopped or killed and then restarted (Nodes()[i].Restart) keeps
// its identity and slots (its nodes.conf is kept) but not its data; call
// WaitOK after it.
func StartCluster(tb testing.TB, masters int) *Cluster {
	tb.Helper()
	if masters < 1 || masters > clusterSlots {
		tb.Fatalf("redistest: StartCluster(%d): want 1 to %d masters", masters, clusterSlots)
	}
	c := &Cluster{}
	for i := range masters {
		c.nodes = append(c.nodes, Start(tb, named(fmt.Sprintf("cluster-node-%d", i)), clusterNode()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	if err := c.create(ctx); err != nil {
		tb.Fatalf("redistest: create cluster: %v\n%s", err, c.logTails())
	}
	c.WaitOK(tb)
	return c
}

// clusterNode turns cluster mode on, with a bus port picked per attempt
// (the default, port+10000, may be taken or past 65535).
func clusterNode() Option {
	return func(c *config) {
		c.portArgs = func(port int) ([]string, error) {
			bus, err := freePort()
			for err == nil && bus == port {
				bus, err = freePort()
			}
			if err != nil {
				return nil, fmt.Errorf("pick a free bus port: %w", err)
			}
			return []string{
				"--cluster-enabled", "yes",
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", strconv.Itoa(clusterNodeTimeout),
			}, nil
		}
	}
}

// create gives each node its slots and a distinct config epoch, then
// introduces every node to the first one; gossip does the rest.
func (c *Cluster) create(ctx context.Context) error {
	n := len(c.nodes)
	for i, s := range c.nodes {
		err := withClient(s, func(rdb *redis.Client) error {
			// Distinct epochs from the start, as redis-cli does, so the
			// nodes need no epoch collision round.
			if err := rdb.Do(ctx, "cluster", "set-config-epoch", i+1).Err(); err != nil {
				return err
			}
			lo, hi := i*clusterSlots/n, (i+1)*clusterSlots/n-1
			return rdb.ClusterAddSlotsRange(ctx, lo, hi).Err()
		})
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	first := c.nodes[0]
	for _, s := range c.nodes[1:] {
		var bus string
		err := withClient(s, func(rdb *redis.Client) error {
			cfg, err := rdb.ConfigGet(ctx, "cluster-port").Result()
			bus = cfg["cluster-port"]
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: cluster-port: %w", s.name, err)
		}
		host, port, _ := net.SplitHostPort(s.Addr())
		err = withClient(first, func(rdb *redis.Client) error {
			return rdb.Do(ctx, "cluster", "meet", host, port, bus).Err()
		})
		if err != nil {
			return fmt.Errorf("cluster meet %s: %w", s.name, err)
		}
	}
	return nil
}

// withClient runs f with a short-lived client of s.
func withClient(s *Server, f func(*redis.Client) error) error {
	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	return f(rdb)
}

// WaitOK waits until every running node reports cluster_state:ok and knows
// every node, and fails the test, with the nodes' logs, after 30 seconds.
// With a node down and the default full coverage, the state is not ok:
// restart the node first.
func (c *Cluster) WaitOK(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(clusterReadyTimeout)
	for {
		err := c.checkOK()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: cluster not ok after %v: %v\n%s", clusterReadyTimeout, err, c.logTails())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) checkOK() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, s := range c.nodes {
		if !s.Running() {
			continue
		}
		var info string
		err := withClient(s, func(rdb *redis.Client) (err error) {
			info, err = rdb.ClusterInfo(ctx).Result()
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster state is not ok", s.name)
		}
		if known := infoField(info, "cluster_known_nodes"); known != strconv.Itoa(len(c.nodes)) {
			return fmt.Errorf("%s: knows %s nodes, want %d", s.name, known, len(c.nodes))
		}
	}
	return nil
}

// infoField returns the value of field in an INFO-style "field:value"
// text, or "".
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// Addrs returns the nodes' addresses, "127.0.0.1:PORT", in node order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, s := range c.nodes {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Nodes returns the nodes in order (node i holds the i-th share of the
// slots), so that a test can stop, kill, pause or restart one.
func (c *Cluster) Nodes() []*Server {
	return append([]*Server(nil), c.nodes...)
}

// ClusterClient returns a new go-redis cluster client seeded with every
// node's address. It is closed when the test ends, before the nodes stop.
func (c *Cluster) ClusterClient(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	tb.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// NodeForKey returns the node that serves key's slot, as the first
// running node that answers sees it (CLUSTER KEYSLOT and CLUSTER SHARDS).
func (c *Cluster) NodeForKey(tb testing.TB, key string) *Server {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []string
	for _, s := range c.nodes {
		if !s.Running() {
			continue
		}
		var owner string
		err := withClient(s, func(rdb *redis.Client) error {
			slot, err := rdb.ClusterKeySlot(ctx, key).Result()
			if err != nil {
				return err
			}
			shards, err := rdb.ClusterShards(ctx).Result()
			if err != nil {
				return err
			}
			for _, sh := range shards {
				for _, r := range sh.Slots {
					if r.Start > slot || slot > r.End {
						continue
					}
					for _, n := range sh.Nodes {
						if n.Role == "master" {
							owner = net.JoinHostPort(n.IP, strconv.FormatInt(n.Port, 10))
						}
					}
				}
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", s.name, err))
			continue
		}
		for _, n := range c.nodes {
			if n.Addr() == owner {
				return n
			}
		}
		errs = append(errs, fmt.Sprintf("%s: no node of this cluster serves the slot (owner %q)", s.name, owner))
	}
	tb.Fatalf("redistest: node for key %q: %s", key, strings.Join(errs, "; "))
	return nil
}

// Stop stops every node (SIGTERM, then SIGKILL after 5 seconds each).
// StartCluster already arranges it for the end of the test.
func (c *Cluster) Stop(tb testing.TB) {
	tb.Helper()
	for _, s := range c.nodes {
		s.Stop(tb)
	}
}

func (c *Cluster) logTails() string {
	var b strings.Builder
	for _, s := range c.nodes {
		b.WriteString(s.logTail())
		b.WriteString("\n")
	}
	return b.String()
}
