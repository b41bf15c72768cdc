package main

import "fmt"

// goal is one goal of issue 8 checked against this run.
type goal struct {
	Name   string `json:"goal"`
	Got    string `json:"got"`
	Status string `json:"status"` // met, MISSED, not measured, or a floor's reference
}

const notMeasured = "not measured"

func check(name string, v []float64, limit float64, format string) goal {
	if len(v) == 0 {
		return goal{name, "—", notMeasured}
	}
	g := goal{Name: name, Got: fmt.Sprintf(format, median(v)) + " (reps: " + spread(v, format) + ")", Status: "MISSED"}
	if median(v) <= limit {
		g.Status = "met"
	}
	return g
}

// evaluate checks the goals of issue 8, on the medians over the reps.
func evaluate(cfg config, r *results) []goal {
	gs := []goal{
		check("memory backends: lateness p99 ≤ 1.5× robfig's", r.perRep(libCGMemory.key, false, vsRobfig(latP99)), 1.5, "%.2f×"),
		reading("↳ the same, in the reps where no collection ended in either phase's window (the collector's landing on a burst sets the tail)",
			r.perRep(libCGMemory.key, false, noGC(vsRobfig(latP99))), 1.5, "%.2f×"),
		reference("↳ guard floor: its lateness p99 over robfig's, the least a run keeping cronguard's promises in one process can cost (guardfloor.go)",
			r.perRep(libGuardBase.key, false, vsRobfig(latP99)), 1.5, "%.2f×"),
		check("memory backends: CPU ≤ 3× robfig's", r.perRep(libCGMemory.key, false, vsRobfig(cpu1k)), 3, "%.2f×"),
		reading("↳ the same, less the collector's CPU in each window (what the runs themselves cost)",
			r.perRep(libCGMemory.key, false, vsRobfig(cpuNoGC1k)), 3, "%.2f×"),
		reference("↳ guard floor: its CPU over robfig's, the same run",
			r.perRep(libGuardBase.key, false, vsRobfig(cpu1k)), 3, "%.2f×"),
		check(fmt.Sprintf("heap per registered job ≤ 500 B (%d jobs)", cfg.heapJobs), r.regs(libCGMemory.key, heapB), 500, "%.0f B"),
		r.linear(),
		check("Redis, idle: lateness p99 ≤ robfig's p99 + 5 ms", r.latencyOver(libRobfig.key, false), 5, "+%.2f ms"),
		reference("↳ PING floor, idle: its p99 taken when its PINGs are back (as the claim floor's is) − robfig's p99: what the round trips alone cost",
			r.pingFloorDoneOver(), 5, "+%.2f ms"),
		reference("↳ claim floor, idle: its p99 − robfig's p99, the least any design making one atomic claim per job per tick on one Redis can reach on this machine",
			r.claimLatencyOver(libRobfig.key, false), 5, "+%.2f ms"),
		check("Redis, busy: lateness p99 ≤ the busy floor's p99 + 5 ms", r.latencyOver(libRedisBase.key, true), 5, "+%.2f ms"),
		reference("↳ claim floor, busy: its p99 − the busy PING floor's p99 (the goal's reference, taken as the PING jobs start), beside 2 busy goroutines",
			r.claimLatencyOver(libRedisBase.key, true), 5, "+%.2f ms"),
		check("Redis, idle: whole guarded run ≤ 1.2× its round trips as PINGs", r.floorRatio(false), 1.2, "%.2f×"),
		reference(fmt.Sprintf("↳ claim floor, idle: its run (1 EVALSHA) over the PING floor's (%d× PING), the ratio for the cheapest claim possible", r.Pings),
			r.pingFloorRatio(libClaimBase.key, false), 1.2, "%.2f×"),
		check("Redis, busy: whole guarded run ≤ 1.2× its round trips as PINGs", r.floorRatio(true), 1.2, "%.2f×"),
		reference(fmt.Sprintf("↳ claim floor, busy: its run (1 EVALSHA) over the busy PING floor's (%d× PING), the same ratio beside 2 busy goroutines", r.Pings),
			r.pingFloorRatio(libClaimBase.key, true), 1.2, "%.2f×"),
	}
	if len(r.Batch) == 0 {
		gs = append(gs, goal{Name: "Batch: < 100 ns per item over a hand-written loop", Got: "—", Status: notMeasured})
	}
	for _, br := range r.Batch {
		gs = append(gs, check(fmt.Sprintf("Batch, %s: < 100 ns per item over a hand-written loop", br.Shape), br.Overhead, 100, "%.0f ns"))
	}
	return gs
}

