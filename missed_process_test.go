package cronguard

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Item 2's test with the instances as separate OS processes: the test
// binary re-executed with missedChildEnv set (see TestMain) is one
// instance, a real Scheduler on a real redis-server, firing every second.
// Three instances run, all stop, three ticks pass with none running, three
// new instances run. Every instance writes its events to a file; the test
// reads them back and checks that the ticks of the gap are reported missed
// once (not once per instance) and, for the job with CatchUp, caught up by
// exactly one run; and that the history stream on Redis says the same.

const missedChildEnv = "CRONGUARD_MISSED_CHILD" // "addr|instance|outfile|startAt (unix ns)"

// The jobs every instance registers: the same spec, one with CatchUp.
const (
	mpPlain   = "plain"
	mpCatchUp = "catchup"
)

// mpRecord is one line of an instance's file: an event, or "ready" once
// its scheduler has started.
type mpRecord struct {
	Kind     EventKind `json:"kind"`
	Job      string    `json:"job,omitempty"`
	Trigger  Trigger   `json:"trigger,omitempty"`
	Instance string    `json:"instance"`
	Tick     time.Time `json:"tick,omitzero"`
	Skip     string    `json:"skip,omitempty"`
	Stop     string    `json:"stop,omitempty"`
	Missed   int       `json:"missed,omitempty"`
	First    time.Time `json:"first,omitzero"`
	Last     time.Time `json:"last,omitzero"`
	Err      string    `json:"err,omitempty"`
	Time     time.Time `json:"time"`
}

// missedChild is the main of an instance process (see TestMain). It
// registers both jobs on "* * * * * *", waits until startAt to start (so
// the test controls when the first tick fires), and runs until SIGTERM.
func missedChild(spec string) int {
	parts := strings.Split(spec, "|")
	if len(parts) != 4 {
		fmt.Fprintf(os.Stderr, "missed child: bad %s %q\n", missedChildEnv, spec)
		return 2
	}
	addr, inst, out := parts[0], parts[1], parts[2]
	startAt, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "missed child:", err)
		return 2
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "missed child:", err)
		return 2
	}
	defer f.Close()
	var mu sync.Mutex
	enc := json.NewEncoder(f) // one write per line
	write := func(r mpRecord) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(r)
	}
	observe := func(ev Event) {
		r := mpRecord{Kind: ev.Kind, Job: ev.Job, Trigger: ev.Trigger, Instance: ev.Instance, Tick: ev.Tick,
			Skip: ev.Skip, Missed: ev.Missed, First: ev.MissedFirst, Last: ev.MissedLast, Time: ev.Time}
		if ev.Report != nil {
			r.Stop = ev.Report.Outcome()
		}
		if ev.Err != nil {
			r.Err = clip(ev.Err.Error())
		}
		write(r)
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	s, err := New(WithRedis(rdb), WithInstanceID(inst), WithObserver(observe),
		WithLogger(slog.New(slog.DiscardHandler)), WithLocation(time.UTC))
	if err != nil {
		fmt.Fprintln(os.Stderr, "missed child:", err)
		return 2
	}
	job := JobFunc(func(ctx context.Context) error {
		time.Sleep(10 * time.Millisecond)
		return nil
	})
	for name, opts := range map[string][]JobOption{mpPlain: nil, mpCatchUp: {CatchUp()}} {
		if err := s.Register(name, "* * * * * *", job, opts...); err != nil {
			fmt.Fprintln(os.Stderr, "missed child:", err)
			return 2
		}
	}
	// A tick fired before the kill switch can answer would be skipped,
	// unclaimed: wait for it, as a service's readiness check would.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if info, _ := s.Job(mpPlain); info.EnabledErr == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintln(os.Stderr, "missed child: the kill switch did not answer within 10s")
			return 2
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	time.Sleep(time.Until(time.Unix(0, startAt)))
	if err := s.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "missed child:", err)
		return 2
	}
	write(mpRecord{Kind: "ready", Instance: inst, Time: time.Now()})
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "missed child: stop:", err)
		return 1
	}
	return 0
}

// mpGeneration is a set of instance processes started together.
type mpGeneration struct {
	procs []*exec.Cmd
	files []string
}

// startGeneration starts n instances named gen-i that start firing at
// startAt.
func startGeneration(t *testing.T, addr, dir string, gen, n int, startAt time.Time) *mpGeneration {
	t.Helper()
	g := &mpGeneration{}
	for i := range n {
		inst := fmt.Sprintf("g%d-%d", gen, i)
		file := filepath.Join(dir, inst+".jsonl")
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%s|%s|%d", missedChildEnv, addr, inst, file, startAt.UnixNano()))
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		g.procs, g.files = append(g.procs, cmd), append(g.files, file)
	}
	t.Cleanup(func() { g.stop(t) }) // a no-op once stopped
	return g
}

