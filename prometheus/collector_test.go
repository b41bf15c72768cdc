package cgprom_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	cgprom "github.com/cronguard/cronguard/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// yearly fires on 1 January only: the scripted jobs never tick during the
// test, so every count below comes from the runs the test makes.
const yearly = "0 0 1 1 *"

// recorder is a second observer: what the scheduler really emitted.
type recorder struct {
	mu     sync.Mutex
	events []cronguard.Event
	notify chan cronguard.Event
}

func newRecorder() *recorder { return &recorder{notify: make(chan cronguard.Event, 1024)} }

func (r *recorder) observe(ev cronguard.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.notify <- ev:
	default:
	}
}

func (r *recorder) count(kind cronguard.EventKind, job string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Kind == kind && ev.Job == job {
			n++
		}
	}
	return n
}

// waitFor waits up to d for an event matching ok.
func (r *recorder) waitFor(t *testing.T, d time.Duration, ok func(cronguard.Event) bool) cronguard.Event {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		select {
		case ev := <-r.notify:
			if ok(ev) {
				return ev
			}
		case <-deadline.C:
			t.Fatalf("no matching event within %s", d)
		}
	}
}

type item struct{ id string }

// keysetBatch walks ids in key order, size 2; Process fails for bad.
func keysetBatch(ids []string, bad string) cronguard.Batch[item] {
	return cronguard.Batch[item]{
		Fetch: func(_ context.Context, p cronguard.Page) ([]item, error) {
			var out []item
			for _, id := range ids {
				if id > p.After && len(out) < p.Size {
					out = append(out, item{id})
				}
			}
			return out, nil
		},
		Process: func(_ context.Context, it item) error {
			if it.id == bad {
				return errors.New("bounce")
			}
			return nil
		},
		Key:    func(it item) string { return it.id },
		Size:   2,
		Keyset: true,
	}
}

