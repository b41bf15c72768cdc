package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// results is everything one invocation measured; results.json holds it.
type results struct {
	Meta          meta           `json:"meta"`
	Pings         int            `json:"floor_pings"`
	Phases        []phaseResult  `json:"comparison"`
	Registrations []registration `json:"registrations"`
	Scaling       []phaseResult  `json:"scaling"`
	Batch         []batchResult  `json:"batch"`
	Bursts        []burstStats   `json:"traced_bursts,omitempty"`
	Goals         []goal         `json:"goals"`
}

// registration is the cost of registering -heap-jobs jobs of one library.
type registration struct {
	Lib  string   `json:"lib"`
	Rep  int      `json:"rep"`
	Jobs int      `json:"jobs"`
	Reg  regStats `json:"registration"`
}

// perRep applies f to the phase of (key, busy) of every rep, with robfig's
// phase of the same rep, and keeps the values f accepts.
func (r *results) perRep(key string, busy bool, f func(p, robfig phaseResult) (float64, bool)) []float64 {
	var out []float64
	for _, p := range r.Phases {
		if p.Lib != key || p.Busy != busy {
			continue
		}
		if v, ok := f(p, r.find(libRobfig.key, false, p.Rep)); ok {
			out = append(out, v)
		}
	}
	return out
}

func (r *results) find(key string, busy bool, rep int) phaseResult {
	for _, p := range r.Phases {
		if p.Lib == key && p.Busy == busy && p.Rep == rep {
			return p
		}
	}
	return phaseResult{}
}

// regs applies f to the registrations of key, with robfig's of the same rep.
func (r *results) regs(key string, f func(reg, robfig regStats) float64) []float64 {
	var out []float64
	for _, g := range r.Registrations {
		if g.Lib != key {
			continue
		}
		for _, rb := range r.Registrations {
			if rb.Lib == libRobfig.key && rb.Rep == g.Rep {
				out = append(out, f(g.Reg, rb.Reg))
			}
		}
	}
	return out
}

// floorRatio is a cronguard run's mean over the PING floor's mean, same
// rep and same busy-ness.
func (r *results) floorRatio(busy bool) []float64 { return r.pingFloorRatio(libCGRedis.key, busy) }

// pingFloorRatio is the run mean of key's row over the PING floor's, same
// rep and same busy-ness.
func (r *results) pingFloorRatio(key string, busy bool) []float64 {
	return r.perRep(key, busy, func(p, _ phaseResult) (float64, bool) {
		f := r.find(libRedisBase.key, busy, p.Rep)
		return ratio(float64(p.RunMean), float64(f.RunMean))
	})
}

