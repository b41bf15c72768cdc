package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/redis/go-redis/v9"
)

// Timing of a phase around its measurement window.
const (
	// warmup is the least time between Start and the window: at least one
	// tick fires before it (connections dialled, scripts loaded).
	warmup = 700 * time.Millisecond
	// windowOffset puts the window's edges half way between two ticks, so it
	// holds exactly `seconds` ticks of every job, each with all its runs.
	windowOffset = 500 * time.Millisecond
)

// regStats is the cost of registering the jobs of a phase.
type regStats struct {
	NsPerJob      float64 `json:"register_ns_per_job"`
	BytesPerJob   float64 `json:"heap_bytes_per_job"`
	ObjectsPerJob float64 `json:"heap_objects_per_job"`
}

// phaseResult is what one phase measured.
type phaseResult struct {
	Lib        string   `json:"lib"`
	Rep        int      `json:"rep"`
	Registered int      `json:"registered"`
	Firing     int      `json:"firing"`
	Busy       bool     `json:"busy"`
	Reg        regStats `json:"registration"`

	Seconds  int           `json:"seconds"`
	Runs     int           `json:"runs"`
	Expected int           `json:"expected_runs"`
	LatP50   time.Duration `json:"lateness_p50_ns"`
	LatP99   time.Duration `json:"lateness_p99_ns"`
	LatMax   time.Duration `json:"lateness_max_ns"`
	CPU      time.Duration `json:"cpu_ns"` // this process, user+sys, in the window
	RedisCPU time.Duration `json:"redis_server_cpu_ns,omitempty"`
	GCs      int           `json:"gc_cycles_in_window"` // collections that ended in the window
	GCCPU    time.Duration `json:"gc_cpu_ns"`           // the collector's CPU in the window (part of CPU)

	// A floor's lateness when its round trips are back: the PING floor's
	// lateness is taken as its job starts, the claim floor's here.
	DoneP50 time.Duration `json:"lateness_after_round_trips_p50_ns,omitempty"`
	DoneP99 time.Duration `json:"lateness_after_round_trips_p99_ns,omitempty"`

	TimedRuns  int            `json:"timed_runs,omitempty"` // guarded runs (cronguard) or PING sets (floor)
	RunMean    time.Duration  `json:"run_mean_ns,omitempty"`
	RunP50     time.Duration  `json:"run_p50_ns,omitempty"`
	RunP99     time.Duration  `json:"run_p99_ns,omitempty"`
	RoundTrips int64          `json:"round_trips,omitempty"`
	FloorErrs  int64          `json:"floor_errors,omitempty"` // PINGs failed, or claims failed or refused
	RedisCmds  []cmdStat      `json:"redis_commands,omitempty"`
	RedisUsec  int64          `json:"redis_usec,omitempty"`    // of the commands the phase sent (script calls inside them included once)
	Skips      map[string]int `json:"skipped_ticks,omitempty"` // by reason; with -skips only
	Leftover   int            `json:"leftover_goroutines,omitempty"`
}

// CPUPer1k is the CPU, in ms, that 1,000 runs cost.
func (r phaseResult) CPUPer1k() float64 {
	if r.Runs == 0 {
		return 0
	}
	return float64(r.CPU) / 1e6 / (float64(r.Runs) / 1000)
}

// GCCPUPer1k is the collector's CPU, in ms, per 1,000 runs (part of CPUPer1k).
func (r phaseResult) GCCPUPer1k() float64 {
	if r.Runs == 0 {
		return 0
	}
	return float64(r.GCCPU) / 1e6 / (float64(r.Runs) / 1000)
}

// RedisCPUPer1k is the redis-server's CPU, in ms, for 1,000 runs.
func (r phaseResult) RedisCPUPer1k() float64 {
	if r.Runs == 0 {
		return 0
	}
	return float64(r.RedisCPU) / 1e6 / (float64(r.Runs) / 1000)
}

