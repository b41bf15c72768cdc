package main

import (
	"runtime/metrics"
	"time"
)

// gcStats is what the garbage collector has done in this process so far:
// its cycles and the CPU they took (mark workers, assists, sweeping, pauses).
// A collection that lands on a second's burst of runs sets that second's
// lateness tail: the phases say how many landed in their window, so that a
// ratio can be read with it.
type gcStats struct {
	cycles uint64
	cpu    time.Duration
}

var gcMetrics = []metrics.Sample{
	{Name: "/gc/cycles/total:gc-cycles"},
	{Name: "/cpu/classes/gc/total:cpu-seconds"},
}

func readGC() gcStats {
	s := make([]metrics.Sample, len(gcMetrics))
	copy(s, gcMetrics)
	metrics.Read(s)
	var g gcStats
	if s[0].Value.Kind() == metrics.KindUint64 {
		g.cycles = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindFloat64 {
		g.cpu = time.Duration(s[1].Value.Float64() * 1e9)
	}
	return g
}

// sub is what the collector did between old and g.
func (g gcStats) sub(old gcStats) gcStats {
	return gcStats{cycles: g.cycles - old.cycles, cpu: g.cpu - old.cpu}
}
