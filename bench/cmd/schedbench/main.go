// Command schedbench measures what a scheduler library costs per job:
// robfig/cron v3, gocron v2 with a redsync locker, and cronguard on its
// memory and Redis backends, in one process, alternating, several reps, on
// one redis-server it starts itself. It prints one table with the ratios to
// robfig/cron, checks the goals of cronguard's issue 8, and with -out writes
// results.md, results.json and the scaling curve (scaling.png, scaling.svg).
//
// The scenario: `-jobs` jobs (default 1,000) on "* * * * * *" whose no-op
// body records how late after the second boundary it started, measured over
// `-seconds` whole ticks. The scaling curve registers 1k, 10k and 100k jobs
// of which `-jobs` fire every second and the rest are on a yearly spec.
//
// With the defaults it runs in about 4 minutes on a 2-core machine.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
)

// config is the command line.
type config struct {
	reps, seconds, jobs, heapJobs int
	scale                         []int
	scaleSeconds                  int
	busy, gocronBare, skips       bool
	traceBurst                    bool
	pings, batchItems             int
	out                           string
	only                          map[string]bool // lib keys of the comparison to run; nil: all
	cpuProfile                    string
	appHeapMB                     int
}

func parseFlags() (config, error) {
	var c config
	var scale, only string
	flag.IntVar(&c.reps, "reps", 3, "repetitions of the side-by-side comparison (phases alternate within each)")
	flag.IntVar(&c.seconds, "seconds", 6, "ticks measured per phase of the comparison")
	flag.IntVar(&c.jobs, "jobs", 1000, "jobs firing every second")
	flag.IntVar(&c.heapJobs, "heap-jobs", 10000, "jobs registered to measure heap and register time per job")
	flag.StringVar(&scale, "scale", "1000,10000,100000", "registered jobs of the scaling curve (comma-separated; empty: no curve)")
	flag.IntVar(&c.scaleSeconds, "scale-seconds", 6, "ticks measured per point of the scaling curve")
	flag.BoolVar(&c.busy, "busy", true, "also run the Redis phases with two goroutines spinning beside them")
	flag.BoolVar(&c.gocronBare, "gocron-bare", false, "also run gocron v2 without a locker")
	flag.BoolVar(&c.traceBurst, "trace-burst", true, "trace one extra tick of robfig/cron and cronguard on memory (outside the reps) and show how the burst's time splits between the cron loop and the runs")
	flag.IntVar(&c.pings, "pings", 0, "PINGs per run of the Redis floor (0: the round trips measured per cronguard run, rounded)")
	flag.BoolVar(&c.skips, "skips", false, "count cronguard's skipped ticks by reason (adds an observer, which costs a little)")
	flag.StringVar(&c.out, "out", "", "directory to write results.md, results.json, scaling.png and scaling.svg to")
	flag.StringVar(&only, "only", "", "comparison rows to run, by key (comma-separated: robfig, gocron, gocron-redsync, cronguard-memory, guard-floor, cronguard-redis, redis-floor, claim-floor; empty: all)")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.IntVar(&c.batchItems, "batch-items", 1_000_000, "items of the Batch per-item cost (0: not measured)")
	flag.IntVar(&c.appHeapMB, "app-heap", 0, "MB of live heap the process holds besides the schedulers, as a service's own data would (pointer-free, never touched): the collector then paces on it, not on how little a scheduler keeps (0: none)")
	flag.Parse()
	for _, k := range strings.Split(only, ",") {
		if k = strings.TrimSpace(k); k != "" {
			if c.only == nil {
				c.only = map[string]bool{}
			}
			c.only[k] = true
		}
	}
	for _, f := range strings.Split(scale, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("-scale: %q is not a positive number", f)
		}
		c.scale = append(c.scale, n)
	}
	if c.reps < 1 || c.seconds < 1 || c.jobs < 1 || c.heapJobs < 1 || c.scaleSeconds < 1 || c.pings < 0 || c.batchItems < 0 || c.appHeapMB < 0 {
		return c, fmt.Errorf("-reps, -seconds, -jobs, -heap-jobs and -scale-seconds must be positive, -pings, -batch-items and -app-heap not negative")
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "schedbench:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "schedbench:", err)
		os.Exit(1)
	}
}