// waitReady waits until every instance has started its scheduler.
func (g *mpGeneration) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "instances ready", func() bool {
		for _, f := range g.files {
			recs, _ := readRecords(f)
			if !slices.ContainsFunc(recs, func(r mpRecord) bool { return r.Kind == "ready" }) {
				return false
			}
		}
		return true
	})
}

// stop sends SIGTERM to every instance and waits for them to exit.
func (g *mpGeneration) stop(t *testing.T) {
	t.Helper()
	for _, p := range g.procs {
		if p.ProcessState == nil {
			_ = p.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range g.procs {
		if p.ProcessState == nil {
			if err := p.Wait(); err != nil {
				t.Errorf("instance %v: %v", p.Env[len(p.Env)-1], err)
			}
		}
	}
}

func (g *mpGeneration) records(t *testing.T) []mpRecord {
	t.Helper()
	var all []mpRecord
	for _, f := range g.files {
		recs, err := readRecords(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, recs...)
	}
	return all
}

func readRecords(file string) ([]mpRecord, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mpRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r mpRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return out, fmt.Errorf("%s: %w: %q", file, err, sc.Text())
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// lastRun is the latest tick of job that a generation ran (schedule).
func lastRun(recs []mpRecord, job string) time.Time {
	var last time.Time
	for _, r := range recs {
		if r.Kind == EventFinished && r.Job == job && r.Trigger == TriggerSchedule && r.Tick.After(last) {
			last = r.Tick
		}
	}
	return last
}

func TestMissedTicksAndCatchUpSeparateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("runs instance processes for about 10s; not with -short")
	}
	srv := redistest.Start(t)
	dir := t.TempDir()
	const n = 3

	gen1 := startGeneration(t, srv.Addr(), dir, 1, n, time.Now())
	gen1.waitReady(t)
	time.Sleep(3 * time.Second)
	gen1.stop(t)
	recs1 := gen1.records(t)
	last1 := lastRun(recs1, mpPlain)
	if l := lastRun(recs1, mpCatchUp); last1.IsZero() || !l.Equal(last1) {
		t.Fatalf("generation 1 ran up to %s (plain) and %s (catchup): want both, up to the same tick", last1, l)
	}

	// All stopped. Three ticks pass with none running: the new instances
	// start firing after the third, so their first tick is last1+4s (later
	// if they are slow to start: the expected values come from the files).
	gen2 := startGeneration(t, srv.Addr(), dir, 2, n, last1.Add(3*time.Second+50*time.Millisecond))
	gen2.waitReady(t)
	time.Sleep(3 * time.Second)
	gen2.stop(t)
	recs2 := gen2.records(t)

	all := append(recs1, recs2...)
	for _, job := range []string{mpPlain, mpCatchUp} {
		t.Run(job, func(t *testing.T) {
			first2 := firstRun(recs2, job)
			if first2.IsZero() {
				t.Fatalf("generation 2 ran no tick of %s", job)
			}
			gap := int(first2.Sub(last1)/time.Second) - 1 // ticks strictly between
			t.Logf("%s: generation 1 ran up to %s, generation 2 from %s: %d ticks missed", job, fmtTick(last1), fmtTick(first2), gap)
			if gap < 3 || gap > 4 {
				t.Fatalf("the gap holds %d ticks, want 3 (4 on a slow start): the test's timing went wrong", gap)
			}
			checkRunsOnce(t, all, job)
			missed := checkMissedOnce(t, all, job, last1, first2, gap)
			catchUps := recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventFinished && r.Trigger == TriggerCatchUp })
			wantCatchUps := 0
			if job == mpCatchUp {
				// One per missed event (any other missed event is checked
				// as strictly as the gap's), by its winner, of its last tick.
				wantCatchUps = len(missed)
				for _, m := range missed {
					started := recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventStarted && r.Instance == m.Instance })
					i := slices.IndexFunc(started, func(r mpRecord) bool { return r.Trigger == TriggerCatchUp && r.Tick.Equal(m.Last) })
					if i < 0 || i+1 == len(started) || !started[i+1].Tick.Equal(m.Tick) || started[i+1].Trigger != TriggerSchedule {
						t.Errorf("on %s, which reported the missed ticks, no catch-up run of %s right before the run of %s: %+v",
							m.Instance, fmtTick(m.Last), fmtTick(m.Tick), started)
					}
				}
			}
			if len(catchUps) != wantCatchUps {
				t.Fatalf("%d catch-up runs, want %d: %+v", len(catchUps), wantCatchUps, catchUps)
			}
			checkHistoryStream(t, srv, job, all, gap)
		})
	}
}

// firstRun is the earliest tick of job that recs ran (schedule).
func firstRun(recs []mpRecord, job string) time.Time {
	var first time.Time
	for _, r := range recs {
		if r.Kind == EventFinished && r.Job == job && r.Trigger == TriggerSchedule && (first.IsZero() || r.Tick.Before(first)) {
			first = r.Tick
		}
	}
	return first
}

