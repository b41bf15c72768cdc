package cronguard

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// BenchmarkRedisGuardedRunVsPing measures what the guards cost on a real
// Redis against the floor of the same number of PINGs on the same client,
// interleaved in one run so both see the same machine:
//
//	winner/locker: Claim with the lock + Release (2 round trips) vs 2 PINGs
//	winner/chain:  a scheduled tick of a no-op job through the whole guard
//	               chain (kill switch, claim, overlap, lock and watchdog,
//	               release) vs 2 PINGs
//	loser:         a Claim that finds the tick taken (1 round trip) vs 1 PING
//
// x-ping is the ratio; run it with
//
//	go test -run '^$' -bench RedisGuardedRunVsPing -benchtime 3s .
func BenchmarkRedisGuardedRunVsPing(b *testing.B) {
	srv := redistest.Start(b)
	c := srv.Client(b)
	ctx := context.Background()
	l, err := NewRedisLocker(c)
	if err != nil {
		b.Fatal(err)
	}
	s := quietScheduler(b, WithLocker(l))
	if err := s.Register("noop", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		b.Fatal(err)
	}
	e, _ := s.lookup("noop")
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	next := 0
	tick := func() time.Time { next++; return base.Add(time.Duration(next) * time.Second) }
	// Load the scripts once, as any running service has.
	if rep := s.execute(s.base, e, TriggerSchedule, tick(), nil); rep.Outcome() != "done" {
		b.Fatal(rep)
	}

	b.Run("winner/locker", func(b *testing.B) {
		benchVsPings(b, c, "guarded", 2, func() error {
			c, err := l.Claim(ctx, "bench", tick(), 30*time.Second, "bench")
			if err != nil || !c.Won || c.Lease == nil {
				return fmt.Errorf("claim: %+v, %w", c, err)
			}
			return c.Lease.Release(ctx)
		})
	})
	b.Run("winner/chain", func(b *testing.B) {
		benchVsPings(b, c, "guarded", 2, func() error {
			rep := s.execute(s.base, e, TriggerSchedule, tick(), nil)
			if rep.Outcome() != "done" {
				return rep.Err
			}
			return nil
		})
	})
	b.Run("loser", func(b *testing.B) {
		taken := tick()
		if _, err := l.Claim(ctx, "bench", taken, 0, "other"); err != nil {
			b.Fatal(err)
		}
		benchVsPings(b, c, "guarded", 1, func() error {
			_, err := l.Claim(ctx, "bench", taken, time.Minute, "bench")
			return err
		})
	})
}

// benchVsPings times op against pings PINGs on c, each loop of b, and
// reports both per op (<name>-ns/op, pings-ns/op) and their ratio,
// x-ping: the cost of op in round trips' worth.
func benchVsPings(b *testing.B, c redis.UniversalClient, name string, pings int, op func() error) {
	b.Helper()
	ctx := context.Background()
	var g, p time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		for range pings {
			if err := c.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
		g, p = g+t1.Sub(t0), p+time.Since(t1)
	}
	n := float64(b.N)
	b.ReportMetric(float64(g.Nanoseconds())/n, name+"-ns/op")
	b.ReportMetric(float64(p.Nanoseconds())/n, "pings-ns/op")
	b.ReportMetric(float64(g)/float64(p), "x-ping")
}

// BenchmarkRedisClaimServerTime measures what the scripts cost Redis's one
// thread: each loop sends 1,000 winning claims (with the lock and a
// fencing token, on marks and fences that exist, as in steady state) in
// one pipeline, then their 1,000 releases, then 1,000 Acquires and their
// releases, and reads usec_per_call of evalsha from INFO commandstats
// after CONFIG RESETSTAT. Metrics: server-µs/claim, server-µs/release,
// server-µs/acquire. The client's time (ns/op) is not the point here.
//
//	go test -run '^$' -bench RedisClaimServerTime -benchtime 20x .
func BenchmarkRedisClaimServerTime(b *testing.B) {
	srv := redistest.Start(b)
	c := srv.Client(b)
	ctx := context.Background()
	rl, err := NewRedisLocker(c)
	if err != nil {
		b.Fatal(err)
	}
	l := rl.(*redisLocker)
	const jobs = 1000
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	round := 0
	var claimUS, releaseUS, acquireUS float64
	run := func(b *testing.B) {
		round++
		tick := base.Add(time.Duration(round) * time.Second)
		values := make([]string, jobs)
		claimUS += serverTime(b, c, jobs, func(p redis.Pipeliner, i int) *redis.Cmd {
			job := fmt.Sprint("job-", i)
			values[i] = l.newValue()
			return claimScript.EvalSha(ctx, p, l.claimKeys(job), l.claimArgs(job, tick, 30*time.Second, "bench", values[i])...)
		})
		release := func(p redis.Pipeliner, i int) *redis.Cmd {
			return releaseScript.EvalSha(ctx, p, []string{l.lockKey(fmt.Sprint("job-", i))}, values[i])
		}
		releaseUS += serverTime(b, c, jobs, release)
		acquireUS += serverTime(b, c, jobs, func(p redis.Pipeliner, i int) *redis.Cmd {
			job := fmt.Sprint("job-", i)
			values[i] = l.newValue()
			return acquireScript.EvalSha(ctx, p, []string{l.lockKey(job), l.fenceKey(job)}, values[i], 30000)
		})
		serverTime(b, c, jobs, release)
	}
	for _, s := range []*redis.Script{claimScript, releaseScript, acquireScript} {
		if err := s.Load(ctx, c).Err(); err != nil {
			b.Fatal(err)
		}
	}
	run(b) // the marks and fences exist from here on, as in a running service
	claimUS, releaseUS, acquireUS = 0, 0, 0
	for b.Loop() {
		run(b)
	}
	n := float64(b.N)
	b.ReportMetric(claimUS/n, "server-µs/claim")
	b.ReportMetric(releaseUS/n, "server-µs/release")
	b.ReportMetric(acquireUS/n, "server-µs/acquire")
}

// serverTime sends n script calls made by call in one pipeline, after
// CONFIG RESETSTAT, checks that each one was answered "won" or 1, and
// returns evalsha's usec_per_call from INFO commandstats.
func serverTime(b *testing.B, c *redis.Client, n int, call func(p redis.Pipeliner, i int) *redis.Cmd) float64 {
	b.Helper()
	ctx := context.Background()
	if err := c.ConfigResetStat(ctx).Err(); err != nil {
		b.Fatal(err)
	}
	p := c.Pipeline()
	cmds := make([]*redis.Cmd, n)
	for i := range n {
		cmds[i] = call(p, i)
	}
	if _, err := p.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	for i, cmd := range cmds {
		v := cmd.Val()
		if r, ok := v.([]any); ok && len(r) > 0 && r[0] == "won" || v == int64(1) {
			continue
		}
		b.Fatalf("call %d: %v", i, v)
	}
	info := c.Info(ctx, "commandstats").Val()
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(line, "cmdstat_evalsha:")
		if !ok {
			continue
		}
		for f := range strings.SplitSeq(strings.TrimSpace(rest), ",") {
			if v, ok := strings.CutPrefix(f, "usec_per_call="); ok {
				us, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatal(err)
				}
				return us
			}
		}
	}
	b.Fatalf("no cmdstat_evalsha in %q", info)
	return 0
}
