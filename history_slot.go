package cronguard

import (
	"math"
	"strconv"
	"time"
)

// memEntry is how the memory history's ring keeps one entry: 96 bytes,
// with one pointer, nil for a run that ended without error. Runs and
// skips, whatever their outcome, are compact: the entry's ID is its
// sequence number (formatted when read), its times are Unix nanoseconds
// with a two-bit zone each (see slotZone), its trigger and skip reason are
// small numbers, its counts 32 bits, and what every entry of the ring
// shares (job, instance, a time zone other than UTC and Local) is kept
// once, in the ring. What a run without error does not have (an error
// value, who asked, a skip reason none of the six) is in rare. Any other
// entry (missed ticks, flips, or one whose fields do not fit that shape)
// is kept whole in rare.full.
//
// Why it is small: a ring is written by every run, usually of a job whose
// slot nobody touched for a hundred runs, so each cache line of a slot is
// a miss; and 1,000 jobs that run every second keep 100 slots each.
type memEntry struct {
	seq                              uint64
	at, tick, start                  int64 // Unix ns; zones says how to read them back
	dur                              time.Duration
	token                            int64
	batches, processed, failed, dups uint32
	kind                             slotKind
	trigger                          uint8 // index of slotTriggers
	zones                            uint8 // slotZone of at, tick and start, two bits each
	flags                            uint8 // slotMore, slotTripped
	skip                             uint8 // 1 + index of skipOutcomes; 0: none, or rare.skip
	err                              string
	rare                             *memRare
}

// memRare is what a compact entry has beyond a run without error, or the
// whole entry.
type memRare struct {
	full *HistoryEntry // the whole entry (no ID); the rest is then unused
	err  error         // a run's Report.Err
	by   string        // who asked (manual runs)
	skip string        // a skip's reason, when it is none of skipOutcomes
}

// slotKind is which form a memEntry has.
type slotKind uint8

const (
	slotFull slotKind = iota // rare.full
	slotRun                  // an EventFinished, its Report in the slot
	slotSkip                 // an EventSkipped
)

const (
	slotMore    = 1 << iota // Report.More
	slotTripped             // Report.Tripped
)

// slotTriggers are the triggers a compact entry can name.
var slotTriggers = [...]Trigger{"", TriggerSchedule, TriggerManual, TriggerCatchUp}

// slotZone is how a slot's time is read back: a time whose location is
// none of these, or outside the years int64 nanoseconds cover
// (1678–2262), is not compact (zoneNone).
const (
	zoneZero  = iota // time.Time{}
	zoneUTC          // time.UTC
	zoneLocal        // time.Local
	zoneRing         // the ring's loc: one other location, while slots use it (slotMeta)

	// zoneNone: no compact form. Past two bits even shifted by 4, so that
	// zones ORed together say at once whether one is none.
	zoneNone = 64
)

// The seconds of the times a slot keeps (a second inside int64
// nanoseconds' range at each end).
const (
	slotMinSec = math.MinInt64/1_000_000_000 + 1
	slotMaxSec = math.MaxInt64/1_000_000_000 - 1
)

// slotMeta is what every compact entry of a ring shares, kept once.
type slotMeta struct {
	job      string
	instance string
	instSet  bool           // instance was set by a compact entry
	loc      *time.Location // zoneRing's location; nil until one is seen
	// locUses counts the times in live compact slots kept in zoneRing:
	// while it is 0, loc may become another location (a ring does not keep
	// the first one it saw for good). pending counts those of the entry
	// being packed, added to locUses when it is kept compact (commit).
	locUses, pending int
}

// zoneOf is the slotZone *t is kept with, its time being t.UnixNano(), or
// zoneNone. A monotonic clock reading is not kept (no store keeps one).
// A location other than UTC and Local becomes the ring's when no live
// slot uses the ring's. It takes a pointer and returns one byte: it runs
// at the end of every run, whose stack it must not grow. Call it only
// between s.begin and s.commit.
func (s *slotMeta) zoneOf(t *time.Time) uint8 {
	if *t == (time.Time{}) {
		return zoneZero
	}
	if sec := t.Unix(); sec < slotMinSec || sec > slotMaxSec {
		return zoneNone
	}
	switch loc := t.Location(); {
	case loc == time.UTC:
		if utcIsNil(t) {
			return zoneUTC
		}
		if loc == time.Local {
			return zoneLocal
		}
		return zoneNone
	case loc == time.Local:
		return zoneLocal
	case loc == s.loc:
	case s.locUses == 0 && s.pending == 0:
		s.loc = loc
	default:
		return zoneNone
	}
	s.pending++
	return zoneRing
}

