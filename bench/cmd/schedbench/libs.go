package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/go-co-op/gocron/v2"
	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
)

// The two specs of the scenario, both with a leading seconds field: the
// firing jobs run every second; the idle ones (scaling curve) are registered
// but do not fire during any measurement.
const (
	specEverySecond = "* * * * * *"
	specIdle        = "0 0 0 1 1 *" // midnight, January 1st
)

// lib is one row of the comparison: a library in one configuration.
type lib struct {
	key   string // short id, in results.json
	label string // row label
	redis bool   // needs the redis-server
	// floor marks the floors: robfig/cron jobs whose body makes the same
	// number of round trips as a guarded run, as PINGs (redis-floor), or
	// one minimal atomic claim (claim-floor), or does by hand the least a
	// guarded run on memory does (guard-floor, guardfloor.go).
	floor bool
	build func(env *phaseEnv) (sched, error)
}

// sched is the little the benchmark needs of a scheduler.
type sched interface {
	add(name, spec string) error
	start()
	stop() error
}

// phaseEnv is what a library's jobs report to and talk to in one phase.
type phaseEnv struct {
	probe    *probe
	client   *redis.Client // nil unless lib.redis
	prefix   string        // key prefix of this phase in Redis
	pings    int           // round trips of the floor's body
	timeRuns bool          // time every cronguard run with a middleware
	skips    bool          // count cronguard's skipped ticks with an observer
}

var (
	libRobfig    = lib{key: "robfig", label: "robfig/cron v3 (bare)", build: newRobfig}
	libGocron    = lib{key: "gocron", label: "gocron v2 (no locker)", build: newGocron}
	libGocronRS  = lib{key: "gocron-redsync", label: "gocron v2 + redsync locker", redis: true, build: newGocron}
	libCGMemory  = lib{key: "cronguard-memory", label: "cronguard, memory backends", build: newCronguard}
	libCGRedis   = lib{key: "cronguard-redis", label: "cronguard, WithRedis", redis: true, build: newCronguard}
	libRedisBase = lib{key: "redis-floor", label: "floor: robfig + N×PING", redis: true, floor: true, build: newRobfig}
	libClaimBase = lib{key: "claim-floor", label: "claim floor: robfig + 1 claim script", redis: true, floor: true, build: newClaimFloor}
	libGuardBase = lib{key: "guard-floor", label: "guard floor: robfig + the least a guarded run does, by hand (memory)", floor: true, build: newGuardFloor}
)

// tickOf is the tick a run belongs to: robfig/cron and gocron do not say
// (cronguard does, through ReportFrom, but its job reads the clock as the
// others' do, so that every row's body is the same), and the scenario's
// specs fire on whole seconds and every library starts a run well within
// its second, so truncation finds it.
func tickOf(now time.Time) time.Time { return now.Truncate(time.Second) }

// started records the lateness of a run whose job started now: what every
// row's job does, cronguard's too (the same body, the same stack it needs).
func (p *probe) started(now time.Time) {
	tick := tickOf(now)
	p.lat.add(tick, now.Sub(tick))
}

type robfigSched struct {
	c    *cron.Cron
	body func()
	// bodyOf, when set, makes each job's own body (the claim floor's job
	// claims its own key, the guard floor's keeps its own state); else
	// every job runs body.
	bodyOf func(name, spec string) func()
}

func newRobfig(env *phaseEnv) (sched, error) {
	p := env.probe
	body := func() { p.started(time.Now()) }
	if env.client != nil { // the floor
		c, n := env.client, env.pings
		body = func() {
			now := time.Now()
			p.started(now)
			ctx := context.Background()
			for range n {
				if err := c.Ping(ctx).Err(); err != nil {
					p.errs.Add(1)
				}
			}
			end, tick := time.Now(), tickOf(now)
			p.run.add(tick, end.Sub(now))
			p.done.add(tick, end.Sub(tick)) // as the claim floor takes its lateness
		}
	}
	return &robfigSched{c: cron.New(cron.WithSeconds()), body: body}, nil
}

func (r *robfigSched) add(name, spec string) error {
	body := r.body
	if r.bodyOf != nil {
		body = r.bodyOf(name, spec)
	}
	_, err := r.c.AddFunc(spec, body)
	return err
}
func (r *robfigSched) start()      { r.c.Start() }
func (r *robfigSched) stop() error { <-r.c.Stop().Done(); return nil }

type gocronSched struct {
	s    gocron.Scheduler
	body func()
}

func newGocron(env *phaseEnv) (sched, error) {
	var opts []gocron.SchedulerOption
	if env.client != nil {
		opts = append(opts, gocron.WithDistributedLocker(newRedsyncLocker(env.client)))
	}
	s, err := gocron.NewScheduler(opts...)
	if err != nil {
		return nil, err
	}
	p := env.probe
	return &gocronSched{s: s, body: func() { p.started(time.Now()) }}, nil
}

func (g *gocronSched) add(name, spec string) error {
	_, err := g.s.NewJob(gocron.CronJob(spec, true), gocron.NewTask(g.body), gocron.WithName(name))
	return err
}
func (g *gocronSched) start()      { g.s.Start() }
func (g *gocronSched) stop() error { return g.s.Shutdown() }

type cronguardSched struct {
	s   *cronguard.Scheduler
	job cronguard.Job
}

// newCronguard makes a quiet scheduler (discard logger, no observer: the
// setup whose cost issue 8 asks to be nothing), on Redis when env has a
// client.
func newCronguard(env *phaseEnv) (sched, error) {
	p := env.probe
	opts := []cronguard.Option{
		cronguard.WithLogger(slog.New(slog.DiscardHandler)),
		cronguard.WithInstanceID("schedbench"),
	}
	if env.client != nil {
		opts = append(opts, cronguard.WithRedis(env.client), cronguard.WithKeyPrefix(env.prefix))
	}
	if env.timeRuns {
		opts = append(opts, cronguard.WithMiddleware(func(next cronguard.Job) cronguard.Job {
			return cronguard.JobFunc(func(ctx context.Context) error {
				t0 := time.Now()
				err := next.Run(ctx)
				d := time.Since(t0)
				p.run.add(runTick(ctx), d)
				return err
			})
		}))
	}
	if env.skips {
		opts = append(opts, cronguard.WithObserver(func(ev cronguard.Event) {
			if ev.Kind == cronguard.EventSkipped {
				p.skipped(ev.Tick, string(ev.Skip))
			}
		}))
	}
	s, err := cronguard.New(opts...)
	if err != nil {
		return nil, err
	}
	job := cronguard.JobFunc(func(context.Context) error {
		p.started(time.Now()) // what every row's job does
		return nil
	})
	return &cronguardSched{s: s, job: job}, nil
}

// runTick is the tick the run of ctx is for, from its report.
func runTick(ctx context.Context) time.Time {
	r, _ := cronguard.ReportFrom(ctx, nil)
	return r.Tick
}

func (c *cronguardSched) add(name, spec string) error { return c.s.Register(name, spec, c.job) }
func (c *cronguardSched) start()                      { _ = c.s.Start() }
func (c *cronguardSched) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.s.Stop(ctx)
}
