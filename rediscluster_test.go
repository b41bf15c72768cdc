package cronguard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Tests of the scheduler on a real 3-master Redis Cluster
// (redistest.StartCluster): several instances, each with its own
// ClusterClient and WithRedis, jobs whose keys live on different masters.

// clusterJobs are job names whose {job} hash tags spread over the three
// masters of a 3-master cluster with evenly split slots (the test checks it
// with CLUSTER KEYSLOT rather than trusting this comment).
var clusterJobs = []string{"billing", "emails", "reports", "cleanup", "sync", "digest"}

// redisSched returns a quiet scheduler named id on WithRedis(c) (newTest).
func redisSched(t *testing.T, id string, c redis.UniversalClient, opts ...Option) (*Scheduler, *recorder) {
	t.Helper()
	return newTest(t, append([]Option{WithRedis(c), WithInstanceID(id)}, opts...)...)
}

// waitSwitchLoaded waits until the Redis kill switch that WithRedis made
// for each scheduler follows Redis (loaded and subscribed): before that, a
// tick is skipped for the backend, which tests that drive ticks by hand
// must not mistake for a fault.
func waitSwitchLoaded(t *testing.T, scheds ...*Scheduler) {
	t.Helper()
	ks := make([]*RedisKillSwitch, len(scheds))
	for i, s := range scheds {
		k, ok := s.cfg.killSwitch.(*RedisKillSwitch)
		if !ok {
			t.Fatalf("kill switch %T, want the RedisKillSwitch of WithRedis", s.cfg.killSwitch)
		}
		ks[i] = k
	}
	ksLoaded(t, ks...)
}

// runLog counts the runs of every job and tick, and keeps their fencing
// tokens. Safe for concurrent use.
type runLog struct {
	mu   sync.Mutex
	runs map[string]map[string][]string // job -> fmtTick(tick) -> instances
	toks map[string]map[string][]int64  // job -> fmtTick(tick) -> tokens
}

func newRunLog() *runLog {
	return &runLog{runs: map[string]map[string][]string{}, toks: map[string]map[string][]int64{}}
}

// job returns the job name as run by instance id: it records the run and
// sleeps d.
func (l *runLog) job(name, id string, d func() time.Duration) Job {
	return JobFunc(func(ctx context.Context) error {
		l.record(name, id, tickFrom(ctx), tokenFrom(ctx))
		select {
		case <-time.After(d()):
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	})
}

func (l *runLog) record(name, id string, tick time.Time, token int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.runs[name] == nil {
		l.runs[name], l.toks[name] = map[string][]string{}, map[string][]int64{}
	}
	k := fmtTick(tick)
	l.runs[name][k] = append(l.runs[name][k], id)
	if token != 0 {
		l.toks[name][k] = append(l.toks[name][k], token)
	}
}

// who returns the instances that ran job name at tick.
func (l *runLog) who(name string, tick time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.runs[name][fmtTick(tick)])
}

// tokens returns the tokens of job name's runs at tick.
func (l *runLog) tokens(name string, tick time.Time) []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.toks[name][fmtTick(tick)])
}

// jitter returns a random duration in [lo, hi].
func jitter(lo, hi time.Duration) func() time.Duration {
	return func() time.Duration { return lo + rand.N(hi-lo+1) }
}

// checkClusterKeys checks that each job's claim, lock and fence keys share
// one slot and one master, and that the jobs together use at least two of
// the masters. It returns how many jobs each master serves.
func checkClusterKeys(t *testing.T, cl *redistest.Cluster, jobs []string) map[string]int {
	t.Helper()
	l := &redisStore{keyPrefix: "cronguard:"}
	perNode := map[string]int{}
	for _, job := range jobs {
		keys := []string{l.claimKey(job), l.lockKey(job), l.fenceKey(job)}
		node := cl.NodeForKey(t, keys[0])
		for _, k := range keys[1:] {
			if n := cl.NodeForKey(t, k); n != node {
				t.Errorf("job %q: %s is on %s but %s on %s: one script cannot use both", job, keys[0], node.Addr(), k, n.Addr())
			}
		}
		perNode[node.Addr()]++
	}
	if len(perNode) < 2 {
		t.Fatalf("jobs %v: keys on %d master(s) %v, want at least 2 of 3", jobs, len(perNode), perNode)
	}
	return perNode
}