// reading is a figure that helps read the goal above it (the same ratio
// under a stated condition): not a goal, so its status only says whether
// it is within the goal's limit.
func reading(name string, v []float64, limit float64, format string) goal {
	return notAGoal(check(name, v, limit, format), "")
}

// noGC keeps f's value only for reps where neither phase saw a collection
// end in its window.
func noGC(f func(p, rb phaseResult) (float64, bool)) func(p, rb phaseResult) (float64, bool) {
	return func(p, rb phaseResult) (float64, bool) {
		if p.GCs > 0 || rb.GCs > 0 {
			return 0, false
		}
		return f(p, rb)
	}
}

// cpuNoGC1k is the CPU per 1,000 runs without the collector's.
func cpuNoGC1k(p phaseResult) float64 { return p.CPUPer1k() - p.GCCPUPer1k() }

// reference is a floor's figure next to the goal it bounds: not a goal of
// cronguard's, so its status only says whether the floor itself is within
// the goal's limit.
func reference(name string, v []float64, limit float64, format string) goal {
	return notAGoal(check(name, v, limit, format), "floor, ")
}

// notAGoal turns a checked figure's status into whether it is within the
// limit, prefixed by what the figure is.
func notAGoal(g goal, prefix string) goal {
	switch g.Status {
	case "met":
		g.Status = prefix + "within the limit"
	case "MISSED":
		g.Status = prefix + "over the limit"
	}
	return g
}

// claimLatencyOver is, per rep, the claim floor's lateness p99 minus the
// p99 of the reference row, in ms.
func (r *results) claimLatencyOver(refKey string, busy bool) []float64 {
	return r.latencyOf(libClaimBase.key, refKey, busy)
}

// pingFloorDoneOver is, per rep, the idle PING floor's lateness p99 when
// its PINGs are back minus robfig's p99, in ms.
func (r *results) pingFloorDoneOver() []float64 {
	return r.perRep(libRedisBase.key, false, func(p, rb phaseResult) (float64, bool) {
		return msf(p.DoneP99) - msf(rb.LatP99), rb.Runs > 0 && p.DoneP99 > 0
	})
}

// latencyOver is, per rep, cronguard-on-Redis's lateness p99 minus the
// p99 of the reference row, in ms.
func (r *results) latencyOver(refKey string, busy bool) []float64 {
	return r.latencyOf(libCGRedis.key, refKey, busy)
}

// latencyOf is, per rep, the lateness p99 of key's row minus that of the
// reference row (robfig's is always the idle one), in ms.
func (r *results) latencyOf(key, refKey string, busy bool) []float64 {
	return r.perRep(key, busy, func(p, _ phaseResult) (float64, bool) {
		ref := r.find(refKey, busy && refKey != libRobfig.key, p.Rep)
		if ref.Runs == 0 {
			return 0, false
		}
		return msf(p.LatP99) - msf(ref.LatP99), true
	})
}

// linear checks that cronguard's figures at every size of the curve stay
// within 2× of those at the smallest.
func (r *results) linear() goal {
	const name = "linear: register time, heap per job, lateness p99, CPU per run within 2× from the smallest to the largest size"
	var pts []phaseResult
	for _, p := range r.Scaling {
		if p.Lib == libCGMemory.key {
			pts = append(pts, p)
		}
	}
	if len(pts) < 2 {
		return goal{name, "—", notMeasured}
	}
	first := pts[0]
	metrics := []struct {
		name string
		f    func(p phaseResult) float64
	}{
		{"register", func(p phaseResult) float64 { return p.Reg.NsPerJob }},
		{"heap", func(p phaseResult) float64 { return p.Reg.BytesPerJob }},
		{"p99", latP99},
		{"CPU", cpu1k},
	}
	got, status := "", "met"
	for i, m := range metrics {
		worst := 0.0
		for _, p := range pts[1:] {
			if q, ok := ratio(m.f(p), m.f(first)); ok {
				worst = max(worst, q)
			}
		}
		if worst > 2 {
			status = "MISSED"
		}
		if i > 0 {
			got += ", "
		}
		got += fmt.Sprintf("%s %.2f×", m.name, worst)
	}
	return goal{name, fmt.Sprintf("%s (worst size vs %d)", got, first.Registered), status}
}
