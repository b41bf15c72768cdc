package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime/trace"
	"slices"
	"strings"
	"time"

	xtrace "golang.org/x/exp/trace"
)

// burstStats is the anatomy of one second's burst of runs, read from an
// execution trace: how long the cron loop takes to start the jobs'
// goroutines, and how long each of them then holds a P. With 1,000 jobs on
// GOMAXPROCS 2, a job waits for the loop to reach it and for the goroutines
// queued before it: when a run holds a P longer than the loop takes per
// job, the queue grows behind the loop and the tail's lateness with it.
type burstStats struct {
	Lib        string  `json:"lib"`
	Runs       int     `json:"runs"`
	DispatchMs float64 `json:"loop_dispatch_ms"`    // first to last goroutine the loop started
	PerJobUs   float64 `json:"loop_per_job_us"`     // the same, per job
	StartP50Ms float64 `json:"start_p50_ms"`        // from the loop's first start to the job's goroutine running
	StartP99Ms float64 `json:"start_p99_ms"`        // the same, 99th percentile
	RunMeanUs  float64 `json:"goroutine_mean_us"`   // a run's goroutine, running to its end
	RunP50Us   float64 `json:"goroutine_p50_us"`    // the same, median
	Traced     float64 `json:"traced_ms,omitempty"` // how long the trace ran
}

// traceBurst runs l's jobs for one tick outside the measured reps and
// traces that tick's burst (tracing slows both libraries; the figures
// compare the two, not the reps).
func (b *bench) traceBurst(l lib, jobs int) (burstStats, error) {
	p, err := b.newPhase(l, jobs*3, false)
	if err != nil {
		return burstStats{}, err
	}
	if _, err := p.register(jobs, jobs); err != nil {
		_, _ = p.close()
		return burstStats{}, err
	}
	start := windowStart() // half way between two ticks
	p.env.probe.window(start, start.Add(time.Second))
	p.s.start()
	time.Sleep(time.Until(start.Add(300 * time.Millisecond)))
	var buf bytes.Buffer
	terr := trace.Start(&buf)
	time.Sleep(time.Until(start.Add(800 * time.Millisecond)))
	if terr == nil {
		trace.Stop()
	}
	_, cerr := p.close()
	if err := errors.Join(terr, cerr); err != nil {
		return burstStats{}, fmt.Errorf("%s: trace: %w", l.key, err)
	}
	st, err := analyzeBurst(&buf)
	st.Lib = l.key
	return st, err
}

// goLife is what the trace says of one goroutine.
type goLife struct {
	by                 xtrace.GoID // the goroutine that started it
	created, ran, done xtrace.Time
	hasRan, hasDone    bool
}

// analyzeBurst finds the goroutine that started the most others (the cron
// loop) and times the goroutines it started.
func analyzeBurst(r io.Reader) (burstStats, error) {
	tr, err := xtrace.NewReader(r)
	if err != nil {
		return burstStats{}, err
	}
	lives := map[xtrace.GoID]*goLife{}
	started := map[xtrace.GoID]int{}
	var first, last xtrace.Time
	for {
		ev, err := tr.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return burstStats{}, err
		}
		if first == 0 {
			first = ev.Time()
		}
		last = ev.Time()
		if ev.Kind() != xtrace.EventStateTransition {
			continue
		}
		st := ev.StateTransition()
		if st.Resource.Kind != xtrace.ResourceGoroutine {
			continue
		}
		id := st.Resource.Goroutine()
		from, to := st.Goroutine()
		switch {
		case from == xtrace.GoNotExist && to == xtrace.GoRunnable:
			lives[id] = &goLife{by: ev.Goroutine(), created: ev.Time()}
			started[ev.Goroutine()]++
		case to == xtrace.GoRunning && lives[id] != nil && !lives[id].hasRan:
			lives[id].ran, lives[id].hasRan = ev.Time(), true
		case to == xtrace.GoNotExist && lives[id] != nil:
			lives[id].done, lives[id].hasDone = ev.Time(), true
		}
	}
	var loop xtrace.GoID
	for g, n := range started {
		if n > started[loop] {
			loop = g
		}
	}
	var created, starts, runs []float64
	for _, l := range lives {
		if l.by != loop || !l.hasRan || !l.hasDone {
			continue
		}
		created = append(created, float64(l.created))
		starts = append(starts, float64(l.ran))
		runs = append(runs, float64(l.done-l.ran)/1e3)
	}
	if len(created) < 2 {
		return burstStats{}, fmt.Errorf("trace: no burst found (%d goroutines started by the busiest one)", len(created))
	}
	slices.Sort(created)
	slices.Sort(starts)
	slices.Sort(runs)
	t0, n := created[0], len(created)
	var sum float64
	for _, d := range runs {
		sum += d
	}
	return burstStats{
		Runs:       n,
		DispatchMs: (created[n-1] - t0) / 1e6,
		PerJobUs:   (created[n-1] - t0) / 1e3 / float64(n-1),
		StartP50Ms: (starts[n/2] - t0) / 1e6,
		StartP99Ms: (starts[n*99/100] - t0) / 1e6,
		RunMeanUs:  sum / float64(n),
		RunP50Us:   runs[n/2],
		Traced:     float64(last-first) / 1e6,
	}, nil
}

// burstTable shows the traced bursts side by side.
func (r *results) burstTable() string {
	var b strings.Builder
	b.WriteString("| | runs | loop: first to last job started | per job | job goroutine running, p50 after the loop's first start | p99 | a run's goroutine, start to end: mean | p50 |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Bursts {
		fmt.Fprintf(&b, "| %s | %d | %.2f ms | %.2f µs | %.2f ms | %.2f ms | %.2f µs | %.2f µs |\n",
			s.Lib, s.Runs, s.DispatchMs, s.PerJobUs, s.StartP50Ms, s.StartP99Ms, s.RunMeanUs, s.RunP50Us)
	}
	return b.String()
}