// runawayBatch's Fetch ignores what was done: the same two items forever.
func runawayBatch() cronguard.Batch[item] {
	return cronguard.Batch[item]{
		Fetch: func(context.Context, cronguard.Page) ([]item, error) {
			return []item{{"a"}, {"b"}}, nil
		},
		Process: func(context.Context, item) error { return nil },
		Key:     func(it item) string { return it.id },
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestScriptedRunsExactValues runs scripted jobs on a real Scheduler with
// memory backends, then reads every counter series twice — from the
// registry and from a live /metrics endpoint — and compares them exactly.
func TestScriptedRunsExactValues(t *testing.T) {
	begin := time.Now()
	c := cgprom.New()
	rec := newRecorder()
	s, err := cronguard.New(cronguard.WithObserver(c.Observe), cronguard.WithObserver(rec.observe),
		cronguard.WithLogger(quiet()), cronguard.WithLocation(time.UTC), cronguard.WithInstanceID("test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	c.Watch(s)
	reg := prometheus.NewPedanticRegistry() // checks Collect against Describe
	reg.MustRegister(c)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	t.Cleanup(srv.Close)

	var offRuns atomic.Int32
	must(t, s.Register("batch", yearly, keysetBatch([]string{"1", "2", "3", "4", "5"}, "3")))
	must(t, s.Register("failing", yearly, cronguard.JobFunc(func(context.Context) error { return errors.New("boom") })))
	must(t, s.Register("runaway", yearly, runawayBatch()))
	must(t, s.Register("off", "* * * * * *", cronguard.JobFunc(func(context.Context) error { offRuns.Add(1); return nil })))
	must(t, s.SetEnabled(context.Background(), "off", false, "test"))

	// Before any run: every watched job's counters exist at 0, so that
	// increase() sees the first runaway.
	before := scrape(t, srv.URL)
	if v, ok := before[`cronguard_runaway_total{job_name="runaway"}`]; !ok || v != 0 {
		t.Fatalf(`before any run: cronguard_runaway_total{job_name="runaway"} = %v (present %t), want 0`, v, ok)
	}

	must(t, s.Start())
	rep, err := s.RunManually(context.Background(), "batch")
	if err != nil || rep.Outcome() != "done" || rep.Processed != 4 || rep.Failed != 1 || rep.Batches != 3 {
		t.Fatalf("batch: %v, %v", rep, err)
	}
	if _, err := s.RunManually(context.Background(), "failing"); err == nil {
		t.Fatal("failing: no error")
	}
	rep, err = s.RunManually(context.Background(), "runaway")
	if !errors.Is(err, cronguard.ErrRunaway) || !rep.Tripped || rep.Processed != 2 {
		t.Fatalf("runaway: %v, %v", rep, err)
	}
	// The switched-off job is skipped at a real tick (one a second).
	rec.waitFor(t, 5*time.Second, func(ev cronguard.Event) bool {
		return ev.Kind == cronguard.EventSkipped && ev.Job == "off" && ev.Skip == "killed"
	})
	must(t, s.Stop(context.Background())) // no more ticks: the counts are final
	skips := rec.count(cronguard.EventSkipped, "off")
	if offRuns.Load() != 0 || skips < 1 {
		t.Fatalf("off: %d runs, %d skips", offRuns.Load(), skips)
	}

	want := zeroCounters([]string{"batch", "failing", "off", "runaway"})
	set := func(series string, v float64) { want[series] = v }
	set(`cronguard_runs_total{job_name="batch",result="done",trigger="manual"}`, 1)
	set(`cronguard_runs_total{job_name="failing",result="error",trigger="manual"}`, 1)
	set(`cronguard_runs_total{job_name="runaway",result="runaway",trigger="manual"}`, 1)
	set(`cronguard_items_processed_total{job_name="batch"}`, 4)
	set(`cronguard_items_failed_total{job_name="batch"}`, 1)
	set(`cronguard_items_processed_total{job_name="runaway"}`, 2)
	set(`cronguard_runaway_total{job_name="runaway"}`, 1)
	set(`cronguard_skips_total{job_name="off",reason="killed"}`, float64(skips))
	set(`cronguard_run_duration_seconds_count{job_name="batch",trigger="manual"}`, 1)
	set(`cronguard_run_duration_seconds_count{job_name="failing",trigger="manual"}`, 1)
	set(`cronguard_run_duration_seconds_count{job_name="runaway",trigger="manual"}`, 1)
	set(`cronguard_job_enabled{job_name="batch"}`, 1)
	set(`cronguard_job_enabled{job_name="failing"}`, 1)
	set(`cronguard_job_enabled{job_name="off"}`, 0)
	set(`cronguard_job_enabled{job_name="runaway"}`, 0) // the runaway guard tripped the switch
	next := float64(time.Date(time.Now().UTC().Year()+1, 1, 1, 0, 0, 0, 0, time.UTC).Unix())
	for _, job := range []string{"batch", "failing", "runaway"} {
		set(`cronguard_next_tick_timestamp_seconds{job_name="`+job+`"}`, next)
	}

	gathered, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]map[string]float64{
		"registry": flatten(gathered),
		"http":     scrape(t, srv.URL),
	} {
		t.Run(name, func(t *testing.T) {
			checkExact(t, got, want, begin)
		})
	}

	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("promlint: %v %+v", err, problems)
	}
}

// checkExact compares got with want: every series of want has its exact
// value, and got has no series want does not name, except the ones whose
// value cannot be known in advance, checked for range here.
func checkExact(t *testing.T, got, want map[string]float64, begin time.Time) {
	t.Helper()
	for series, v := range want {
		if g, ok := got[series]; !ok || g != v {
			t.Errorf("%s = %v (present %t), want %v", series, g, ok, v)
		}
	}
	now := float64(time.Now().UnixNano()) / 1e9
	for series, v := range got {
		if _, ok := want[series]; ok {
			continue
		}
		switch {
		case series == `cronguard_last_success_timestamp_seconds{job_name="batch"}`:
			if v < float64(begin.UnixNano())/1e9 || v > now {
				t.Errorf("%s = %v, want between the test's start and now", series, v)
			}
		case series == `cronguard_next_tick_timestamp_seconds{job_name="off"}`:
			if v < now-2 || v > now+2 { // every second; read after Stop
				t.Errorf("%s = %v, want within 2s of now (%v)", series, v, now)
			}
		case strings.HasPrefix(series, "cronguard_run_duration_seconds_sum"),
			strings.HasPrefix(series, "cronguard_run_duration_seconds_bucket"):
			if v < 0 || v > 60 {
				t.Errorf("%s = %v", series, v)
			}
		default:
			t.Errorf("unexpected series %s = %v", series, v)
		}
	}
	if t.Failed() {
		t.Logf("got:\n%s", dump(got))
	}
}

// zeroCounters is every series a watched job has before its first run.
func zeroCounters(jobs []string) map[string]float64 {
	want := map[string]float64{}
	results := []string{"canceled", "done", "error", "error_budget", "killed", "lock_lost", "max_batches", "runaway", "timeout"}
	reasons := []string{"backend", "killed", "locked", "overlap", "stopped", "tick_taken"}
	for _, job := range jobs {
		for _, m := range []string{"items_processed", "items_failed", "missed_ticks", "lock_lost", "runaway"} {
			want[`cronguard_`+m+`_total{job_name="`+job+`"}`] = 0
		}
		for _, r := range results {
			want[`cronguard_runs_total{job_name="`+job+`",result="`+r+`",trigger="schedule"}`] = 0
		}
		for _, r := range reasons {
			want[`cronguard_skips_total{job_name="`+job+`",reason="`+r+`"}`] = 0
		}
	}
	return want
}

// TestLockLostOnRealRedis takes a running job's lock away for real: the
// lock key is deleted from a real redis-server, the watchdog's next
// extension fails and the run is canceled.
func TestLockLostOnRealRedis(t *testing.T) {
	rdb := startRedis(t)
	locker, err := cronguard.NewRedisLocker(rdb)
	if err != nil {
		t.Fatal(err)
	}
	c := cgprom.New()
	rec := newRecorder()
	s, err := cronguard.New(cronguard.WithLocker(locker), cronguard.WithObserver(c.Observe),
		cronguard.WithObserver(rec.observe), cronguard.WithLogger(quiet()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	c.Watch(s)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	t.Cleanup(srv.Close)

	must(t, s.Register("slow", yearly, cronguard.JobFunc(func(ctx context.Context) error {
		<-ctx.Done()
		return context.Cause(ctx)
	}), cronguard.LockTTL(300*time.Millisecond)))
	done := make(chan cronguard.Report, 1)
	go func() {
		rep, _ := s.RunManually(context.Background(), "slow")
		done <- rep
	}()
	rec.waitFor(t, 10*time.Second, func(ev cronguard.Event) bool { return ev.Kind == cronguard.EventStarted })
	const key = "cronguard:lock:{slow}" // NewRedisLocker's layout with the default prefix (ARCHITECTURE.md)
	if n, err := rdb.Del(context.Background(), key).Result(); err != nil || n != 1 {
		t.Fatalf("DEL %s: %d, %v (has the key layout changed?)", key, n, err)
	}
	var rep cronguard.Report
	select {
	case rep = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the run did not end after its lock was deleted")
	}
	if rep.Outcome() != "lock_lost" {
		t.Fatalf("report: %v", rep)
	}
	got := scrape(t, srv.URL)
	for series, v := range map[string]float64{
		`cronguard_lock_lost_total{job_name="slow"}`:                                1,
		`cronguard_runs_total{job_name="slow",result="lock_lost",trigger="manual"}`: 1,
		`cronguard_runs_total{job_name="slow",result="done",trigger="manual"}`:      0,
	} {
		if got[series] != v {
			t.Errorf("%s = %v, want %v", series, got[series], v)
		}
	}
	if _, ok := got[`cronguard_last_success_timestamp_seconds{job_name="slow"}`]; ok {
		t.Error("a run that lost its lock set the last success time")
	}
}

// TestMissedTicks feeds the collector the core's missed event (the core
// raises it from the tick claim, which a test outside the package cannot
// drive without waiting for real minutes).
func TestMissedTicks(t *testing.T) {
	c := cgprom.New()
	c.Observe(cronguard.Event{Kind: cronguard.EventMissed, Job: "emails", Missed: 3})
	c.Observe(cronguard.Event{Kind: cronguard.EventMissed, Job: "emails", Missed: 2})
	c.Observe(cronguard.Event{Kind: cronguard.EventMissed, Job: "reports", Missed: 1})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP cronguard_missed_ticks_total Scheduled ticks that no instance claimed in time.
# TYPE cronguard_missed_ticks_total counter
cronguard_missed_ticks_total{job_name="emails"} 5
cronguard_missed_ticks_total{job_name="reports"} 1
`), "cronguard_missed_ticks_total"); err != nil {
		t.Fatal(err)
	}
}

// TestInvalidUTF8JobName: a job name that is not valid UTF-8 neither
// panics nor loses its events.
func TestInvalidUTF8JobName(t *testing.T) {
	c := cgprom.New()
	c.Observe(cronguard.Event{Kind: cronguard.EventRunaway, Job: "bad\xffname"})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if v := flatten(mfs)["cronguard_runaway_total{job_name=\"bad\uFFFDname\"}"]; v != 1 {
		t.Fatalf("runaway = %v, want 1:\n%s", v, dump(flatten(mfs)))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// scrape GETs url as Prometheus would and parses the text exposition.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	mfs := make([]*dto.MetricFamily, 0, len(families))
	for _, mf := range families {
		mfs = append(mfs, mf)
	}
	return flatten(mfs)
}

// flatten turns metric families into "name{k="v",...}" → value, labels
// sorted by name; a histogram gives its _count, _sum and _bucket series.
func flatten(mfs []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(labels)
			key := func(suffix string, extra ...string) string {
				ls := slices.Concat(labels, extra)
				sort.Strings(ls)
				return mf.GetName() + suffix + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key("")] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key("")] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				h := m.GetHistogram()
				out[key("_count")] = float64(h.GetSampleCount())
				out[key("_sum")] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[key("_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

func dump(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s %v\n", k, m[k])
	}
	return b.String()
}
