package cronguard

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// The memory history keeps runs and skips in a compact slot; whatever the
// entry, History gives back exactly what was appended (with its ID). Each
// field of HistoryEntry and of Report is set in turn on a run and on a
// skip, so a field the compact slot would drop (one added later, say)
// fails here.
func TestMemoryHistoryRoundTripsEveryField(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	run := func() HistoryEntry {
		return HistoryEntry{Kind: EventFinished, Job: "j", Time: at, Instance: "i", Trigger: TriggerSchedule, Tick: at,
			Report: &Report{Job: "j", Instance: "i", Trigger: TriggerSchedule, Tick: at, Start: at, Duration: time.Second}}
	}
	skip := func() HistoryEntry {
		return HistoryEntry{Kind: EventSkipped, Job: "j", Time: at, Instance: "i", Trigger: TriggerSchedule, Tick: at, Skip: "overlap", Error: "busy"}
	}
	cases := map[string]HistoryEntry{"run": run(), "skip": skip(), "flag": {Kind: EventFlag, Job: "j", Enabled: new(bool), Reason: "r"}}
	for _, base := range []func() HistoryEntry{run, skip} {
		e := base()
		for i := range reflect.TypeFor[HistoryEntry]().NumField() {
			c := base()
			name := string(c.Kind) + " with a different " + reflect.TypeFor[HistoryEntry]().Field(i).Name
			if setOther(reflect.ValueOf(&c).Elem().Field(i)) && c.ID == "" {
				cases[name] = c
			}
		}
		if e.Report == nil {
			continue
		}
		for i := range reflect.TypeFor[Report]().NumField() {
			c := base()
			if setOther(reflect.ValueOf(c.Report).Elem().Field(i)) {
				cases["run whose report has a different "+reflect.TypeFor[Report]().Field(i).Name] = c
			}
		}
	}
	for name, want := range cases {
		t.Run(name, func(t *testing.T) {
			h := newMemoryHistory(3)
			ctx := context.Background()
			for range 4 { // wraps the ring
				if err := h.Append(ctx, want); err != nil {
					t.Fatal(err)
				}
			}
			got, err := h.History(ctx, want.Job, 1)
			if err != nil || len(got) != 1 {
				t.Fatalf("History: %v, %v", got, err)
			}
			if got[0].ID != "4" {
				t.Errorf("ID = %q, want 4", got[0].ID)
			}
			got[0].ID = ""
			if !reflect.DeepEqual(got[0], want) {
				t.Errorf("History gave\n%+v\nwant\n%+v", got[0], want)
			}
			for _, limit := range []int{0, -1, 10} { // all three kept: limits below 1 read all
				if all, err := h.History(ctx, want.Job, limit); err != nil || len(all) != 3 || all[0].ID != "4" || all[2].ID != "2" {
					t.Errorf("History(limit %d): %d entries, %v; want 3, newest first", limit, len(all), err)
				}
			}
			if want.Report != nil && got[0].Report == want.Report {
				t.Error("History returned the appended Report itself, not a copy")
			}
		})
	}
}

// setOther sets v to a value other than the one it has, and reports
// whether it could.
func setOther(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "x")
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 7)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Pointer:
		if !v.IsNil() {
			return false // the Report: its fields are set one by one
		}
		v.Set(reflect.New(v.Type().Elem()))
	case reflect.Interface:
		v.Set(reflect.ValueOf(errors.New("boom")))
	case reflect.Struct:
		if v.Type() != reflect.TypeFor[time.Time]() {
			return false
		}
		v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Minute)))
	default:
		return false
	}
	return true
}

