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
	// Distinct jobs, one flag: each instance has a run going when the flag
	// flips, whatever the locker lets through.
	ins := ksFleet(t, srv, instances, "emails", nil, func(in *ksInstance) Job {
		return Batch[int]{
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
	})

	var propagation, stop []time.Duration
	ctx := WithActor(context.Background(), "latency-test")
	for f := range flips {
		// One run per instance, each some batches in.
		flipper, reports := ksNextRound(t, ctx, ins, f, "emails")
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
			if rep.Outcome() != "killed" {
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

	t.Logf("%d flips x %d instances, batches of %s:", flips, instances, batch)
	ksLogFigures(t, "propagation  (SetEnabled -> every switch off)", propagation)
	if p99 := ksLogFigures(t, "flip-to-stop (SetEnabled -> every run ended) ", stop); p99 >= 100*time.Millisecond {
		t.Errorf("flip-to-stop p99 = %s, want under 100ms", p99)
	}
}

// ksInstance is one instance of a latency test: its scheduler, its job
// and what the job reports.
type ksInstance struct {
	s        *Scheduler
	job      string
	fetches  atomic.Int64   // batches fetched
	started  chan struct{}  // a run started
	canceled chan time.Time // a run's context ended
}

// ksFleet starts n schedulers on srv (WithRedis; instances i0, i1, ...
// with opts), each with a job <flag>-<i> made by newJob and switched by
// flag, and waits until every switch has loaded the flag on.
func ksFleet(t *testing.T, srv *redistest.Server, n int, flag string, opts []Option, newJob func(*ksInstance) Job, jobOpts ...JobOption) []*ksInstance {
	t.Helper()
	ins := make([]*ksInstance, n)
	for i := range ins {
		s, _ := newTest(t, append([]Option{WithRedis(srv.Client(t)), WithInstanceID(fmt.Sprintf("i%d", i))}, opts...)...)
		in := &ksInstance{s: s, job: fmt.Sprintf("%s-%d", flag, i),
			started: make(chan struct{}, 1), canceled: make(chan time.Time, 1)}
		if err := s.Register(in.job, "@hourly", newJob(in), append([]JobOption{Flag(flag)}, jobOpts...)...); err != nil {
			t.Fatal(err)
		}
		ins[i] = in
	}
	waitFor(t, 5*time.Second, "switches loaded", func() bool { return ksAllOn(ins, flag) })
	return ins
}

// ksAllOn reports whether the kill switch of every instance answers on for
// flag, without error.
func ksAllOn(ins []*ksInstance, flag string) bool {
	for _, in := range ins {
		if !ksIs(in.s.cfg.killSwitch, flag, true)() {
			return false
		}
	}
	return true
}

// ksNextRound starts round f: it switches flag back on through one
// instance (a different one each round), waits until every instance sees
// it on, then starts a scheduled run of the round's tick on every instance.
// It returns the flipping instance and the runs' reports.
func ksNextRound(t *testing.T, ctx context.Context, ins []*ksInstance, f int, flag string) (*ksInstance, []<-chan Report) {
	t.Helper()
	flipper := ins[f%len(ins)]
	if err := flipper.s.SetEnabled(ctx, flipper.job, true, "next round"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "on everywhere", func() bool { return ksAllOn(ins, flag) })
	tick := t0.Add(time.Duration(f) * time.Hour)
	reports := make([]<-chan Report, len(ins))
	for i, in := range ins {
		in.fetches.Store(0)
		e, _ := in.s.lookup(in.job)
		reports[i] = goAsync(func() Report { return in.s.execute(in.s.base, e, TriggerSchedule, tick, nil) })
	}
	return flipper, reports
}

// ksLogFigures logs p50, p99 and max of ds under label and returns the p99.
func ksLogFigures(t *testing.T, label string, ds []time.Duration) time.Duration {
	t.Helper()
	p := ksPercentile
	t.Logf("  %s: p50 %s  p99 %s  max %s", label, p(ds, .50), p(ds, .99), p(ds, 1))
	return p(ds, .99)
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
	ins := ksFleet(t, srv, instances, "purge", []Option{WithKillPoll(poll)}, func(in *ksInstance) Job {
		return JobFunc(func(ctx context.Context) error {
			in.started <- struct{}{}
			<-ctx.Done() // one long step: only a hard kill ends it
			in.canceled <- time.Now()
			return context.Cause(ctx)
		})
	}, HardKill())

	var fromReturn, fromCall []time.Duration
	ctx := WithActor(context.Background(), "latency-test")
	for f := range flips {
		flipper, reports := ksNextRound(t, ctx, ins, f, "purge")
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
			if rep.Outcome() != "killed" || !errors.Is(rep.Err, ErrKilled) {
				t.Fatalf("flip %d, instance %d: report = %v; want a hard kill", f, i, rep)
			}
			fromReturn = append(fromReturn, max(0, at.Sub(returned)))
			fromCall = append(fromCall, at.Sub(called))
		}
	}
	t.Logf("%d flips x %d instances, HardKill runs, kill poll %s (push only):", flips, instances, poll)
	p99 := ksLogFigures(t, "SetEnabled returned -> every run canceled", fromReturn)
	ksLogFigures(t, "SetEnabled called   -> every run canceled", fromCall)
	if p99 >= 100*time.Millisecond {
		t.Errorf("hard kill p99 = %s, want under 100ms (goal 10ms)", p99)
	}
}
