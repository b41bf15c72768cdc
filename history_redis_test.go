package cronguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// histSched returns a quiet scheduler named id on the Redis srv, with the
// history capped at size, stopped at the end of the test.
func histSched(t *testing.T, srv *redistest.Server, id string, size int) (*Scheduler, *recorder) {
	t.Helper()
	s, rec := redisSched(t, id, srv.Client(t), WithHistorySize(size))
	if err := s.Register("j", "@every 1m", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, id+"'s kill switch loaded", func() bool {
		info, _ := s.Job("j")
		return info.EnabledErr == nil
	})
	return s, rec
}

// TestRedisHistoryThreeInstances: 3 schedulers share one real Redis; every
// tick is run by one of them, and every scheduler's History shows each run
// exactly once, with the instance that ran it. The stream stays capped. A
// tick that all three skip because the switch is off is recorded once.
func TestRedisHistoryThreeInstances(t *testing.T) {
	// Small stream nodes make MAXLEN ~ trim close to the cap.
	srv := redistest.Start(t, redistest.Args("--stream-node-max-entries", "10"))
	const size, ticks = 20, 60
	var scheds []*Scheduler
	var recs []*recorder
	for i := range 3 {
		s, rec := histSched(t, srv, fmt.Sprintf("i%d", i+1), size)
		scheds, recs = append(scheds, s), append(recs, rec)
	}
	ranBy := map[time.Time]string{} // tick → instance that ran it
	for k := range ticks {
		tick := t0.Add(time.Duration(k) * time.Minute)
		reps := make([]Report, 3)
		var wg sync.WaitGroup
		for i, s := range scheds {
			wg.Go(func() { reps[i] = tickAt(t, s, "j", tick) })
		}
		wg.Wait()
		for _, r := range reps {
			if skipOf(r) == "" {
				if prev, dup := ranBy[tick]; dup {
					t.Fatalf("tick %s ran on %s and %s", tick, prev, r.Instance)
				}
				ranBy[tick] = r.Instance
			}
		}
		// Each instance writes in the background: wait for this tick's run
		// to be recorded, so the stream's order is the ticks' order.
		waitFor(t, 5*time.Second, "tick recorded", func() bool {
			h, err := scheds[k%3].History(context.Background(), "j", 1)
			return err == nil && len(h) == 1 && h[0].Tick.Equal(tick)
		})
	}
	if len(ranBy) != ticks {
		for _, r := range recs {
			for _, ev := range r.kind(EventSkipped) {
				t.Logf("%s %s %s %v", ev.Instance, ev.Tick, ev.Skip, ev.Err)
			}
		}
		t.Fatalf("%d of %d ticks ran", len(ranBy), ticks)
	}
	last := t0.Add((ticks - 1) * time.Minute)
	for _, s := range scheds {
		waitFor(t, 5*time.Second, "the last run in "+s.cfg.instance+"'s view", func() bool {
			h, err := s.History(context.Background(), "j", 1)
			return err == nil && len(h) == 1 && h[0].Tick.Equal(last)
		})
		h, err := s.History(context.Background(), "j", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != size {
			t.Errorf("%s: History(0) has %d entries; want the cap, %d", s.cfg.instance, len(h), size)
		}
		seen := map[time.Time]int{}
		for i, e := range h {
			if e.Kind != EventFinished || e.Report == nil {
				t.Fatalf("%s: entry %d is %+v; want only runs (no tick_taken skips)", s.cfg.instance, i, e)
			}
			seen[e.Tick]++
			if want := ranBy[e.Tick]; e.Instance != want || e.Report.Instance != want {
				t.Errorf("%s: run of tick %s says instance %q/%q; it ran on %q", s.cfg.instance, e.Tick, e.Instance, e.Report.Instance, want)
			}
			if want := last.Add(-time.Duration(i) * time.Minute); !e.Tick.Equal(want) {
				t.Errorf("%s: entry %d is tick %s; want %s (newest first, none missing)", s.cfg.instance, i, e.Tick, want)
			}
		}
		for tick, n := range seen {
			if n != 1 {
				t.Errorf("%s: tick %s appears %d times", s.cfg.instance, tick, n)
			}
		}
	}
	key := scheds[0].history.storeOf(scheds[0]).(*redisHistory).key("j")
	n, err := srv.Client(t).XLen(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n > size+10 { // MAXLEN ~ trims whole nodes of 10
		t.Errorf("XLEN %s = %d after %d runs; want at most the cap %d + one node of 10", key, n, ticks, size)
	}

	// The switch goes off (one flip, by bob); the three skip the next tick.
	ctx := context.Background()
	if err := scheds[0].SetEnabled(WithActor(ctx, "bob"), "j", false, "bad data"); err != nil {
		t.Fatal(err)
	}
	// The flip is written by i1's writer and a skip by whichever instance's
	// writer comes first: wait for the flip, so the order checked below is
	// the order the events happened in.
	waitFor(t, 15*time.Second, "the flip recorded", func() bool {
		h, err := scheds[2].History(ctx, "j", 1)
		return err == nil && len(h) == 1 && h[0].Kind == EventFlag
	})
	for _, s := range scheds {
		waitFor(t, 5*time.Second, s.cfg.instance+" sees the switch off", func() bool {
			info, _ := s.Job("j")
			return !info.Enabled
		})
	}
	off := last.Add(time.Minute)
	for _, s := range scheds {
		if r := tickAt(t, s, "j", off); skipOf(r) != "killed" {
			t.Fatalf("%s: tick while off = %v; want skipped killed", s.cfg.instance, r)
		}
	}
	var h []HistoryEntry
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		h, _ = scheds[2].History(ctx, "j", 5)
		if len(h) > 0 && h[0].Kind == EventSkipped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the skip not recorded within 15s; newest entries: %s", strings.Join(kinds(h), " "))
		}
	}
	time.Sleep(200 * time.Millisecond) // let the other writers add theirs, if they were to
	h, _ = scheds[2].History(ctx, "j", 5)
	if got := strings.Join(kinds(h[:3]), " "); got != "skipped:killed flag finished" {
		t.Errorf("newest entries = %q; want one skip for the 3 instances, the flip, the last run", got)
	}
	if f := h[1]; f.By != "bob" || f.Reason != "bad data" || f.Instance != "i1" {
		t.Errorf("flip entry %+v: want by bob on i1, with the reason", f)
	}
}