func run(cfg config) error {
	// A service's own heap sets the garbage collector's pace (GOGC: a
	// cycle each time the heap has grown by its live size). Alone in this
	// process, a scheduler that keeps little is collected more often than
	// one that holds more, for the same garbage: -app-heap evens that out.
	appHeap := make([]byte, cfg.appHeapMB<<20)
	defer runtime.KeepAlive(appHeap)
	if cfg.cpuProfile != "" {
		stop, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	srv, err := startRedis()
	if err != nil {
		return err
	}
	defer srv.stop()
	stopOnSignal(srv)

	meta := newMeta(cfg)
	b := &bench{redis: srv, pings: cfg.pings, skips: cfg.skips}
	res := &results{Meta: meta}
	if err := b.compare(cfg, res); err != nil {
		return err
	}
	if err := b.scaling(cfg, res); err != nil {
		return err
	}
	if cfg.batchItems > 0 {
		if res.Batch, err = batchCost(cfg.batchItems, cfg.reps); err != nil {
			return err
		}
	}
	res.Meta.finish()
	res.Goals = evaluate(cfg, res)
	md := res.markdown(cfg)
	fmt.Print(md)
	if cfg.out == "" {
		return nil
	}
	return res.write(cfg.out, md)
}

// stopOnSignal stops the redis-server on Ctrl-C before exiting.
func stopOnSignal(srv *redisServer) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		srv.stop()
		os.Exit(130)
	}()
}

// rows of the comparison, in the order they run within a rep.
func comparisonRows(cfg config) []rowID {
	rows := []rowID{{libRobfig, false}}
	if cfg.gocronBare {
		rows = append(rows, rowID{libGocron, false})
	}
	rows = append(rows, rowID{libGocronRS, false}, rowID{libCGMemory, false}, rowID{libGuardBase, false}, rowID{libCGRedis, false}, rowID{libRedisBase, false}, rowID{libClaimBase, false})
	if cfg.busy {
		rows = append(rows, rowID{libCGRedis, true}, rowID{libRedisBase, true}, rowID{libClaimBase, true})
	}
	if cfg.only == nil {
		return rows
	}
	kept := rows[:0]
	for _, r := range rows {
		if cfg.only[r.l.key] {
			kept = append(kept, r)
		}
	}
	return kept
}

// startCPUProfile profiles the whole process until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	// 1 kHz, not pprof's 100 Hz: a phase spends only tens of milliseconds
	// of CPU. (StartCPUProfile then warns that the rate is set already.)
	runtime.SetCPUProfileRate(1000)
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

// rowID is one row of the table: a library, idle or beside the spinners.
type rowID struct {
	l    lib
	busy bool
}

func (r rowID) label() string {
	if r.busy {
		return r.l.label + ", 2 busy goroutines"
	}
	return r.l.label
}

// heapLibs are measured at -heap-jobs registered jobs.
var heapLibs = []lib{libRobfig, libGocronRS, libCGMemory, libCGRedis}

// compare runs the side-by-side comparison: every row once per rep, then
// the registration cost of every library.
func (b *bench) compare(cfg config, res *results) error {
	for rep := 1; rep <= cfg.reps; rep++ {
		for _, row := range comparisonRows(cfg) {
			if row.l.key == libRedisBase.key && b.pings == 0 {
				b.pings = measuredPings(res.Phases)
			}
			r, err := b.runPhase(row.l, rep, cfg.jobs, cfg.jobs, cfg.seconds, row.busy)
			if err != nil {
				return err
			}
			logPhase(r)
			res.Phases = append(res.Phases, r)
		}
		for _, l := range heapLibs {
			if cfg.only != nil && !cfg.only[l.key] {
				continue
			}
			reg, err := b.measureRegistration(l, cfg.heapJobs)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "rep %d %-18s register %d jobs: %.2f µs/job, %.0f B/job, %.1f objects/job\n",
				rep, l.key, cfg.heapJobs, reg.NsPerJob/1e3, reg.BytesPerJob, reg.ObjectsPerJob)
			res.Registrations = append(res.Registrations, registration{Lib: l.key, Rep: rep, Jobs: cfg.heapJobs, Reg: reg})
		}
	}
	res.Pings = b.pings
	if !cfg.traceBurst {
		return nil
	}
	for _, l := range []lib{libRobfig, libCGMemory} {
		if cfg.only != nil && !cfg.only[l.key] {
			continue
		}
		st, err := b.traceBurst(l, cfg.jobs)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "traced burst %-18s loop %.2f ms (%.2f µs a job), started p50 %.2f ms p99 %.2f ms, a run's goroutine mean %.2f µs p50 %.2f µs\n",
			l.key, st.DispatchMs, st.PerJobUs, st.StartP50Ms, st.StartP99Ms, st.RunMeanUs, st.RunP50Us)
		res.Bursts = append(res.Bursts, st)
	}
	return nil
}