// list is every value of v, in rep order.
func list(v []float64, format string) string {
	if len(v) == 0 {
		return "—"
	}
	out := make([]string, len(v))
	for i, x := range v {
		out[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(out, ", ")
}

func ratio(a, b float64) (float64, bool) {
	if b == 0 {
		return 0, false
	}
	return a / b, true
}

func msf(d time.Duration) float64 { return float64(d) / 1e6 }
func ms(d time.Duration) string   { return fmt.Sprintf("%.2f ms", msf(d)) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// spread is "min–max" of v.
func spread(v []float64, format string) string {
	if len(v) == 0 {
		return "—"
	}
	lo, hi := slices.Min(v), slices.Max(v)
	if len(v) == 1 || fmt.Sprintf(format, lo) == fmt.Sprintf(format, hi) {
		return fmt.Sprintf(format, lo)
	}
	return fmt.Sprintf(format+"–"+format, lo, hi)
}

// cell is "median (×ratio)", or the median alone when ratios is nil.
func cell(v []float64, format string, ratios []float64) string {
	if len(v) == 0 {
		return "—"
	}
	s := fmt.Sprintf(format, median(v))
	if ratios != nil {
		s += fmt.Sprintf(" (%.2f×)", median(ratios))
	}
	return s
}

func field(f func(p phaseResult) float64) func(p, _ phaseResult) (float64, bool) {
	return func(p, _ phaseResult) (float64, bool) { return f(p), true }
}

func vsRobfig(f func(p phaseResult) float64) func(p, rb phaseResult) (float64, bool) {
	return func(p, rb phaseResult) (float64, bool) { return ratio(f(p), f(rb)) }
}

var (
	latP50  = func(p phaseResult) float64 { return msf(p.LatP50) }
	latP99  = func(p phaseResult) float64 { return msf(p.LatP99) }
	cpu1k   = func(p phaseResult) float64 { return p.CPUPer1k() }
	gcs     = func(p phaseResult) float64 { return float64(p.GCs) }
	gcCPU1k = func(p phaseResult) float64 { return p.GCCPUPer1k() }
	rcpu1k  = func(p phaseResult) float64 { return p.RedisCPUPer1k() }
	rtRun   = func(p phaseResult) float64 { return p.RTPerRun() }
	rusRun  = func(p phaseResult) float64 { return p.RedisUsPerRun() }
	runMean = func(p phaseResult) float64 { return msf(p.RunMean) }
	runs    = func(p phaseResult) float64 { return float64(p.Runs) }
	regUS   = func(g, _ regStats) float64 { return g.NsPerJob / 1e3 }
	regX    = func(g, rb regStats) float64 { v, _ := ratio(g.NsPerJob, rb.NsPerJob); return v }
	heapB   = func(g, _ regStats) float64 { return g.BytesPerJob }
	heapObj = func(g, _ regStats) float64 { return g.ObjectsPerJob }
)

// mainTable is the side-by-side comparison, medians over the reps.
func (r *results) mainTable(cfg config) string {
	var b strings.Builder
	b.WriteString("| | runs | lateness p50 | lateness p99 (×robfig) | CPU per 1k runs (×robfig) | redis-server CPU per 1k runs | redis-server µs per run | round trips per run | run, mean (×floor) | heap per job | objects per job | register one job (×robfig) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range comparisonRows(cfg) {
		key, busy := row.l.key, row.busy
		cols := []string{row.label(), fmt.Sprintf("%.0f / %d", median(r.perRep(key, busy, field(runs))), cfg.jobs*cfg.seconds)}
		cols = append(cols, cell(r.perRep(key, busy, field(latP50)), "%.2f ms", nil))
		cols = append(cols, cell(r.perRep(key, busy, field(latP99)), "%.2f ms", r.perRep(key, busy, vsRobfig(latP99))))
		if busy {
			cols = append(cols, "n/a (spinners)")
		} else {
			cols = append(cols, cell(r.perRep(key, busy, field(cpu1k)), "%.0f ms", r.perRep(key, busy, vsRobfig(cpu1k))))
		}
		cols = append(cols, r.redisCols(row)...)
		cols = append(cols, r.regCols(row)...)
		b.WriteString("| " + strings.Join(cols, " | ") + " |\n")
	}
	return b.String()
}

func (r *results) redisCols(row rowID) []string {
	key, busy := row.l.key, row.busy
	if !row.l.redis {
		return []string{"—", "—", "—", "—"}
	}
	cols := []string{cell(r.perRep(key, busy, field(rcpu1k)), "%.0f ms", nil), cell(r.perRep(key, busy, field(rusRun)), "%.2f µs", nil),
		cell(r.perRep(key, busy, field(rtRun)), "%.2f", nil)}
	switch key {
	case libCGRedis.key, libClaimBase.key:
		cols = append(cols, cell(r.perRep(key, busy, field(runMean)), "%.2f ms", r.pingFloorRatio(key, busy)))
	case libRedisBase.key:
		cols = append(cols, cell(r.perRep(key, busy, field(runMean)), "%.2f ms", nil))
	default:
		cols = append(cols, "—")
	}
	return cols
}

func (r *results) regCols(row rowID) []string {
	if row.busy || row.l.floor {
		return []string{"—", "—", "—"}
	}
	key := row.l.key
	if key == libGocron.key {
		key = libGocronRS.key // the locker is per scheduler: one registration cost
	}
	return []string{
		cell(r.regs(key, heapB), "%.0f B", nil),
		cell(r.regs(key, heapObj), "%.1f", nil),
		cell(r.regs(key, regUS), "%.2f µs", r.regs(key, regX)),
	}
}

// spreadTable shows the range over the reps of the main figures.
func (r *results) spreadTable(cfg config) string {
	var b strings.Builder
	b.WriteString("| | runs | lateness p99 | ×robfig | CPU per 1k runs | ×robfig | collections in the window, per rep | their CPU per 1k runs | redis-server µs per run | run, mean | ×floor | heap per job | register one job |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range comparisonRows(cfg) {
		key, busy := row.l.key, row.busy
		cols := []string{row.label(), spread(r.perRep(key, busy, field(runs)), "%.0f"),
			spread(r.perRep(key, busy, field(latP99)), "%.1f ms"), spread(r.perRep(key, busy, vsRobfig(latP99)), "%.2f"),
		}
		if busy {
			cols = append(cols, "—", "—")
		} else {
			cols = append(cols, spread(r.perRep(key, busy, field(cpu1k)), "%.0f ms"), spread(r.perRep(key, busy, vsRobfig(cpu1k)), "%.2f"))
		}
		cols = append(cols, list(r.perRep(key, busy, field(gcs)), "%.0f"), spread(r.perRep(key, busy, field(gcCPU1k)), "%.1f ms"))
		rus, mean, x := "—", "—", "—"
		if row.l.redis {
			rus = spread(r.perRep(key, busy, field(rusRun)), "%.2f µs")
		}
		if row.l.redis && key != libGocronRS.key {
			mean = spread(r.perRep(key, busy, field(runMean)), "%.2f ms")
		}
		if key == libCGRedis.key || key == libClaimBase.key {
			x = spread(r.pingFloorRatio(key, busy), "%.2f")
		}
		heap, reg := "—", "—"
		if !busy && !row.l.floor {
			heap, reg = spread(r.regs(key, heapB), "%.0f B"), spread(r.regs(key, regUS), "%.2f µs")
		}
		b.WriteString("| " + strings.Join(append(cols, rus, mean, x, heap, reg), " | ") + " |\n")
	}
	return b.String()
}

// scalingTable is the curve as numbers; cronguard's cells carry the ratio
// to its value at the smallest size.
func (r *results) scalingTable() string {
	var b strings.Builder
	b.WriteString("| registered jobs | library | register one job | heap per job | objects per job | lateness p99 | CPU per 1k runs |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, p := range r.Scaling {
		first := r.scalingFirst(p.Lib)
		x := func(v, v0 float64, format string) string {
			s := fmt.Sprintf(format, v)
			if q, ok := ratio(v, v0); ok && p.Lib == libCGMemory.key {
				s += fmt.Sprintf(" (%.2f×)", q)
			}
			return s
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %.1f | %s | %s |\n", p.Registered, p.Lib,
			x(p.Reg.NsPerJob/1e3, first.Reg.NsPerJob/1e3, "%.2f µs"),
			x(p.Reg.BytesPerJob, first.Reg.BytesPerJob, "%.0f B"), p.Reg.ObjectsPerJob,
			x(msf(p.LatP99), msf(first.LatP99), "%.2f ms"),
			x(p.CPUPer1k(), first.CPUPer1k(), "%.0f ms"))
	}
	return b.String()
}

func (r *results) scalingFirst(key string) phaseResult {
	for _, p := range r.Scaling {
		if p.Lib == key {
			return p
		}
	}
	return phaseResult{}
}

// markdown is the whole report: printed, and written as results.md.
func (r *results) markdown(cfg config) string {
	m := r.Meta
	var b strings.Builder
	fmt.Fprintf(&b, "# Scheduler cost: cronguard against robfig/cron and gocron\n\n")
	fmt.Fprintf(&b, "- date: %s; took %d s\n", m.Date, m.DurationSec)
	fmt.Fprintf(&b, "- machine: %d × %s (GOMAXPROCS %d), %s, %s, redis-server %s on loopback\n", m.NumCPU, m.CPUModel, m.GOMAXPROCS, m.OS, m.Go, m.Redis)
	fmt.Fprintf(&b, "- load average (1/5/15 min) at start: %s; at end: %s. Other work on the machine moves the absolute numbers; the ratios are taken within one rep, phases alternating, so they move less.\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "- command: `%s`\n\n", m.Command)
	fmt.Fprintf(&b, "## Side by side: %d jobs on `%s`, %d ticks per phase, %d reps\n\n", cfg.jobs, specEverySecond, cfg.seconds, cfg.reps)
	b.WriteString("Medians over the reps; a ratio is taken within each rep, then its median is shown.\n\n")
	b.WriteString(r.mainTable(cfg))
	fmt.Fprintf(&b, `
- lateness: how long after the second boundary the job's body started; every row's job does the same (probe.started: the time as it starts, against the second it falls in).
- CPU: user+system of the whole process over the measured ticks (getrusage), per 1,000 runs; the redis-server's is separate.
- run, mean: a whole guarded cronguard run on Redis (kill switch, claim, overlap, lock and release), timed by a WithMiddleware
  middleware; for the PING floor, %d× PING in a row on the same kind of client (the round trips of one cronguard run, measured),
  made by robfig/cron jobs firing the same way (their lateness is taken as the job starts, before the PINGs; results.json
  and the goals also give it when the PINGs are back).
  For the claim floor, one EVALSHA of the least atomic claim (HGET the job's mark; if at or past the tick return 0; else HSET
  it to the tick and return 1) on each job's own key; its lateness is taken when the script returns with the claim won,
  as a guarded job cannot start before its claim is back. ×floor compares with the PING floor in the same rep, idle with
  idle and busy with busy.
- redis-server µs per run: the server's own time executing the commands the phase's client sent (INFO commandstats after
  CONFIG RESETSTAT around the measured ticks; a script's inner calls are inside its time and not added again), per run.
- heap and objects per job: live heap after a full GC, %d jobs registered, scheduler included, job names made beforehand.
- busy: two goroutines spinning in the benchmark's process during the phase (issue 8's "busy machine").
- gocron's locker is redsync used as go-co-op/gocron-redis-lock uses it (a mutex per run, default options).

`, r.Pings, cfg.heapJobs)
	b.WriteString("Spread (min–max over the reps):\n\n")
	b.WriteString(r.spreadTable(cfg))
	b.WriteString("\nRedis's own time per command (INFO commandstats over the measured ticks; medians over the reps; †: not sent as such by the phase's client, but called inside its scripts (whose time includes it) or sent on a pub/sub connection, which go-redis hooks do not see):\n\n")
	b.WriteString(r.commandsTable(cfg))
	if len(r.Bursts) > 0 {
		b.WriteString("\n## One burst, traced (runtime/trace; one tick outside the reps, 1,000 jobs, memory backends)\n\n")
		b.WriteString(r.burstTable())
		b.WriteString("\nrobfig/cron's loop starts one goroutine per due job, one after another; a job's lateness is the time the loop takes to reach it plus the time its goroutine waits for a P behind the ones started before it. When a run's goroutine holds a P longer than the loop takes per job, the runs queue up behind the loop, and the tail of the burst waits for them.\n")
	}
	if len(r.Scaling) > 0 {
		fmt.Fprintf(&b, "\n## Scaling: registered jobs, %d firing each second, the rest on `%s`; %d ticks, one rep\n\n", min(cfg.jobs, cfg.scale[0]), specIdle, cfg.scaleSeconds)
		b.WriteString("![scaling curve](scaling.png)\n\n")
		b.WriteString(r.scalingTable())
		fmt.Fprintf(&b, "\nRegister time and heap: median of registrations of that many jobs into a fresh scheduler, repeated up to %d jobs in all (at least 3 times, at most 10). Lateness and CPU: the firing jobs only; the idle ones are what the scheduler carries.\n", cfg.heapJobs)
	}
	if len(r.Batch) > 0 {
		fmt.Fprintf(&b, "\n## Batch: a no-op Batch over %d in-memory items against a hand-written loop, %d reps\n\n", r.Batch[0].Items, cfg.reps)
		b.WriteString("| shape | runs | Batch per item | loop per item | overhead per item (reps) |\n|---|---|---|---|---|\n")
		for _, br := range r.Batch {
			fmt.Fprintf(&b, "| %s | %d | %.0f ns | %.1f ns | %.0f ns (%s) |\n", br.Shape, br.Runs, median(br.BatchNs), median(br.LoopNs),
				median(br.Overhead), spread(br.Overhead, "%.0f"))
		}
		b.WriteString("\nRunManually whole runs (drain mode, run lock, no kill switch re-read) until every item is done, then the loop over the same items, the same Fetch, Key and Process.\n")
	}
	b.WriteString("\n## Goals of issue 8\n\n| goal | got | |\n|---|---|---|\n")
	for _, g := range r.Goals {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", g.Name, g.Got, g.Status)
	}
	return b.String()
}

// write puts results.md, results.json and the chart in dir.
func (r *results) write(dir, md string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	if len(r.Scaling) == 0 {
		return nil
	}
	return writeChart(dir, r.Scaling)
}