// utcIsNil reports whether t, in UTC, has the nil location (what .UTC()
// gives) rather than the UTC location itself (what time.Now gives when a
// program set time.Local = time.UTC): they read the same but are not ==.
// Apart, and not inlined, so that its two times are not in zoneOf's frame
// at the end of every run.
//
//go:noinline
func utcIsNil(t *time.Time) bool { return t.Round(0) == t.UTC() }

// begin starts packing an entry's times (zoneOf).
func (s *slotMeta) begin() { s.pending = 0 }

// commit counts the packed entry's times kept in zoneRing, once the
// entry is kept compact.
func (s *slotMeta) commit() { s.locUses += s.pending }

// release uncounts the times in zoneRing of m, a slot about to be
// reused.
func (s *slotMeta) release(m *memEntry) {
	if m.kind == slotFull {
		return
	}
	for z := m.zones; z != 0; z >>= 2 {
		if z&3 == zoneRing {
			s.locUses--
		}
	}
}

// unixNano is t's Unix nanoseconds, 0 for the zero time (zoneZero).
func unixNano(t *time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// unpackTime is the time zoneOf and unixNano packed as ns and zone.
func (s *slotMeta) unpackTime(ns int64, zone uint8) time.Time {
	switch zone {
	case zoneUTC:
		return time.Unix(0, ns).UTC()
	case zoneLocal:
		return time.Unix(0, ns)
	case zoneRing:
		return time.Unix(0, ns).In(s.loc)
	}
	return time.Time{}
}

// sameInstance reports whether an entry of instance can leave it to the
// ring: the first compact entry sets the ring's.
func (s *slotMeta) sameInstance(instance string) bool {
	if !s.instSet {
		s.instance, s.instSet = instance, true
	}
	return s.instance == instance
}

// set makes m keep e as entry seq, in place: compact when it can be,
// whole otherwise.
func (m *memEntry) set(s *slotMeta, e *HistoryEntry, seq uint64) {
	if !m.setCompact(s, e, seq) {
		full := new(HistoryEntry)
		*full = *e
		full.ID = ""
		*m = memEntry{seq: seq, kind: slotFull, rare: &memRare{full: full}}
	}
}

// setCompact keeps e in m's compact form and reports true, or reports
// false (m is then to be overwritten) when e has none.
func (m *memEntry) setCompact(s *slotMeta, e *HistoryEntry, seq uint64) bool {
	if e.Missed != 0 || e.First != (time.Time{}) || e.Last != (time.Time{}) || e.Enabled != nil || e.Reason != "" ||
		e.Job != s.job || !s.sameInstance(e.Instance) {
		return false
	}
	switch e.Kind {
	case EventFinished:
		r := e.Report
		if r == nil || e.Skip != "" || e.Job != r.Job || e.Instance != r.Instance ||
			e.Trigger != r.Trigger || e.Tick != r.Tick || e.By != r.By {
			return false
		}
		return m.setRun(s, seq, &e.Time, e.Error, r)
	case EventSkipped:
		if e.Report != nil {
			return false
		}
		return m.setSkip(s, seq, e)
	}
	return false
}

// setRun makes m keep, as entry seq, the EventFinished of a run whose
// Report is rep, at time *at, with err its Error, and reports true; or
// reports false when it has no compact form. It runs at the end of every
// run on the run's goroutine (addDone): its frame is kept small (no time
// copied, no helper that is not inlined but zoneOf).
func (m *memEntry) setRun(s *slotMeta, seq uint64, at *time.Time, err string, rep *Report) bool {
	s.begin()
	zones := uint(s.zoneOf(at)) | uint(s.zoneOf(&rep.Tick))<<2 | uint(s.zoneOf(&rep.Start))<<4
	ti := triggerIndex(rep.Trigger)
	if zones >= zoneNone || ti < 0 || rep.Job != s.job || !s.sameInstance(rep.Instance) ||
		uint64(rep.Batches)|uint64(rep.Processed)|uint64(rep.Failed)|uint64(rep.Duplicates) > math.MaxUint32 { // negatives too
		return false
	}
	m.seq, m.kind, m.trigger, m.zones = seq, slotRun, uint8(ti), uint8(zones)
	m.at, m.tick, m.start = unixNano(at), unixNano(&rep.Tick), unixNano(&rep.Start)
	m.dur, m.token = rep.Duration, rep.Token
	m.batches, m.processed = uint32(rep.Batches), uint32(rep.Processed)
	m.failed, m.dups = uint32(rep.Failed), uint32(rep.Duplicates)
	m.flags = 0
	if rep.More {
		m.flags |= slotMore
	}
	if rep.Tripped {
		m.flags |= slotTripped
	}
	m.skip, m.err, m.rare = 0, err, nil
	if rep.Err != nil || rep.By != "" {
		m.setRare(rep.Err, rep.By, "")
	}
	s.commit()
	return true
}

// setRare gives m what a run without error does not have. Apart so that
// its object is not in setRun's frame.
//
//go:noinline
func (m *memEntry) setRare(err error, by, skip string) {
	m.rare = &memRare{err: err, by: by, skip: skip}
}

// setSkip keeps the EventSkipped e in m (see setRun).
func (m *memEntry) setSkip(s *slotMeta, seq uint64, e *HistoryEntry) bool {
	s.begin()
	zones := uint(s.zoneOf(&e.Time)) | uint(s.zoneOf(&e.Tick))<<2
	ti := triggerIndex(e.Trigger)
	if zones >= zoneNone || ti < 0 {
		return false
	}
	m.seq, m.kind, m.trigger, m.zones = seq, slotSkip, uint8(ti), uint8(zones)
	m.at, m.tick, m.start, m.dur, m.token = unixNano(&e.Time), unixNano(&e.Tick), 0, 0, 0
	m.batches, m.processed, m.failed, m.dups, m.flags = 0, 0, 0, 0, 0
	m.err, m.rare, m.skip = e.Error, nil, 0
	for i, o := range skipOutcomes {
		if o.name == e.Skip {
			m.skip = uint8(i + 1)
		}
	}
	if (m.skip == 0 && e.Skip != "") || e.By != "" {
		m.setRare(nil, e.By, e.Skip)
	}
	s.commit()
	return true
}

// triggerIndex is trig's index in slotTriggers, or -1.
func triggerIndex(trig Trigger) int {
	switch trig {
	case "":
		return 0
	case TriggerSchedule:
		return 1
	case TriggerManual:
		return 2
	case TriggerCatchUp:
		return 3
	}
	return -1
}

// report is the Report of the run m keeps (kind slotRun).
func (m *memEntry) report(s *slotMeta) Report {
	r := Report{Job: s.job, Instance: s.instance, Trigger: slotTriggers[m.trigger],
		Tick: s.unpackTime(m.tick, m.zones>>2&3), Start: s.unpackTime(m.start, m.zones>>4&3),
		Duration: m.dur, Batches: int(m.batches), Processed: int(m.processed), Failed: int(m.failed),
		More: m.flags&slotMore != 0, Tripped: m.flags&slotTripped != 0, Duplicates: int(m.dups), Token: m.token}
	if m.rare != nil {
		r.Err, r.By = m.rare.err, m.rare.by
	}
	return r
}

// entry is the HistoryEntry m keeps, without its ID, sharing no memory
// with the ring: the caller may keep and change it.
func (m *memEntry) entry(s *slotMeta) HistoryEntry {
	if m.kind == slotFull {
		e := *m.rare.full
		if e.Report != nil {
			rep := *e.Report
			e.Report = &rep
		}
		if e.Enabled != nil {
			on := *e.Enabled
			e.Enabled = &on
		}
		return e
	}
	e := HistoryEntry{Job: s.job, Time: s.unpackTime(m.at, m.zones&3), Instance: s.instance,
		Trigger: slotTriggers[m.trigger], Tick: s.unpackTime(m.tick, m.zones>>2&3), Error: m.err}
	if m.rare != nil {
		e.By = m.rare.by
	}
	if m.kind == slotRun {
		rep := m.report(s)
		e.Kind, e.Report = EventFinished, &rep
		return e
	}
	e.Kind = EventSkipped
	switch {
	case m.skip > 0:
		e.Skip = skipOutcomes[m.skip-1].name
	case m.rare != nil:
		e.Skip = m.rare.skip
	}
	return e
}

// setDoneWhole keeps the run of rep, which ended without error at at, as
// a whole entry: addDone's way for a Report with no compact form (a time
// zone past the ring's, counts past 32 bits). It is apart so that the
// entry it builds is not in the frame of every run's addDone.
//
//go:noinline
func (m *memEntry) setDoneWhole(s *slotMeta, seq uint64, at *time.Time, rep *Report) {
	own := new(Report) // rep is on the run's stack: the entry keeps a copy
	*own = *rep
	m.set(s, &HistoryEntry{Kind: EventFinished, Job: rep.Job, Time: *at, Instance: rep.Instance,
		Trigger: rep.Trigger, Tick: rep.Tick, By: rep.By, Report: own}, seq)
}

// doneReport is the Report of the run m keeps, compact or whole.
func (m *memEntry) doneReport(s *slotMeta) Report {
	if m.kind == slotFull {
		return *m.rare.full.Report
	}
	return m.report(s)
}

// copyOut is the entry m keeps with its ID, sharing no memory with the
// ring.
func (m *memEntry) copyOut(s *slotMeta) HistoryEntry {
	e := m.entry(s)
	e.ID = strconv.FormatUint(m.seq, 10)
	return e
}