// RedisUsPerRun is the redis-server's own time, in µs, executing the
// commands the phase sent, per run (INFO commandstats).
func (r phaseResult) RedisUsPerRun() float64 {
	if r.Runs == 0 {
		return 0
	}
	return float64(r.RedisUsec) / float64(r.Runs)
}

// RTPerRun is the round trips to Redis per run.
func (r phaseResult) RTPerRun() float64 {
	if r.Runs == 0 {
		return 0
	}
	return float64(r.RoundTrips) / float64(r.Runs)
}

// bench holds what every phase shares.
type bench struct {
	names   []string     // job names, made once so no phase counts their allocation
	redis   *redisServer // nil when no phase needs it
	pings   int          // round trips of the floor; 0 until measured
	skips   bool         // count cronguard's skipped ticks (-skips)
	phaseNo int
}

func (b *bench) jobNames(n int) []string {
	for i := len(b.names); i < n; i++ {
		b.names = append(b.names, fmt.Sprintf("job-%06d", i))
	}
	return b.names[:n]
}

// phase is one library on its own Redis client (if any) with its own probe.
type phase struct {
	b      *bench
	l      lib
	env    *phaseEnv
	rt     *rtCounter
	s      sched
	before int // goroutines before the phase
}

func (b *bench) newPhase(l lib, capacity int, timeRuns bool) (*phase, error) {
	b.phaseNo++
	p := &phase{b: b, l: l, before: runtime.NumGoroutine(), rt: &rtCounter{}}
	p.env = &phaseEnv{probe: newProbe(capacity), prefix: fmt.Sprintf("schedbench%d:", b.phaseNo), pings: b.pings, timeRuns: timeRuns, skips: b.skips}
	if l.redis {
		c := redis.NewClient(&redis.Options{Addr: b.redis.addr})
		c.AddHook(p.rt)
		if err := c.FlushAll(context.Background()).Err(); err != nil {
			_ = c.Close()
			return nil, fmt.Errorf("%s: FLUSHALL: %w", l.key, err)
		}
		p.env.client = c
	}
	return p, nil
}

// register makes the scheduler and registers n jobs, the first firing of
// them every second and the rest on the idle spec, and measures what that
// costs: time per job, and live heap per job after a full collection (the
// scheduler itself is counted in, spread over n).
func (p *phase) register(n, firing int) (regStats, error) {
	names := p.b.jobNames(n)
	h0 := liveHeap()
	s, err := p.l.build(p.env)
	if err != nil {
		return regStats{}, err
	}
	p.s = s
	t0 := time.Now()
	for i, name := range names {
		spec := specEverySecond
		if i >= firing {
			spec = specIdle
		}
		if err := s.add(name, spec); err != nil {
			return regStats{}, fmt.Errorf("%s: register %s: %w", p.l.key, name, err)
		}
	}
	d := time.Since(t0)
	h1 := liveHeap()
	runtime.KeepAlive(s)
	return regStats{
		NsPerJob:      float64(d.Nanoseconds()) / float64(n),
		BytesPerJob:   (float64(h1.bytes) - float64(h0.bytes)) / float64(n),
		ObjectsPerJob: (float64(h1.objects) - float64(h0.objects)) / float64(n),
	}, nil
}

