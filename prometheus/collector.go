// Package cgprom exports cronguard's runs, skips and job states as
// Prometheus metrics.
//
// It is a module of its own (github.com/cronguard/cronguard/prometheus), so a
// service that imports cronguard pulls in client_golang only when it wants
// metrics.
//
//	c := cgprom.New()
//	s, _ := cronguard.New(cronguard.WithObserver(c.Observe))
//	c.Watch(s) // job_enabled and next_tick, read from s.Jobs() at scrape time
//	prometheus.MustRegister(c)
//
// Counters move on the scheduler's events as they happen; the switch state
// and the next tick are read at scrape time. Every metric is about this
// process: Prometheus adds the instance label at scrape, and the alert rules
// in the README aggregate by job across instances.
package cgprom

import (
	"sync/atomic"

	"github.com/cronguard/cronguard"
	"github.com/prometheus/client_golang/prometheus"
)

// jobLabel names the job in every series. Not "job": Prometheus gives every
// scraped series the target's job label, and renames a scraped "job" label
// to "exported_job" (unless honor_labels), so alert rules would have to
// name exported_job. kube-state-metrics names its jobs job_name too.
const jobLabel = "job_name"

// DefaultBuckets are the run duration histogram's buckets, in seconds:
// periodic jobs take from milliseconds to an hour.
var DefaultBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600}

// Collector is a prometheus.Collector fed by a Scheduler's events (Observe)
// and, at scrape time, by the Scheduler's job list (Watch). It is safe for
// concurrent use.
type Collector struct {
	runs        *prometheus.CounterVec   // job, trigger, result
	duration    *prometheus.HistogramVec // job, trigger
	processed   *prometheus.CounterVec   // job
	failed      *prometheus.CounterVec   // job
	skips       *prometheus.CounterVec   // job, reason
	missed      *prometheus.CounterVec   // job
	lockLost    *prometheus.CounterVec   // job
	runaway     *prometheus.CounterVec   // job
	lastSuccess *prometheus.GaugeVec     // job

	enabledDesc *prometheus.Desc
	nextDesc    *prometheus.Desc

	sched atomic.Pointer[cronguard.Scheduler]
}

// Option configures a Collector in New.
type Option func(*options)

type options struct {
	buckets []float64
}

// WithBuckets sets the buckets of cronguard_run_duration_seconds, in
// seconds, increasing (default DefaultBuckets). New panics on buckets that
// are not increasing, as prometheus.NewHistogramVec does: it is a
// programming error, found at startup.
func WithBuckets(b ...float64) Option {
	return func(o *options) { o.buckets = b }
}

// New returns a Collector. Wire it with cronguard.WithObserver(c.Observe)
// when building the Scheduler, then call Watch with that Scheduler, and
// register the Collector with a prometheus.Registerer.
func New(opts ...Option) *Collector {
	o := options{buckets: DefaultBuckets}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	return &Collector{
		runs: counter("cronguard_runs_total",
			"Runs that started and ended, by job, trigger (schedule, manual) and result (the Report's stop reason).",
			jobLabel, "trigger", "result"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cronguard_run_duration_seconds",
			Help:    "Duration of the runs that started, by job and trigger.",
			Buckets: o.buckets,
		}, []string{jobLabel, "trigger"}),
		processed: counter("cronguard_items_processed_total",
			"Batch items processed without error, counted when their run ends.", jobLabel),
		failed: counter("cronguard_items_failed_total",
			"Batch items whose Process failed, counted when their run ends.", jobLabel),
		skips: counter("cronguard_skips_total",
			"Runs that did not start, by job and reason (killed, tick_taken, overlap, locked, backend, stopped).",
			jobLabel, "reason"),
		missed: counter("cronguard_missed_ticks_total",
			"Scheduled ticks that no instance claimed in time.", jobLabel),
		lockLost: counter("cronguard_lock_lost_total",
			"Runs whose run lock could not be kept; each was canceled.", jobLabel),
		runaway: counter("cronguard_runaway_total",
			"Runs stopped by the runaway guard (a batch repeated an item); the guard also switches the job off.", jobLabel),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cronguard_last_success_timestamp_seconds",
			Help: "Unix time at which the last run without error of the job ended in this process.",
		}, []string{jobLabel}),
		enabledDesc: prometheus.NewDesc("cronguard_job_enabled",
			"1 when the job's kill switch lets it run, 0 when it is switched off (read at scrape time).",
			[]string{jobLabel}, nil),
		nextDesc: prometheus.NewDesc("cronguard_next_tick_timestamp_seconds",
			"Unix time of the job's next scheduled tick (read at scrape time).",
			[]string{jobLabel}, nil),
	}
}

// Watch makes the Collector read s.Jobs() at every scrape, for
// cronguard_job_enabled and cronguard_next_tick_timestamp_seconds, and to
// create every registered job's counters at 0 (see Collect). It may be
// called at any time; a later call replaces the Scheduler watched. A scrape
// costs one kill switch lookup per job (s.Jobs()), each bounded by the
// Scheduler's call budget: the memory, Redis and Unleash switches answer
// from memory.
func (c *Collector) Watch(s *cronguard.Scheduler) {
	c.sched.Store(s)
}

// vecs is every metric vector of c, in the order they are described.
func (c *Collector) vecs() []prometheus.Collector {
	return []prometheus.Collector{
		c.runs, c.duration, c.processed, c.failed, c.skips,
		c.missed, c.lockLost, c.runaway, c.lastSuccess,
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.vecs() {
		v.Describe(ch)
	}
	ch <- c.enabledDesc
	ch <- c.nextDesc
}

// Collect implements prometheus.Collector. With a watched Scheduler it first
// creates, at 0, the counters of every registered job whose labels are
// known in advance, so that increase() and rate() see a job's first
// runaway, lock loss, missed tick, skip or scheduled run of any result:
// a series that is born at 1 hides its first increment from them.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if s := c.sched.Load(); s != nil {
		for _, info := range s.Jobs() {
			job := label(info.Name)
			c.touch(job)
			ch <- prometheus.MustNewConstMetric(c.enabledDesc, prometheus.GaugeValue, boolValue(info.Enabled), job)
			if !info.Next.IsZero() { // a spec that never fires again has no next tick
				ch <- prometheus.MustNewConstMetric(c.nextDesc, prometheus.GaugeValue, unixSeconds(info.Next), job)
			}
		}
	}
	for _, v := range c.vecs() {
		v.Collect(ch)
	}
}

// stopReasons and skipReasons are the words of Report.Outcome (for a run
// that started, and for one that did not) whose series touch creates; a
// word the core adds later appears at its first use. alerts.yml matches
// these values.
var (
	stopReasons = []string{
		"done", "killed", "max_batches", "runaway", "lock_lost", "error_budget", "canceled", "timeout", "error",
	}
	skipReasons = []string{"killed", "tick_taken", "overlap", "locked", "backend", "stopped"}
)

// touch creates job's counters at 0 where they do not exist yet: the
// per-job ones, every skip reason, and every result of scheduled runs
// (manual runs are an operator's act, seen as it happens; their series
// appear at first use, so a watched job has 22 series before its first run).
func (c *Collector) touch(job string) {
	for _, v := range []*prometheus.CounterVec{c.processed, c.failed, c.missed, c.lockLost, c.runaway} {
		v.WithLabelValues(job)
	}
	for _, r := range skipReasons {
		c.skips.WithLabelValues(job, r)
	}
	for _, r := range stopReasons {
		c.runs.WithLabelValues(job, string(cronguard.TriggerSchedule), r)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
