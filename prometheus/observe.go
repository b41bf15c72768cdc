package cgprom

import (
	"strings"
	"time"

	"github.com/cronguard/cronguard"
)

// Observe records one event. Pass it to cronguard.WithObserver. It is quick
// (a few map lookups under client_golang's locks), safe for concurrent use,
// and never panics.
//
//   - finished: cronguard_runs_total{result=Report.Outcome()} and the duration;
//     the items processed and failed of the run; a run whose Report.Err is
//     nil (stop done or max_batches) sets the last success time to the
//     event's time.
//   - skipped: cronguard_skips_total{reason=Event.Skip}.
//   - missed: cronguard_missed_ticks_total, by the number of ticks missed.
//   - lock_lost, runaway: their counters.
//
// Other events (started, batch_done, item_failed, flag) are not counted:
// the finished event's Report has their totals.
func (c *Collector) Observe(ev cronguard.Event) {
	job := label(ev.Job)
	switch ev.Kind {
	case cronguard.EventFinished:
		c.finished(job, ev)
	case cronguard.EventSkipped:
		c.skips.WithLabelValues(job, orUnknown(ev.Skip)).Inc()
	case cronguard.EventMissed:
		c.missed.WithLabelValues(job).Add(float64(missedCount(ev)))
	case cronguard.EventLockLost:
		c.lockLost.WithLabelValues(job).Inc()
	case cronguard.EventRunaway:
		c.runaway.WithLabelValues(job).Inc()
	}
}

func (c *Collector) finished(job string, ev cronguard.Event) {
	r := ev.Report
	if r == nil {
		return
	}
	trigger := orUnknown(string(r.Trigger))
	c.runs.WithLabelValues(job, trigger, r.Outcome()).Inc()
	// A run that failed before the guards let it start (a middleware that
	// returned early) has no start time, so no duration worth observing.
	if !r.Start.IsZero() {
		c.duration.WithLabelValues(job, trigger).Observe(r.Duration.Seconds())
	}
	c.processed.WithLabelValues(job).Add(float64(max(r.Processed, 0)))
	c.failed.WithLabelValues(job).Add(float64(max(r.Failed, 0)))
	if r.Err == nil {
		end := ev.Time
		if end.IsZero() {
			end = time.Now()
		}
		c.lastSuccess.WithLabelValues(job).Set(unixSeconds(end))
	}
}

// missedCount is how many ticks a missed event stands for: its Missed
// field, at least 1.
func missedCount(ev cronguard.Event) int {
	return max(ev.Missed, 1)
}

// label makes s a valid label value: client_golang refuses (panics on)
// invalid UTF-8, and a job name is any string the program registered.
func label(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func unixSeconds(t time.Time) float64 {
	return float64(t.UnixNano()) / 1e9
}