// A run of the scheduler is kept compact: no object of its own in the
// ring, its ID made when read. Before, an entry held the run's Report and
// its ID string besides its 264 bytes, about 0.5 KB a run; then 272 B,
// the Report in the slot; now 96 B (history_slot.go).
func TestMemoryHistoryHeapPerRun(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	const runs = 1000
	s := quietScheduler(t, WithHistorySize(runs))
	if err := s.Register("j", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	e, err := s.lookup("j")
	if err != nil {
		t.Fatal(err)
	}
	tick := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	fire := func() { tick = tick.Add(time.Second); s.execute(s.base, e, TriggerSchedule, tick, nil) }
	fire() // the job's first run allocates its state once
	before := liveHeap()
	for range runs - 1 {
		fire()
	}
	per := float64(liveHeap()-before) / (runs - 1)
	runtime.KeepAlive(s)
	t.Logf("%.0f B of live heap per run kept in the history", per)
	// 96 B a slot, and the ring's chunks.
	if per > 130 {
		t.Errorf("%.0f B per run kept in the history, want at most 130", per)
	}
	h, err := s.History(context.Background(), "j", 0)
	if err != nil || len(h) != runs || h[0].ID != strconv.Itoa(runs) || h[0].Report == nil || !h[0].Report.Tick.Equal(tick) {
		t.Fatalf("history: %d entries, err %v; want %d, the newest first", len(h), err, runs)
	}
}

// The default keeps the newest 100 entries a job, and a job's ring grows
// as it fills: one entry costs a chunk of historyChunk slots, a full ring
// exactly 100 slots.
func TestMemoryHistoryDefaultSizeAndLazyRing(t *testing.T) {
	s := quietScheduler(t)
	if err := s.Register("j", "* * * * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	tickAt(t, s, "j", t0)
	m := s.history.storeOf(s).(*memoryHistory)
	slots := func() (n int) {
		r := m.ring("j")
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range r.chunks {
			n += len(c)
		}
		return n
	}
	if n := slots(); n != historyChunk {
		t.Errorf("ring of a job that ran once: %d slots, want %d", n, historyChunk)
	}
	for k := 1; k < 130; k++ {
		tickAt(t, s, "j", t0.Add(time.Duration(k)*time.Second))
	}
	h, err := s.History(context.Background(), "j", 0)
	if err != nil || len(h) != 100 || h[0].ID != "130" || h[99].ID != "31" {
		t.Fatalf("history: %d entries (%v), want the newest 100 of 130", len(h), err)
	}
	if n := slots(); n != 100 {
		t.Errorf("full ring: %d slots, want 100", n)
	}
}

// A finished run nobody but the memory history hears goes straight into
// its ring (appendDone), with no event built: its entry is the one the
// event path keeps (a logger that takes Info sends it there), but for
// its time, the run's end. A middleware that returns without running the
// job leaves no start: the entry is stamped with the clock then.
func TestDirectHistoryEntryIsTheEventPaths(t *testing.T) {
	ctx := context.Background()
	entryOf := func(s *Scheduler, job string) HistoryEntry {
		t.Helper()
		if _, err := s.RunTick(ctx, job, t0); err != nil {
			t.Fatal(err)
		}
		h, err := s.History(ctx, job, 10)
		if err != nil || len(h) != 1 {
			t.Fatalf("history of %s: %+v, %v; want one entry", job, h, err)
		}
		return h[0]
	}
	noop := JobFunc(func(context.Context) error { return nil })
	direct := quietScheduler(t)
	logged := quietScheduler(t, WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if !direct.reportUnkept() || direct.logEnabled(slog.LevelInfo) || !logged.logEnabled(slog.LevelInfo) {
		t.Fatal("the two schedulers do not take the two paths")
	}
	for _, s := range []*Scheduler{direct, logged} {
		if err := s.Register("j", "@every 1m", noop); err != nil {
			t.Fatal(err)
		}
	}
	d, l := entryOf(direct, "j"), entryOf(logged, "j")
	if d.Report == nil || l.Report == nil {
		t.Fatalf("entries without their Report: %+v, %+v", d, l)
	}
	if end := d.Report.Start.Add(d.Report.Duration); !d.Time.Equal(end) {
		t.Errorf("direct entry's time %s, want the run's end %s", d.Time, end)
	}
	if l.Time.Before(l.Report.Start.Add(l.Report.Duration)) {
		t.Errorf("logged entry's time %s before the run's end", l.Time)
	}
	for _, e := range []*HistoryEntry{&d, &l} {
		e.Time, e.Report.Start, e.Report.Duration = time.Time{}, time.Time{}, 0
	}
	if !reflect.DeepEqual(d, l) {
		t.Errorf("direct entry\n%+v\nwant the event path's\n%+v", d, l)
	}

	skipping := quietScheduler(t, WithMiddleware(func(Job) Job { return noop }))
	if err := skipping.Register("j", "@every 1m", noop); err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if e := entryOf(skipping, "j"); e.Time.Before(before) {
		t.Errorf("entry of a run whose middleware did not run the job: time %s, want the clock's", e.Time)
	}
}

// testErr is an error type of a user's, for errors.As.
type testErr struct{ msg string }

func (e *testErr) Error() string { return e.msg }

// A run that goes straight into the memory history (appendDone) is kept
// once: the job's last report is read from the ring, also after its slot
// was reused by newer entries (skips), and a later failed run, which goes
// through its event, is the last report again with its own error (the
// user's type, not the history's bounded copy of it).
func TestLastReportKeptInTheRing(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s := quietScheduler(t, WithKillSwitch(ks), WithHistorySize(3))
	var fail atomic.Bool
	if err := s.Register("j", "@every 1m", JobFunc(func(context.Context) error {
		if fail.Load() {
			return &testErr{"boom"}
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	e, _ := s.lookup("j")
	ctx := context.Background()
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	last := func() *Report {
		info, err := s.Job("j")
		if err != nil {
			t.Fatal(err)
		}
		return info.Last
	}

	if _, err := s.RunTick(ctx, "j", at(0)); err != nil {
		t.Fatal(err)
	}
	if l := last(); l == nil || !l.Tick.Equal(at(0)) || l.Outcome() != "done" || e.last != inRing {
		t.Fatalf("last after a run: %+v (in the ring: %v)", l, e.last == inRing)
	}
	_ = ks.SetEnabled(ctx, "j", false, "test")
	for m := 1; m <= 4; m++ { // four skips: the run's slot in the ring of 3 is reused
		if _, err := s.RunTick(ctx, "j", at(m)); !errors.Is(err, ErrKilled) {
			t.Fatalf("tick %d: %v, want killed", m, err)
		}
	}
	if h, _ := s.History(ctx, "j", 0); len(h) != 3 || h[2].Kind != EventSkipped {
		t.Fatalf("history %+v, want three skips", h)
	}
	if l := last(); l == nil || !l.Tick.Equal(at(0)) || l.Outcome() != "done" {
		t.Fatalf("last after its slot was reused: %+v, want tick %s's run", l, at(0))
	}
	_ = ks.SetEnabled(ctx, "j", true, "test")
	fail.Store(true)
	_, _ = s.RunTick(ctx, "j", at(5))
	var te *testErr
	if l := last(); l == nil || !l.Tick.Equal(at(5)) || !errors.As(l.Err, &te) || e.last == inRing {
		t.Fatalf("last after a failed run: %+v, want tick %s's with its *testErr", l, at(5))
	}
	fail.Store(false)
	if _, err := s.RunTick(ctx, "j", at(6)); err != nil {
		t.Fatal(err)
	}
	if l := last(); l == nil || !l.Tick.Equal(at(6)) || l.Err != nil {
		t.Fatalf("last after a run: %+v, want tick %s's", l, at(6))
	}
}

// The compact slot packs times, counts, triggers and skip reasons into
// small fields and keeps what a ring's entries share once. Every entry it
// cannot pack that way is kept whole, and all of them come back exactly as
// appended, in one ring, whatever came before them: a second time zone
// after the ring's, counts past 32 bits or below zero, times past the
// years int64 nanoseconds cover, an unknown trigger or skip reason,
// another instance.
func TestMemoryHistorySlotKeepsWhatItCannotPack(t *testing.T) {
	x, y := time.FixedZone("X", 3600), time.FixedZone("Y", -7200)
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, x)
	run := func(edit func(e *HistoryEntry, r *Report)) HistoryEntry {
		r := &Report{Job: "j", Instance: "i", Trigger: TriggerSchedule, Tick: at, Start: at.Add(time.Millisecond),
			Duration: time.Second, Batches: 2, Processed: 3, Failed: 1, Duplicates: 4, Token: 9, More: true}
		e := HistoryEntry{Kind: EventFinished, Job: "j", Time: at.Add(time.Second), Instance: "i", Trigger: TriggerSchedule, Tick: at, Report: r}
		if edit != nil {
			edit(&e, r)
		}
		return e
	}
	skip := func(edit func(e *HistoryEntry)) HistoryEntry {
		e := HistoryEntry{Kind: EventSkipped, Job: "j", Time: at, Instance: "i", Trigger: TriggerSchedule, Tick: at, Skip: "overlap", Error: "busy"}
		if edit != nil {
			edit(&e)
		}
		return e
	}
	entries := []HistoryEntry{
		run(nil), // sets the ring's zone to X
		run(func(e *HistoryEntry, r *Report) { e.Time = at.In(y) }),
		run(func(e *HistoryEntry, r *Report) { r.Start = at.In(y) }),
		run(func(e *HistoryEntry, r *Report) { e.Tick, r.Tick = at.UTC(), at.UTC() }),
		run(func(e *HistoryEntry, r *Report) { e.Tick, r.Tick = at.Local(), at.Local() }),
		run(func(e *HistoryEntry, r *Report) { e.Tick, r.Tick = time.Time{}, time.Time{} }),
		run(func(e *HistoryEntry, r *Report) { e.Tick, r.Tick = time.Time{}.In(x), time.Time{}.In(x) }),
		run(func(e *HistoryEntry, r *Report) { r.Start = time.Date(3000, 1, 1, 0, 0, 0, 0, x) }),
		run(func(e *HistoryEntry, r *Report) { r.Processed = math.MaxUint32 + 1 }),
		run(func(e *HistoryEntry, r *Report) { r.Failed = -1 }),
		run(func(e *HistoryEntry, r *Report) {
			r.Err, e.Error, r.By, e.By, r.Trigger, e.Trigger = &testErr{"boom"}, "boom", "ann", "ann", TriggerManual, TriggerManual
		}),
		run(func(e *HistoryEntry, r *Report) { r.Trigger, e.Trigger = "other", "other" }),
		run(func(e *HistoryEntry, r *Report) { r.Instance, e.Instance = "", "" }),
		run(func(e *HistoryEntry, r *Report) { r.Tripped, r.More, r.Token = true, false, -3 }),
		skip(nil),
		skip(func(e *HistoryEntry) { e.Skip, e.By = "weird", "ann" }),
		skip(func(e *HistoryEntry) { e.Skip, e.Trigger = "killed", TriggerCatchUp }),
		skip(func(e *HistoryEntry) { e.Skip = "" }),
		{Kind: EventMissed, Job: "j", Time: at, Missed: 2, First: at, Last: at.Add(time.Second)},
	}
	h := newMemoryHistory(len(entries))
	ctx := context.Background()
	for _, e := range entries {
		if err := h.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := h.History(ctx, "j", 0)
	if err != nil || len(got) != len(entries) {
		t.Fatalf("History: %d entries, %v", len(got), err)
	}
	for i, want := range entries {
		g := got[len(entries)-1-i]
		if g.ID != strconv.Itoa(i+1) {
			t.Errorf("entry %d: ID %q", i, g.ID)
		}
		g.ID = ""
		if !reflect.DeepEqual(g, want) {
			t.Errorf("entry %d came back\n%+v\nwant\n%+v", i, g, want)
			if g.Report != nil && want.Report != nil {
				t.Errorf("its report\n%+v\nwant\n%+v", *g.Report, *want.Report)
			}
		}
	}
}

// A time read from the clock carries a monotonic reading, which no store
// keeps: the memory history gives back the same instant, in the same
// location, without it.
func TestMemoryHistoryDropsOnlyTheMonotonicReading(t *testing.T) {
	now := time.Now()
	h := newMemoryHistory(2)
	e := HistoryEntry{Kind: EventFinished, Job: "j", Time: now, Trigger: TriggerSchedule, Tick: now,
		Report: &Report{Job: "j", Trigger: TriggerSchedule, Tick: now, Start: now}}
	if err := h.Append(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	got, _ := h.History(context.Background(), "j", 1)
	if len(got) != 1 || got[0].Report == nil {
		t.Fatalf("History: %+v", got)
	}
	for _, tm := range []time.Time{got[0].Time, got[0].Tick, got[0].Report.Start, got[0].Report.Tick} {
		if tm != now.Round(0) {
			t.Errorf("time came back as %v, want %v (the clock's reading without its monotonic part)", tm, now.Round(0))
		}
	}
}

// addDone writes a run's Report from the run's stack: when the Report
// has no compact form it keeps a copy, never the Report itself, and the
// job's last report reads it back.
func TestMemoryHistoryAddDoneKeepsACopyOfWhatItCannotPack(t *testing.T) {
	m := newMemoryHistory(3).(*memoryHistory)
	e := &entry{}
	zone := time.FixedZone("Z", 60)
	rep := Report{Job: "j", Instance: "i", Trigger: TriggerSchedule, Tick: t0.In(zone), Start: t0.In(zone)}
	at1, at2 := t0, t0.Add(time.Second)
	m.addDone(e, &rep, &at1)
	rep2 := rep
	rep2.Tick, rep2.Start = t0.In(time.FixedZone("W", 120)), t0.Add(time.Second).In(time.FixedZone("W", 120)) // a second zone: kept whole
	want := rep2
	m.addDone(e, &rep2, &at2)
	rep2.Job, rep2.Processed = "changed", 99 // the run's stack is reused
	if got := e.ring.Load().lastDone(); got == nil || !reflect.DeepEqual(*got, want) {
		t.Fatalf("lastDone = %+v, want %+v", got, want)
	}
	h, _ := m.History(context.Background(), "j", 0)
	if len(h) != 2 || h[0].Report == nil || !reflect.DeepEqual(*h[0].Report, want) || h[0].Time != t0.Add(time.Second) {
		t.Fatalf("History = %+v, want the second run first, as added", h)
	}
	if !reflect.DeepEqual(*h[1].Report, rep) {
		t.Errorf("the compact run came back as %+v, want %+v", *h[1].Report, rep)
	}
}

// A slot is 96 bytes: 1,000 jobs that keep 100 runs each hold 9.6 MB of
// them (272 B a slot, 27 MB, before). A field added to memEntry must fit.
func TestMemoryHistorySlotSize(t *testing.T) {
	if n := unsafe.Sizeof(memEntry{}); n > 96 {
		t.Errorf("memEntry is %d B, want at most 96", n)
	}
}

// A program that sets time.Local = time.UTC gets times from time.Now
// whose location is the UTC location itself, not nil as .UTC() gives:
// they read the same but are not ==, and the history gives back each as
// it was. The check runs in a process of its own, where setting
// time.Local races with nothing.
func TestMemoryHistoryLocalSetToUTC(t *testing.T) {
	if os.Getenv("CRONGUARD_LOCAL_UTC") == "" {
		// Here time.Local is not UTC: a time whose location is the UTC
		// pointer (made as time.Now makes it there) is kept whole.
		at := t0.Round(0)
		(*struct {
			wall uint64
			ext  int64
			loc  *time.Location
		})(unsafe.Pointer(&at)).loc = time.UTC
		if at == at.UTC() {
			t.Fatal("could not make a time whose location is the UTC pointer")
		}
		checkLocalUTC(t, at, false)
		cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryHistoryLocalSetToUTC$", "-test.count=1")
		cmd.Env = append(os.Environ(), "CRONGUARD_LOCAL_UTC=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("with time.Local = time.UTC: %v\n%s", err, out)
		}
		return
	}
	time.Local = time.UTC
	checkLocalUTC(t, time.Now().Round(0), true)
}

// checkLocalUTC adds a run whose times are now (and a UTC tick) and reads
// it back exactly; compact says whether its slot is compact.
func checkLocalUTC(t *testing.T, now time.Time, compact bool) {
	t.Helper()
	m := newMemoryHistory(2).(*memoryHistory)
	e := &entry{}
	rep := Report{Job: "j", Trigger: TriggerSchedule, Tick: now.UTC(), Start: now, Duration: time.Second}
	at := now.Add(time.Second)
	m.addDone(e, &rep, &at)
	r := e.ring.Load()
	if got := r.lastDone(); got == nil || !reflect.DeepEqual(*got, rep) || got.Start != now || got.Tick != now.UTC() {
		t.Errorf("last report %+v, want %+v", got, rep)
	}
	h, _ := m.History(context.Background(), "j", 1)
	if len(h) != 1 || h[0].Time != at || !reflect.DeepEqual(*h[0].Report, rep) {
		t.Errorf("History %+v, want the run at %v", h, at)
	}
	if kind := r.slot(0, 2).kind; (kind == slotRun) != compact {
		t.Errorf("slot kind %d, want compact %v", kind, compact)
	}
}

// A ring keeps one location besides UTC and Local, but not the first one
// it saw for good: once no live slot uses it, another can take its place.
// A tick parsed from "+02:00" (a RunTick from an admin) must not make every
// later run of a Europe/Berlin job a whole entry for the life of the process.
func TestMemoryHistoryRingLocationIsNotSticky(t *testing.T) {
	berlin := time.FixedZone("Europe/Berlin", 3600) // stands for a loaded zone: any *Location other than UTC and Local
	odd, err := time.Parse(time.RFC3339, "2026-11-27T14:00:00+02:00")
	if err != nil {
		t.Fatal(err)
	}
	// One entry with two such locations: one is the ring's, the other's
	// time makes the entry whole, and both come back.
	two := newMemoryHistory(2).(*memoryHistory)
	rep := Report{Job: "j", Trigger: TriggerSchedule, Tick: t0.In(berlin), Start: odd}
	at := t0.Local()
	two.addDone(&entry{}, &rep, &at)
	if h, _ := two.History(context.Background(), "j", 0); len(h) != 1 || !reflect.DeepEqual(*h[0].Report, rep) {
		t.Fatalf("a run with two locations came back as %+v, want %+v", h, rep)
	}

	const size = 10
	m := newMemoryHistory(size).(*memoryHistory)
	e := &entry{}
	add := func(tick time.Time) {
		rep := Report{Job: "j", Trigger: TriggerSchedule, Tick: tick, Start: t0.Local()}
		at := t0.Local()
		m.addDone(e, &rep, &at)
	}
	add(odd)
	for i := range 3 * size {
		add(t0.Add(time.Duration(i) * time.Second).In(berlin))
	}
	r := e.ring.Load()
	r.mu.Lock()
	for i := range size {
		if s := r.slot(i, size); s.kind != slotRun {
			t.Errorf("slot %d: kind %d, want every run of the job compact once the odd tick left the ring", i, s.kind)
		}
	}
	if r.meta.loc != berlin || r.meta.locUses != size {
		t.Errorf("ring location %v used by %d times, want %v by %d", r.meta.loc, r.meta.locUses, berlin, size)
	}
	r.mu.Unlock()
	h, _ := m.History(context.Background(), "j", 0)
	if len(h) != size || h[0].Tick != t0.Add(time.Duration(3*size-1)*time.Second).In(berlin) {
		t.Errorf("History %+v", h)
	}
}