// close stops the scheduler and the client and reports the goroutines left
// over by the library (a leak would skew the next phase).
func (p *phase) close() (leftover int, err error) {
	if p.s != nil {
		err = p.s.stop()
	}
	if p.env.client != nil {
		_ = p.env.client.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > p.before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	runtime.GC()
	return max(runtime.NumGoroutine()-p.before, 0), err
}

// measureRegistration registers n jobs (none firing) and returns the cost.
func (b *bench) measureRegistration(l lib, n int) (regStats, error) {
	p, err := b.newPhase(l, 0, false)
	if err != nil {
		return regStats{}, err
	}
	reg, err := p.register(n, 0)
	if _, cerr := p.close(); err == nil {
		err = cerr
	}
	return reg, err
}

// runPhase registers `registered` jobs, `firing` of them every second, runs
// them for `seconds` whole ticks and measures lateness, CPU and, on Redis,
// round trips and run durations.
func (b *bench) runPhase(l lib, rep, registered, firing, seconds int, busy bool) (phaseResult, error) {
	capacity := firing * (seconds + 2)
	p, err := b.newPhase(l, capacity, l.redis && !l.floor)
	if err != nil {
		return phaseResult{}, err
	}
	res := phaseResult{Lib: l.key, Rep: rep, Registered: registered, Firing: firing, Busy: busy, Seconds: seconds, Expected: firing * seconds}
	if res.Reg, err = p.register(registered, firing); err != nil {
		_, _ = p.close()
		return res, err
	}
	stopSpin := func() {}
	if busy {
		stopSpin = spin(2)
	}
	start := windowStart()
	p.env.probe.window(start, start.Add(time.Duration(seconds)*time.Second))
	p.s.start()
	merr := p.measure(&res, start, seconds)
	p.env.probe.drain(res.Expected)
	stopSpin()
	res.Leftover, err = p.close()
	p.collect(&res)
	return res, errors.Join(merr, err)
}

// windowStart is the start of the measurement window: the first half
// second at least warmup from now.
func windowStart() time.Time {
	t := time.Now().Add(warmup)
	start := t.Truncate(time.Second).Add(windowOffset)
	if start.Before(t) {
		start = start.Add(time.Second)
	}
	return start
}

// measure sleeps to the window's start, then takes the CPU, round trips
// and, on Redis, the server's command statistics spent in its `seconds`
// seconds. The probe records the runs of the ticks in the window whenever
// they happen; close waits for the last of them. The window's edges fall
// half way between ticks, where no run is under way.
func (p *phase) measure(res *phaseResult, start time.Time, seconds int) error {
	time.Sleep(time.Until(start))
	if p.l.redis {
		if err := p.b.redis.resetStats(); err != nil {
			return fmt.Errorf("%s: CONFIG RESETSTAT: %w", p.l.key, err)
		}
	}
	cpu0, rcpu0, gc0 := cpuTime(), p.redisCPU(), readGC()
	p.rt.on.Store(true)
	time.Sleep(time.Until(start.Add(time.Duration(seconds) * time.Second)))
	p.rt.on.Store(false)
	res.CPU, res.RedisCPU = cpuTime()-cpu0, p.redisCPU()-rcpu0
	gc := readGC().sub(gc0)
	res.GCs, res.GCCPU = int(gc.cycles), gc.cpu
	if !p.l.redis {
		return nil
	}
	stats, err := p.b.redis.commandStats()
	if err != nil {
		return fmt.Errorf("%s: INFO commandstats: %w", p.l.key, err)
	}
	res.RedisUsec = markSent(stats, &p.rt.sent)
	res.RedisCmds = stats
	return nil
}

func (p *phase) redisCPU() time.Duration {
	if !p.l.redis {
		return 0
	}
	return p.b.redis.cpu()
}

// collect fills res from the probe; the scheduler has stopped.
func (p *phase) collect(res *phaseResult) {
	pr := p.env.probe
	lat := pr.lat.samples()
	res.Runs = len(lat)
	res.LatP50, res.LatP99, res.LatMax = quantile(lat, 0.50), quantile(lat, 0.99), quantile(lat, 1)
	if runs := pr.run.samples(); len(runs) > 0 {
		res.TimedRuns = len(runs)
		res.RunMean, res.RunP50, res.RunP99 = mean(runs), quantile(runs, 0.50), quantile(runs, 0.99)
	}
	if done := pr.done.samples(); len(done) > 0 {
		res.DoneP50, res.DoneP99 = quantile(done, 0.50), quantile(done, 0.99)
	}
	res.RoundTrips = p.rt.n.Load()
	res.FloorErrs = pr.errs.Load()
	res.Skips = pr.skips
}
