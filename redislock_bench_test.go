package cronguard

import (
	"context"
	"fmt"
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