// Five instances, each with its own ClusterClient and WithRedis, six jobs
// whose keys spread over the three masters, 20 ticks driven through the
// real scheduled chain: per tick, every instance fires every job after a
// random delay of 0-80ms (the late instance changes from tick to tick, and
// ties make claims race), all at once. Each tick runs exactly once per job;
// the keys sit on the master that serves their slot.
func TestRedisClusterOneRunPerTickAcrossInstances(t *testing.T) {
	t.Parallel()
	const ticks, instances = 20, 5
	cl := redistest.StartCluster(t, 3)
	perNode := checkClusterKeys(t, cl, clusterJobs)
	log := newRunLog()
	var scheds []*Scheduler
	var recs []*recorder
	for i := range instances {
		id := fmt.Sprintf("cl-%d", i)
		s, rec := redisSched(t, id, cl.ClusterClient(t))
		for _, job := range clusterJobs {
			if err := s.Register(job, "* * * * * *", log.job(job, id, jitter(time.Millisecond, 20*time.Millisecond))); err != nil {
				t.Fatal(err)
			}
		}
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	waitSwitchLoaded(t, scheds...)

	type result struct {
		id  string
		rep Report
	}
	var mu sync.Mutex
	var results []result
	for i := range ticks {
		tick := t0.Add(time.Duration(i) * time.Second)
		var wg sync.WaitGroup
		for n, s := range scheds {
			delay := time.Duration(rand.IntN(5)) * 20 * time.Millisecond
			for _, job := range clusterJobs {
				wg.Go(func() {
					time.Sleep(delay)
					rep := tickAt(t, s, job, tick)
					mu.Lock()
					results = append(results, result{fmt.Sprintf("cl-%d", n), rep})
					mu.Unlock()
				})
			}
		}
		wg.Wait()
	}

	wins := map[string]int{}
	for _, r := range results {
		switch {
		case skipOf(r.rep) == "tick_taken":
		case skipOf(r.rep) != "" || r.rep.Err != nil:
			t.Errorf("%s %s tick %s: %v", r.id, r.rep.Job, fmtTick(r.rep.Tick), r.rep)
		default:
			wins[r.id]++
		}
	}
	for _, job := range clusterJobs {
		for i := range ticks {
			tick := t0.Add(time.Duration(i) * time.Second)
			if who := log.who(job, tick); len(who) != 1 {
				t.Errorf("job %s tick %s ran %d times %v, want once", job, fmtTick(tick), len(who), who)
			}
		}
	}
	for _, rec := range recs {
		if ev := rec.kind(EventMissed); len(ev) > 0 {
			t.Errorf("missed ticks reported on consecutive ticks: %v", ev[0].Err)
		}
	}
	if len(wins) < 2 {
		t.Errorf("winners %v: one instance won every tick, so claims never raced", wins)
	}
	checkKeysOnTheirNode(t, cl, clusterJobs, t0.Add((ticks-1)*time.Second))
	t.Logf("%d ticks x %d jobs over masters %v, each run once; wins per instance %v", ticks, len(clusterJobs), perNode, wins)
}

// checkKeysOnTheirNode reads each job's claim mark and fence straight from
// the master that NodeForKey names (a plain client: a key elsewhere would be
// a MOVED error), and checks the mark is at last.
func checkKeysOnTheirNode(t *testing.T, cl *redistest.Cluster, jobs []string, last time.Time) {
	t.Helper()
	ctx := context.Background()
	l := &redisStore{keyPrefix: "cronguard:"}
	for _, job := range jobs {
		node := cl.NodeForKey(t, l.claimKey(job))
		c := node.Client(t)
		if tick, err := c.HGet(ctx, l.claimKey(job), "tick").Result(); err != nil || tick != fmtTick(last) {
			t.Errorf("job %q: claim mark on %s = %q, %v; want %s", job, node.Addr(), tick, err, fmtTick(last))
		}
		if n, err := c.Exists(ctx, l.fenceKey(job)).Result(); err != nil || n != 1 {
			t.Errorf("job %q: fence on %s: %d, %v", job, node.Addr(), n, err)
		}
		if n, err := c.Exists(ctx, l.lockKey(job)).Result(); err != nil || n != 0 {
			t.Errorf("job %q: lock on %s after every run ended: %d, %v", job, node.Addr(), n, err)
		}
	}
}

// The same on real cron: five instances on "* * * * * *" for about five
// seconds, each run delayed 0-400ms at random (skew), three jobs on
// different masters: every tick from the first whole second runs once per
// job, and nothing is skipped for any reason but a taken tick.
func TestRedisClusterRealCron(t *testing.T) {
	t.Parallel()
	const instances, ticks = 5, 4
	cl := redistest.StartCluster(t, 3)
	jobs := clusterJobs[:3]
	checkClusterKeys(t, cl, jobs)
	log := newRunLog()
	delay := func(next Job) Job {
		return JobFunc(func(ctx context.Context) error {
			select {
			case <-time.After(time.Duration(rand.IntN(5)) * 100 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			return next.Run(ctx)
		})
	}
	var scheds []*Scheduler
	var recs []*recorder
	for i := range instances {
		id := fmt.Sprintf("cron-%d", i)
		s, rec := redisSched(t, id, cl.ClusterClient(t), WithMiddleware(delay))
		for _, job := range jobs {
			if err := s.Register(job, "* * * * * *", log.job(job, id, jitter(time.Millisecond, 30*time.Millisecond))); err != nil {
				t.Fatal(err)
			}
		}
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	waitSwitchLoaded(t, scheds...)
	startAll(t, scheds...)
	// The first tick every instance surely fires: one after the one
	// during which they started.
	first := nextSecond(time.Now()).Add(time.Second)
	last := first.Add((ticks - 1) * time.Second)
	sleepUntil(last.Add(time.Second)) // the latest run (400ms + 30ms) is done
	var wg sync.WaitGroup
	for _, s := range scheds {
		wg.Go(func() { stopSched(t, s) })
	}
	wg.Wait()
	for _, job := range jobs {
		for tick := first; !tick.After(last); tick = tick.Add(time.Second) {
			if who := log.who(job, tick); len(who) != 1 {
				t.Errorf("job %s tick %s ran %d times %v, want once", job, fmtTick(tick), len(who), who)
			}
		}
	}
	for _, rec := range recs {
		for _, e := range rec.kind(EventSkipped) {
			if e.Skip != "tick_taken" && !e.Tick.After(last) && !e.Tick.Before(first) {
				t.Errorf("%s %s tick %s skipped: %s %v", e.Instance, e.Job, fmtTick(e.Tick), e.Skip, e.Err)
			}
		}
		for _, e := range rec.kind(EventFlag) {
			t.Errorf("kill switch on Cluster: %s %v", e.Instance, e.Err)
		}
	}
	t.Logf("real cron on Cluster: %d ticks x %d jobs, 5 instances, each run once", ticks, len(jobs))
}
