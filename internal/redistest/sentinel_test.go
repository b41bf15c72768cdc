package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// role returns the server's replication role ("master" or "slave").
func role(t *testing.T, s *Server) string {
	t.Helper()
	info, err := s.Client(t).Info(context.Background(), "replication").Result()
	if err != nil {
		t.Fatalf("%s: INFO: %v", s.Addr(), err)
	}
	return infoField(info, "role")
}

// setEventually retries SET through c until it works, as a caller riding
// out a failover does.
func setEventually(t *testing.T, c *redis.Client, key, value string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := c.Set(context.Background(), key, value, 0).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SET %s through the failover client: %v", key, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSentinelFailover: the setup starts with a replica in sync, a forced
// failover swaps the roles and keeps the data, a killed master is
// replaced, and the failover client follows both.
func TestSentinelFailover(t *testing.T) {
	t.Parallel() // mostly waiting on processes
	sn := StartSentinel(t)
	if sn.MasterName() == "" || len(sn.SentinelAddrs()) != 3 || len(sn.Sentinels()) != 3 {
		t.Fatalf("MasterName() = %q, SentinelAddrs() = %v", sn.MasterName(), sn.SentinelAddrs())
	}
	a, b := sn.Master(), sn.Replica()
	if a == b || role(t, a) != "master" || role(t, b) != "slave" {
		t.Fatalf("Master() %s (%s), Replica() %s (%s)", a.Addr(), role(t, a), b.Addr(), role(t, b))
	}
	ctx := context.Background()
	fc := sn.FailoverClient(t)
	if err := fc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := fc.Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v: the replica did not acknowledge", n, err)
	}

	if got := sn.Failover(t, ForceFailover); got != b {
		t.Fatalf("ForceFailover promoted %s, want the replica %s", got.Addr(), b.Addr())
	}
	if sn.Master() != b || sn.Replica() != a {
		t.Fatal("Master()/Replica() did not swap after the failover")
	}
	if got, err := b.Client(t).Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k on the new master = %q, %v", got, err)
	}
	setEventually(t, fc, "k2", "v2")
	if got, err := b.Client(t).Get(ctx, "k2").Result(); err != nil || got != "v2" {
		t.Fatalf("the failover client wrote k2 elsewhere: GET on the new master = %q, %v", got, err)
	}
	sn.WaitReplica(t)
	if role(t, a) != "slave" {
		t.Fatalf("the old master is %s after WaitReplica, want a replica", role(t, a))
	}
	if n, err := fc.Wait(ctx, 1, 5000).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v: the old master does not replicate the new one", n, err)
	}

	start := time.Now()
	if got := sn.Failover(t, KillMaster); got != a {
		t.Fatalf("KillMaster promoted %s, want %s", got.Addr(), a.Addr())
	}
	t.Logf("failover after SIGKILL took %v", time.Since(start))
	if b.Running() {
		t.Fatal("KillMaster left the master running")
	}
	setEventually(t, fc, "k3", "v3")
	if got, err := a.Client(t).Get(ctx, "k2").Result(); err != nil || got != "v2" {
		t.Fatalf("GET k2 on the promoted replica = %q, %v", got, err)
	}
}

// TestSentinelPauseMaster: a frozen master is replaced; continued, the
// sentinels turn it into a replica of the new master.
func TestSentinelPauseMaster(t *testing.T) {
	t.Parallel() // mostly waiting on processes
	sn := StartSentinel(t)
	a, b := sn.Master(), sn.Replica()
	start := time.Now()
	if got := sn.Failover(t, PauseMaster); got != b {
		t.Fatalf("PauseMaster promoted %s, want %s", got.Addr(), b.Addr())
	}
	t.Logf("failover after SIGSTOP took %v", time.Since(start))
	a.Continue(t)
	sn.WaitReplica(t)
	if sn.Replica() != a || role(t, a) != "slave" {
		t.Fatalf("the continued old master is %s, want the replica", role(t, a))
	}
}
