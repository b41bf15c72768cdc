package redistest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestCluster(t *testing.T) {
	t.Parallel() // mostly waiting on processes
	c := StartCluster(t, 3)
	addrs := c.Addrs()
	if len(addrs) != 3 || len(c.Nodes()) != 3 {
		t.Fatalf("Addrs() = %v, %d nodes; want 3", addrs, len(c.Nodes()))
	}
	ctx := context.Background()
	for _, s := range c.Nodes() {
		info, err := s.Client(t).ClusterInfo(ctx).Result()
		if err != nil || !strings.Contains(info, "cluster_state:ok") || infoField(info, "cluster_slots_assigned") != "16384" {
			t.Fatalf("%s: CLUSTER INFO = %q, %v", s.Addr(), info, err)
		}
	}

	// Keys spread over every master, and each is where NodeForKey says.
	rdb := c.ClusterClient(t)
	const keys = 60
	for i := range keys {
		if err := rdb.Set(ctx, fmt.Sprintf("k%d", i), i, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	total := 0
	for _, s := range c.Nodes() {
		n, err := s.Client(t).DBSize(ctx).Result()
		if err != nil || n == 0 {
			t.Fatalf("%s holds %d keys, %v; want some of them", s.Addr(), n, err)
		}
		total += int(n)
	}
	if total != keys {
		t.Fatalf("the nodes hold %d keys, want %d", total, keys)
	}
	owner := c.NodeForKey(t, "k7")
	if got, err := owner.Client(t).Get(ctx, "k7").Result(); err != nil || got != "7" {
		t.Fatalf("GET k7 on %s = %q, %v", owner.Addr(), got, err)
	}

	// Keys sharing a hash tag share a node: a script over both works.
	if err := rdb.Eval(ctx, `redis.call("SET", KEYS[1], 1); return redis.call("SET", KEYS[2], 2)`,
		[]string{"{job}:a", "{job}:b"}).Err(); err != nil {
		t.Fatalf("EVAL over one hash tag: %v", err)
	}
}

// TestClusterNodeRestart: a killed node takes the cluster down (no
// replicas, full coverage); restarted, it rejoins with its slots, empty.
func TestClusterNodeRestart(t *testing.T) {
	t.Parallel() // mostly waiting on processes
	c := StartCluster(t, 3)
	ctx := context.Background()
	rdb := c.ClusterClient(t)
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	owner := c.NodeForKey(t, "k")
	owner.Kill(t)
	if err := rdb.Get(ctx, "k").Err(); err == nil {
		t.Fatal("GET k with its node killed succeeded")
	}
	owner.Restart(t)
	c.WaitOK(t)
	if got := c.NodeForKey(t, "k"); got != owner {
		t.Fatalf("after restart k is on %s, want %s", got.Addr(), owner.Addr())
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := rdb.Set(ctx, "k", "again", 0).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SET k after the node came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestClusterOneMaster(t *testing.T) {
	t.Parallel() // mostly waiting on processes
	c := StartCluster(t, 1)
	if err := c.ClusterClient(t).Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestTopologiesMissingRedisServer: StartCluster and StartSentinel skip,
// or fail under CI=true, as Start does.
func TestTopologiesMissingRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	starts := map[string]func(testing.TB){
		"cluster":  func(tb testing.TB) { StartCluster(tb, 3) },
		"sentinel": func(tb testing.TB) { StartSentinel(tb) },
	}
	for name, start := range starts {
		t.Run(name, func(t *testing.T) {
			t.Setenv("CI", "")
			ft := &fakeTB{TB: t}
			ft.run(func() { start(ft) })
			if !ft.skipped || ft.failed || !strings.Contains(ft.msg, InstallHint) {
				t.Fatalf("skipped=%v failed=%v msg=%q, want a skip with the hint", ft.skipped, ft.failed, ft.msg)
			}
			t.Setenv("CI", "true")
			ft = &fakeTB{TB: t}
			ft.run(func() { start(ft) })
			if !ft.failed {
				t.Fatal("no failure under CI=true")
			}
		})
	}
}