func recordsOf(recs []mpRecord, job string, keep func(mpRecord) bool) []mpRecord {
	var out []mpRecord
	for _, r := range recs {
		if r.Job == job && keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// checkRunsOnce: no tick of job ran twice, as a scheduled run or as a
// catch-up run, across every instance of both generations.
func checkRunsOnce(t *testing.T, all []mpRecord, job string) {
	t.Helper()
	ranOn := map[time.Time]string{}
	for _, r := range recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventStarted }) {
		if prev, dup := ranOn[r.Tick]; dup {
			t.Fatalf("tick %s of %s ran twice: on %s and on %s (%s)", fmtTick(r.Tick), job, prev, r.Instance, r.Trigger)
		}
		ranOn[r.Tick] = r.Instance + "/" + string(r.Trigger)
	}
}

// checkMissedOnce: the ticks between the generations are reported missed
// by exactly one event, of gap ticks, by the instance that ran first2. Any
// other missed event (a tick every instance was too late for, on a busy
// machine) must be as exact: its ticks ran nowhere, its tick ran, and no
// two events share a tick. It returns every missed event of job.
func checkMissedOnce(t *testing.T, all []mpRecord, job string, last1, first2 time.Time, gap int) []mpRecord {
	t.Helper()
	missed := recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventMissed })
	ran := map[time.Time]string{} // scheduled tick → instance
	for _, r := range recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventStarted && r.Trigger == TriggerSchedule }) {
		ran[r.Tick] = r.Instance
	}
	var atGap []mpRecord
	claimed := map[time.Time]bool{}
	for _, m := range missed {
		if m.Missed != int(m.Last.Sub(m.First)/time.Second)+1 || !m.Tick.Equal(m.Last.Add(time.Second)) {
			t.Errorf("missed event %+v: its count, range and tick disagree", m)
		}
		if ran[m.Tick] != m.Instance {
			t.Errorf("missed event %+v: raised by %s, but tick %s ran on %q", m, m.Instance, fmtTick(m.Tick), ran[m.Tick])
		}
		for tick := m.First; !tick.After(m.Last); tick = tick.Add(time.Second) {
			if claimed[tick] {
				t.Errorf("tick %s reported missed twice", fmtTick(tick))
			}
			claimed[tick] = true
			if inst, ok := ran[tick]; ok {
				t.Errorf("tick %s reported missed by %s, but it ran on %s", fmtTick(tick), m.Instance, inst)
			}
		}
		if m.Last.After(last1) && m.First.Before(first2) {
			atGap = append(atGap, m)
		}
	}
	if len(atGap) != 1 {
		t.Fatalf("%d missed events for the gap between the generations, want exactly one: %+v", len(atGap), atGap)
	}
	if m := atGap[0]; m.Missed != gap || !m.First.Equal(last1.Add(time.Second)) || !m.Tick.Equal(first2) {
		t.Fatalf("missed event %+v, want %d ticks from %s, raised at tick %s", m, gap, fmtTick(last1.Add(time.Second)), fmtTick(first2))
	}
	if len(missed) > 1 {
		t.Logf("%d more missed events within a generation (a busy machine): %+v", len(missed)-1, missed)
	}
	return missed
}

// checkHistoryStream reads job's history from Redis with a fresh scheduler:
// the missed events and catch-up runs of the files, each once; each
// scheduled tick's run once.
func checkHistoryStream(t *testing.T, srv *redistest.Server, job string, all []mpRecord, gap int) {
	t.Helper()
	reader, err := New(WithRedis(srv.Client(t)), WithInstanceID("reader"), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer stopSched(t, reader)
	if err := reader.Register(job, "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	hist, err := reader.History(context.Background(), job, 0)
	if err != nil {
		t.Fatal(err)
	}
	var missed []HistoryEntry
	catchUps, runs := 0, map[time.Time]int{}
	for _, h := range hist {
		switch {
		case h.Kind == EventMissed:
			missed = append(missed, h)
		case h.Kind == EventFinished && h.Trigger == TriggerCatchUp:
			catchUps++
		case h.Kind == EventFinished:
			runs[h.Tick]++
		}
	}
	wantMissed := recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventMissed })
	wantCatchUps := recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventFinished && r.Trigger == TriggerCatchUp })
	wantRuns := recordsOf(all, job, func(r mpRecord) bool { return r.Kind == EventFinished && r.Trigger == TriggerSchedule })
	if len(missed) != len(wantMissed) || catchUps != len(wantCatchUps) || len(runs) != len(wantRuns) {
		t.Fatalf("history of %s: %d missed, %d catch-up runs, %d ticks run; the files say %d, %d, %d",
			job, len(missed), catchUps, len(runs), len(wantMissed), len(wantCatchUps), len(wantRuns))
	}
	if !slices.ContainsFunc(missed, func(h HistoryEntry) bool { return h.Missed == gap }) {
		t.Errorf("history of %s: no missed entry of %d ticks: %+v", job, gap, missed)
	}
	for tick, c := range runs {
		if c != 1 {
			t.Errorf("history of %s: tick %s run %d times", job, fmtTick(tick), c)
		}
	}
}
