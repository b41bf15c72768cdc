package cronguard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
)

// TestRedisKillSwitchFlipStopsEveryInstance is the kill switch's promise:
// three instances on one Redis (WithRedis: Redis kill switch and locker,
// each instance with its own client) each run a Batch of 100 batches of
// 10ms; SetEnabled(false) on one of them stops every run before its next
// batch. Over 50 flips, from a different instance each time, it measures
//
//   - propagation: from SetEnabled's call to each instance's switch
//     answering off, and
//   - flip-to-stop: from SetEnabled's call to each run's end (at most the
//     rest of the batch in flight, then the kill switch check before the
//     next batch),
//
// and logs p50/p99/max; flip-to-stop p99 must be under 100ms. Run with -v
// to see the figures:
//
//	go test -race -count=1 -v -run TestRedisKillSwitchFlipStopsEveryInstance .
func TestRedisKillSwitchFlipStopsEveryInstance(t *testing.T) {
	srv := redistest.Start(t)
	const (
		instances = 3
		flips     = 50
		batch     = 10 * time.Millisecond
	)
	type instance struct {
		s       *Scheduler
		job     string
		fetches atomic.Int64
	}
	var ins [instances]*instance
	for i := range ins {
		s, _ := newTest(t, WithRedis(srv.Client(t)), WithInstanceID(fmt.Sprintf("i%d", i)))
		in := &instance{s: s, job: fmt.Sprintf("emails-%d", i)}
		job := Batch[int]{
			Fetch: func(_ context.Context, p Page) ([]int, error) {
				in.fetches.Add(1)
				return []int{p.Number}, nil
			},
			Process: func(ctx context.Context, _ int) error {
				select { // one item, one batch: 10ms of work
				case <-time.After(batch):
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			},
			Key:        func(n int) string { return itoa(n) },
			Size:       1,
			MaxBatches: 100,
		}
		// Distinct jobs, one flag: each instance has a run going when the
		// flag flips, whatever the locker lets through.
		if err := s.Register(in.job, "@hourly", job, Flag("emails")); err != nil {
			t.Fatal(err)
		}
		ins[i] = in
	}
	allAre := func(on bool) func() bool {
		return func() bool {
			for _, in := range ins {
				if !ksIs(in.s.cfg.killSwitch, "emails", on)() {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 5*time.Second, "switches loaded", allAre(true))

	var propagation, stop []time.Duration
	ctx := WithActor(context.Background(), "latency-test")
	for f := range flips {
		flipper := ins[f%instances]
		if err := flipper.s.SetEnabled(ctx, flipper.job, true, "next round"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "on everywhere", allAre(true))

		// One run per instance, each some batches in.
		tick := t0.Add(time.Duration(f) * time.Hour)
		reports := make([]chan Report, instances)
		for i, in := range ins {
			in.fetches.Store(0)
			reports[i] = make(chan Report, 1)
			go func() {
				e, _ := in.s.lookup(in.job)
				reports[i] <- in.s.execute(in.s.base, e, TriggerSchedule, tick, nil)
			}()
		}
		waitFor(t, 5*time.Second, "runs going", func() bool {
			for _, in := range ins {
				if in.fetches.Load() < 2 {
					return false
				}
			}
			return true
		})
		time.Sleep(rand.N(batch)) // flip anywhere within a batch

		// Watch each switch for the flip, as closely as a loop can.
		seen := make([]time.Time, instances)
		var wg sync.WaitGroup
		for i, in := range ins {
			wg.Go(func() {
				deadline := time.Now().Add(5 * time.Second)
				for !ksIs(in.s.cfg.killSwitch, "emails", false)() && time.Now().Before(deadline) {
					time.Sleep(50 * time.Microsecond)
				}
				seen[i] = time.Now()
			})
		}
		var atFlip [instances]int64
		for i, in := range ins {
			atFlip[i] = in.fetches.Load()
		}
		flipAt := time.Now()
		if err := flipper.s.SetEnabled(ctx, flipper.job, false, "stop it"); err != nil {
			t.Fatal(err)
		}
		for i, in := range ins {
			rep := recv(t, reports[i])
			stopped := time.Since(flipAt)
			if rep.Stop != StopKilled {
				t.Fatalf("flip %d, instance %d: report = %v; want stopped by the kill switch", f, i, rep)
			}
			// Before its next batch: at most the batch that was being
			// fetched or processed when the flip happened.
			if n := in.fetches.Load(); n > atFlip[i]+1 {
				t.Fatalf("flip %d, instance %d: %d batches fetched after the flip, want at most 1", f, i, n-atFlip[i])
			}
			stop = append(stop, stopped)
		}
		wg.Wait()
		for i := range ins {
			propagation = append(propagation, seen[i].Sub(flipAt))
		}
	}

	p := ksPercentile
	t.Logf("%d flips x %d instances, batches of %s:", flips, instances, batch)
	t.Logf("  propagation  (SetEnabled -> every switch off): p50 %s  p99 %s  max %s",
		p(propagation, .50), p(propagation, .99), p(propagation, 1))
	t.Logf("  flip-to-stop (SetEnabled -> every run ended):  p50 %s  p99 %s  max %s",
		p(stop, .50), p(stop, .99), p(stop, 1))
	if p99 := p(stop, .99); p99 >= 100*time.Millisecond {
		t.Errorf("flip-to-stop p99 = %s, want under 100ms", p99)
	}
}

// ksPercentile returns the q quantile of ds (nearest rank).
func ksPercentile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

// TestRedisKillSwitchHardKillLatency measures the pushed hard kill: three
// instances on one Redis (WithRedis), each with a HardKill run in flight
// that only a cancellation ends; SetEnabled(false) on one of them, a
// different one each of 50 flips. It logs p50/p99/max of the time from
// SetEnabled returning to each run's context being canceled (0 when the
// cancellation came first), and from SetEnabled's call. The kill poll is
// set to 1s so that the figure is the push alone (flip message -> HMGET ->
// cancel); the goal is 10ms p99, and p99 must be under 100ms:
//
//	go test -race -count=1 -v -run TestRedisKillSwitchHardKillLatency .
func TestRedisKillSwitchHardKillLatency(t *testing.T) {
	srv := redistest.Start(t)
	const (
		instances = 3
		flips     = 50
		poll      = time.Second
	)
	type instance struct {
		s        *Scheduler
		job      string
		started  chan struct{}
		canceled chan time.Time
	}
	var ins [instances]*instance
	for i := range ins {
		s, _ := newTest(t, WithRedis(srv.Client(t)), WithInstanceID(fmt.Sprintf("i%d", i)), WithKillPoll(poll))
		in := &instance{s: s, job: fmt.Sprintf("purge-%d", i),
			started: make(chan struct{}, 1), canceled: make(chan time.Time, 1)}
		job := JobFunc(func(ctx context.Context) error {
			in.started <- struct{}{}
			<-ctx.Done() // one long step: only a hard kill ends it
			in.canceled <- time.Now()
			return context.Cause(ctx)
		})
		if err := s.Register(in.job, "@hourly", job, Flag("purge"), HardKill()); err != nil {
			t.Fatal(err)
		}
		ins[i] = in
	}
	allAre := func(on bool) func() bool {
		return func() bool {
			for _, in := range ins {
				if !ksIs(in.s.cfg.killSwitch, "purge", on)() {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 5*time.Second, "switches loaded", allAre(true))

	var fromReturn, fromCall []time.Duration
	ctx := WithActor(context.Background(), "latency-test")
	for f := range flips {
		flipper := ins[f%instances]
		if err := flipper.s.SetEnabled(ctx, flipper.job, true, "next round"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "on everywhere", allAre(true))
		tick := t0.Add(time.Duration(f) * time.Hour)
		reports := make([]<-chan Report, instances)
		for i, in := range ins {
			e, _ := in.s.lookup(in.job)
			reports[i] = goAsync(func() Report { return in.s.execute(in.s.base, e, TriggerSchedule, tick, nil) })
		}
		for _, in := range ins {
			recv(t, in.started)
		}
		time.Sleep(rand.N(5 * time.Millisecond))

		called := time.Now()
		if err := flipper.s.SetEnabled(ctx, flipper.job, false, "stop it"); err != nil {
			t.Fatal(err)
		}
		returned := time.Now()
		for i, in := range ins {
			rep := recv(t, reports[i])
			at := recv(t, in.canceled)
			if rep.Stop != StopKilled || !errors.Is(rep.Err, ErrKilled) {
				t.Fatalf("flip %d, instance %d: report = %v; want a hard kill", f, i, rep)
			}
			fromReturn = append(fromReturn, max(0, at.Sub(returned)))
			fromCall = append(fromCall, at.Sub(called))
		}
	}
	p := ksPercentile
	t.Logf("%d flips x %d instances, HardKill runs, kill poll %s (push only):", flips, instances, poll)
	t.Logf("  SetEnabled returned -> every run canceled: p50 %s  p99 %s  max %s",
		p(fromReturn, .50), p(fromReturn, .99), p(fromReturn, 1))
	t.Logf("  SetEnabled called   -> every run canceled: p50 %s  p99 %s  max %s",
		p(fromCall, .50), p(fromCall, .99), p(fromCall, 1))
	if p99 := p(fromReturn, .99); p99 >= 100*time.Millisecond {
		t.Errorf("hard kill p99 = %s, want under 100ms (goal 10ms)", p99)
	}
}