// TestRedisHistoryGarbage: entries that Append did not write, huge ones and
// a key of the wrong type never panic; they give bounded errors.
func TestRedisHistoryGarbage(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s, rec := histSched(t, srv, "i1", 100)
	ctx := context.Background()
	key := "cronguard:history:{j}"
	huge := strings.Repeat("x", 100<<10)
	add := func(values ...any) {
		t.Helper()
		if err := c.XAdd(ctx, &redis.XAddArgs{Stream: key, Values: values}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	add("e", "not json "+strings.Repeat("é", 300))
	add("x", "y")
	add("e", `{"kind":"run"}`)
	add("e", `{"kind":"run","report":{"processed":"abc"}}`)
	add("e", `{"kind":"boom","job":"j"}`)
	add("e", huge)
	add("e", `{"kind":"skip","skip":"`+huge[:5000]+`","error":"`+huge[:10000]+`","time":"2026-01-01T00:00:00Z"}`)
	h, err := s.History(ctx, "j", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 7 {
		t.Fatalf("%d entries, want 7", len(h))
	}
	for i, e := range h[1:] {
		if e.Kind != "" || e.Error == "" || len(e.Error) > 600 || e.ID == "" {
			t.Errorf("garbage entry %d: kind %q, error %d bytes %q; want unreadable (empty kind) with a bounded error", i, e.Kind, len(e.Error), e.Error)
		}
	}
	if e := h[0]; e.Kind != EventSkipped || len(e.Skip) > 250 || len(e.Error) > historyTextMax+30 {
		t.Errorf("readable entry with huge texts: kind %q, skip %d bytes, error %d bytes; want them cut", e.Kind, len(e.Skip), len(e.Error))
	}

	// A key of the wrong type: reading is a bounded error, writing an
	// event, and the run is not failed.
	if err := c.Del(ctx, key).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, key, huge, 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err = s.History(ctx, "j", 10)
	if !errors.Is(err, ErrBackend) || len(err.Error()) > 600 || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Errorf("History on a string key: %v; want a bounded ErrBackend saying WRONGTYPE", err)
	}
	rep, err := s.RunManually(ctx, "j")
	if err != nil || rep.Outcome() != "done" {
		t.Fatalf("run with the history key broken = %v, %v; want done", rep, err)
	}
	waitFor(t, 5*time.Second, "EventHistory", func() bool { return len(rec.kind(EventHistory)) > 0 })
	if ev := rec.kind(EventHistory)[0]; !errors.Is(ev.Err, ErrBackend) || !strings.Contains(ev.Err.Error(), "WRONGTYPE") {
		t.Errorf("EventHistory = %v; want ErrBackend with WRONGTYPE", ev.Err)
	}
}

// TestRedisHistoryStoredKinds: the stream keeps the kind names of before
// HistoryEntry.Kind became an EventKind ("run", "skip"), so old and new
// instances read each other's entries; both spellings read back as the
// EventKind, and what is neither is unreadable (Kind "").
func TestRedisHistoryStoredKinds(t *testing.T) {
	r := &redisHistory{prefix: defaultKeyPrefix, size: 10}
	tick := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for kind, stored := range map[EventKind]string{EventFinished: "run", EventSkipped: "skip", EventMissed: "missed", EventFlag: "flag"} {
		e := HistoryEntry{Kind: kind, Job: "j", Trigger: TriggerSchedule, Tick: tick, Skip: "locked", Report: &Report{Job: "j"}}
		c, _, err := r.newCall(&e, nil)
		if err != nil {
			t.Fatal(err)
		}
		if raw := string(c.entry); !strings.Contains(raw, `"kind":"`+stored+`"`) {
			t.Errorf("%s is stored as %s; want kind %q", kind, raw, stored)
		}
		if skip := c.skip; (kind == EventSkipped) != (skip != "") {
			t.Errorf("%s: lastskip argument %q", kind, skip)
		}
		for _, name := range []string{stored, string(kind)} {
			m := redis.XMessage{ID: "1-0", Values: map[string]any{"e": `{"kind":"` + name + `","report":{}}`}}
			if got := parseHistoryEntry("j", m); got.Kind != kind || got.Error != "" {
				t.Errorf("stored kind %q reads as %q (error %q); want %s", name, got.Kind, got.Error, kind)
			}
		}
	}
	for _, name := range []string{"invalid", "", "started", "boom"} {
		m := redis.XMessage{ID: "1-0", Values: map[string]any{"e": `{"kind":"` + name + `","report":{}}`}}
		if got := parseHistoryEntry("j", m); got.Kind != "" || got.Error == "" {
			t.Errorf("stored kind %q reads as %q (error %q); want unreadable", name, got.Kind, got.Error)
		}
	}
}

// TestRedisHistoryRoundTripsWhatItWrote: entries written by appendBatch (the
// hand-written JSON) into a real Redis read back exactly as the bytes
// json.Marshal used to write read (refStoredJSON), for random and
// adversarial entries; an entry whose time JSON cannot hold fails alone,
// with encoding/json's error, and the others of its batch are recorded.
func TestRedisHistoryRoundTripsWhatItWrote(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	hs, err := NewRedisHistory(srv.Client(t), WithHistorySize(1000))
	if err != nil {
		t.Fatal(err)
	}
	h := hs.(*redisHistory)
	const job = "j<&\u2028\xff\""
	rnd := rand.New(rand.NewPCG(3, 4))
	times, errs := jsonTimes(t), jsonErrors(rnd)
	times = slices.DeleteFunc(times, func(tm time.Time) bool { _, err := json.Marshal(tm); return err != nil })
	times = append(times, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)) // one that fails, now and then
	var want []HistoryEntry
	readable := 0
	for range 5 {
		batch := make([]HistoryEntry, 100)
		for i := range batch {
			fillRandom(t, rnd, reflect.ValueOf(&batch[i]).Elem(), i%10 == 0, times, errs)
			batch[i].Job, batch[i].Kind = job, EventFinished
			if batch[i].Report == nil { // a scheduled skip may be deduplicated: this one is not
				batch[i].Kind = []EventKind{EventSkipped, EventMissed, EventFlag}[i%3]
				batch[i].Trigger = TriggerManual
			}
		}
		got := h.appendBatch(ctx, batch)
		for i, e := range batch {
			ref, refErr := refStoredJSON(e)
			if (refErr != nil) != (got != nil && got[i] != nil) {
				t.Fatalf("entry %d: json.Marshal error %v, appendBatch error %v", i, refErr, got)
			}
			if refErr != nil {
				continue
			}
			w := parseHistoryEntry(job, redis.XMessage{ID: "0-1", Values: map[string]any{"e": string(ref)}})
			if w.Kind != "" { // else too big to read (historyEntryMax), as before
				readable++
			}
			want = append(want, w)
		}
	}
	if len(want) < 400 || readable < 300 {
		t.Fatalf("%d of 500 entries encodable, %d readable: the cases are off", len(want), readable)
	}
	read, err := h.History(ctx, job, 1000)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(read) // oldest first, as written
	if len(read) != len(want) {
		t.Fatalf("read %d entries back, want %d", len(read), len(want))
	}
	for i := range read {
		read[i].ID, want[i].ID = "", ""
		if !reflect.DeepEqual(read[i], want[i]) {
			t.Fatalf("entry %d reads back as\n%#v\nwant\n%#v", i, read[i], want[i])
		}
	}
}

// BenchmarkRedisHistoryAppendBatch: the history writer's batch of 100 runs'
// entries to a real Redis, per entry (one pipeline per batch).
func BenchmarkRedisHistoryAppendBatch(b *testing.B) {
	srv := redistest.Start(b)
	hs, err := NewRedisHistory(srv.Client(b))
	if err != nil {
		b.Fatal(err)
	}
	h := hs.(*redisHistory)
	tick := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	batch := make([]HistoryEntry, 100)
	for i := range batch {
		job := fmt.Sprintf("job-%d", i)
		batch[i] = HistoryEntry{Kind: EventFinished, Job: job, Time: tick, Instance: "bench", Trigger: TriggerSchedule, Tick: tick,
			Report: &Report{Job: job, Trigger: TriggerSchedule, Tick: tick, Instance: "bench", Start: tick, Duration: time.Millisecond, Token: 42}}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if errs := h.appendBatch(ctx, batch); errs != nil {
			b.Fatal(errs)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/entry")
}

// TestRedisHistoryEvalShaAsScript: the EVALSHA a batch sends for an entry
// is the command Script.EvalSha builds from the keys and arguments Append
// gives Script.Run, argument for argument, and it runs the script: the
// entry lands in the stream, capped as MAXLEN says.
func TestRedisHistoryEvalShaAsScript(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	hs, err := NewRedisHistory(rdb, WithHistorySize(300))
	if err != nil {
		t.Fatal(err)
	}
	h := hs.(*redisHistory)
	tick := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, e := range []HistoryEntry{
		{Kind: EventFinished, Job: "j", Time: tick, Report: &Report{Job: "j", Tick: tick}},
		{Kind: EventSkipped, Job: "j", Time: tick, Trigger: TriggerSchedule, Tick: tick, Skip: "killed"},
	} {
		c, _, err := h.newCall(&e, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := rdb.Pipeline()
		viaScript := historyAppend.EvalSha(ctx, p, []string{c.stream, c.lastSkip}, h.args(c)...)
		viaDo := p.Do(ctx, h.evalSha(c)...)
		p.Discard()
		if !reflect.DeepEqual(viaScript.Args(), viaDo.Args()) {
			t.Errorf("%s: EVALSHA\n%#v\nScript.EvalSha\n%#v", e.Kind, viaDo.Args(), viaScript.Args())
		}
		if c.stream != "cronguard:history:{j}" || c.lastSkip != "cronguard:history:{j}:lastskip" {
			t.Errorf("keys %q, %q", c.stream, c.lastSkip)
		}
	}
	es := make([]HistoryEntry, 1000)
	for i := range es {
		es[i] = HistoryEntry{Kind: EventFinished, Job: "j", Time: tick, Report: &Report{Job: "j", Batches: i}}
	}
	for range 2 { // the script is not loaded the first time: entry by entry
		if errs := h.appendBatch(ctx, es); errs != nil {
			t.Fatal(errs)
		}
	}
	n, err := rdb.XLen(ctx, h.key("j")).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < 300 || n > 300+100 { // MAXLEN ~ 300: trimmed in whole nodes of 100
		t.Errorf("stream of %d entries; want 300 to 400 (MAXLEN ~ 300)", n)
	}
}

// TestRedisClusterHistoryBatch: on a 3-master Redis Cluster, a batch of
// entries of jobs whose streams live on different masters is recorded
// whole, through the script loaded entry by entry the first time and
// through EVALSHA in one pipeline after.
func TestRedisClusterHistoryBatch(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, 3)
	checkClusterKeys(t, cl, clusterJobs)
	hs, err := NewRedisHistory(cl.ClusterClient(t))
	if err != nil {
		t.Fatal(err)
	}
	h, ctx := hs.(*redisHistory), context.Background()
	var es []HistoryEntry
	for _, job := range clusterJobs {
		es = append(es, HistoryEntry{Kind: EventFinished, Job: job, Time: t0, Report: &Report{Job: job}},
			HistoryEntry{Kind: EventSkipped, Job: job, Time: t0, Trigger: TriggerSchedule, Tick: t0, Skip: "killed"})
	}
	for round := range 2 {
		if errs := h.appendBatch(ctx, es); errs != nil {
			t.Fatalf("round %d: %v", round, errs)
		}
	}
	for _, job := range clusterJobs {
		got, err := h.History(ctx, job, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 || got[0].Kind != EventFinished || got[1].Kind != EventSkipped || got[2].Kind != EventFinished {
			t.Errorf("%s: %+v; want run, skip (once), run", job, got)
		}
	}
}