// measuredPings is the round trips of one cronguard run on Redis, rounded:
// what the floor makes as PINGs.
func measuredPings(phases []phaseResult) int {
	for _, p := range phases {
		if p.Lib == libCGRedis.key && p.Runs > 0 {
			return max(int(p.RTPerRun()+0.5), 1)
		}
	}
	return 3 // claim, acquire, release: the Redis locker before issue 8
}

// scaling runs the curve: robfig and cronguard on memory at each size.
func (b *bench) scaling(cfg config, res *results) error {
	for _, n := range cfg.scale {
		for _, l := range []lib{libRobfig, libCGMemory} {
			r, err := b.runPhase(l, 1, n, min(cfg.jobs, n), cfg.scaleSeconds, false)
			if err != nil {
				return err
			}
			if r.Reg, err = b.steadyRegistration(l, n, cfg.heapJobs, r.Reg); err != nil {
				return err
			}
			logPhase(r)
			res.Scaling = append(res.Scaling, r)
		}
	}
	return nil
}

// steadyRegistration registers n jobs again until about `total` have been
// registered (at least 3 trials, at most 10), and returns the median of the
// trials and first: one registration of 1,000 jobs takes about a
// millisecond, too short to time once on a busy machine, and one of
// 100,000 moves with the garbage collector.
func (b *bench) steadyRegistration(l lib, n, total int, first regStats) (regStats, error) {
	trials := []regStats{first}
	for range min(max(total/n, 3), 10) - 1 {
		reg, err := b.measureRegistration(l, n)
		if err != nil {
			return first, err
		}
		trials = append(trials, reg)
	}
	med := func(f func(r regStats) float64) float64 {
		v := make([]float64, len(trials))
		for i, r := range trials {
			v[i] = f(r)
		}
		return median(v)
	}
	return regStats{
		NsPerJob:      med(func(r regStats) float64 { return r.NsPerJob }),
		BytesPerJob:   med(func(r regStats) float64 { return r.BytesPerJob }),
		ObjectsPerJob: med(func(r regStats) float64 { return r.ObjectsPerJob }),
	}, nil
}

func logPhase(r phaseResult) {
	busy := ""
	if r.Busy {
		busy = " busy"
	}
	fmt.Fprintf(os.Stderr, "rep %d %-18s%s %6d jobs: %d/%d runs, lateness p50 %s p99 %s, CPU %.1f ms/1k runs",
		r.Rep, r.Lib, busy, r.Registered, r.Runs, r.Expected, ms(r.LatP50), ms(r.LatP99), r.CPUPer1k())
	if r.TimedRuns > 0 {
		fmt.Fprintf(os.Stderr, ", run mean %s", ms(r.RunMean))
	}
	if r.DoneP99 > 0 {
		fmt.Fprintf(os.Stderr, ", lateness p99 when the round trips are back %s", ms(r.DoneP99))
	}
	if r.RoundTrips > 0 {
		fmt.Fprintf(os.Stderr, ", %.2f round trips/run", r.RTPerRun())
	}
	if r.RedisUsec > 0 {
		fmt.Fprintf(os.Stderr, ", redis-server %.2f µs/run", r.RedisUsPerRun())
	}
	if r.FloorErrs > 0 {
		fmt.Fprintf(os.Stderr, ", %d floor calls failed or refused", r.FloorErrs)
	}
	if len(r.Skips) > 0 {
		fmt.Fprintf(os.Stderr, ", skipped ticks %v", r.Skips)
	}
	if r.Leftover > 0 {
		fmt.Fprintf(os.Stderr, ", %d goroutines left over", r.Leftover)
	}
	fmt.Fprintln(os.Stderr)
}
