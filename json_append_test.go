package cronguard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The hand-written appenders (json_append.go) must write what encoding/json
// wrote before them, byte for byte: the Redis history holds entries written
// by both, and readers (the admin API, other instances during a rolling
// upgrade) see no difference. The references below are json.Marshal of the
// former code: refReportJSON is Report.MarshalJSON as it was, refEntry is
// HistoryEntry with that Report.

// refReportJSON is Report.MarshalJSON before the appender.
func refReportJSON(r Report) ([]byte, error) {
	v := reportJSON{plainReport: plainReport(r)}
	if _, ok := errors.AsType[*SkipError](r.Err); ok {
		v.Skipped = r.Outcome()
	} else {
		v.Stop = r.Outcome()
	}
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	return json.Marshal(v)
}

// refReport is a Report whose MarshalJSON is refReportJSON.
type refReport Report

func (r refReport) MarshalJSON() ([]byte, error) { return refReportJSON(Report(r)) }

// refEntry is HistoryEntry with Report a *refReport; TestRefEntryMirrors
// keeps its fields those of HistoryEntry.
type refEntry struct {
	ID       string     `json:"id,omitempty"`
	Kind     EventKind  `json:"kind"`
	Job      string     `json:"job"`
	Time     time.Time  `json:"time"`
	Instance string     `json:"instance,omitempty"`
	Trigger  Trigger    `json:"trigger,omitempty"`
	Tick     time.Time  `json:"tick,omitzero"`
	By       string     `json:"by,omitempty"`
	Report   *refReport `json:"report,omitempty"`
	Skip     string     `json:"skip,omitempty"`
	Missed   int        `json:"missed,omitempty"`
	First    time.Time  `json:"first,omitzero"`
	Last     time.Time  `json:"last,omitzero"`
	Enabled  *bool      `json:"enabled,omitempty"`
	Reason   string     `json:"reason,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// refStoredJSON is what appendArgs stored before the appender:
// json.Marshal of e without ID, with its kind's stored name.
func refStoredJSON(e HistoryEntry) ([]byte, error) {
	var ref refEntry
	src, dst := reflect.ValueOf(e), reflect.ValueOf(&ref).Elem()
	for i := range src.NumField() {
		if dst.Type().Field(i).Name == "Report" {
			ref.Report = (*refReport)(e.Report)
			continue
		}
		dst.Field(i).Set(src.Field(i))
	}
	ref.ID, ref.Kind = "", storedKind(e.Kind)
	return json.Marshal(ref)
}

// TestRefEntryMirrors: refEntry has HistoryEntry's fields, names, tags and
// types (but Report's), so a field added to HistoryEntry fails here until
// the reference, and then the appender, know it.
func TestRefEntryMirrors(t *testing.T) {
	he, re := reflect.TypeFor[HistoryEntry](), reflect.TypeFor[refEntry]()
	if he.NumField() != re.NumField() {
		t.Fatalf("HistoryEntry has %d fields, refEntry %d", he.NumField(), re.NumField())
	}
	for i := range he.NumField() {
		h, r := he.Field(i), re.Field(i)
		if h.Name != r.Name || h.Tag != r.Tag || (h.Type != r.Type && h.Name != "Report") {
			t.Errorf("field %d: HistoryEntry %s %s %q, refEntry %s %s %q", i, h.Name, h.Type, h.Tag, r.Name, r.Type, r.Tag)
		}
	}
}

// jsonPieces are the parts random strings are made of: what encoding/json
// escapes or replaces, and what it must leave alone.
var jsonPieces = []string{
	"", "a", "job-1", " ", "<script>alert(1)</script>", "&amp;", "<", ">", "&",
	`"`, `\`, `\u2028`, "/", "'", "\x00", "\x01", "\x1f", "\x7f", "\b", "\f", "\n", "\r", "\t",
	"\u2028", "\u2029", "\u2027", "\u202a", "\xff", "\xfe", "\xc3", "\xc3(", "\xe2\x80", "\xe2\x80\xa8",
	"\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\U0001F600", "é", "日本", "\ufffd", "\xef\xbf\xbd",
	"{\"a\":1}", "kind", "0", "-1", "\u00e9\u0301",
}

func randString(rnd *rand.Rand) string {
	if rnd.IntN(50) == 0 { // long, up past the history's bounds
		return strings.Repeat(jsonPieces[rnd.IntN(len(jsonPieces))]+"x", 1000+rnd.IntN(4000))
	}
	var sb strings.Builder
	for range rnd.IntN(6) {
		sb.WriteString(jsonPieces[rnd.IntN(len(jsonPieces))])
	}
	return sb.String()
}

// jsonTimes are times in several locations: zero, with a zero instant
// elsewhere, with and without nanoseconds, with offsets RFC 3339 writes
// (and with seconds it cuts), and ones JSON cannot hold (year 10000 and
// -1, an offset of 24h or more), for which json.Marshal fails.
func jsonTimes(t *testing.T) []time.Time {
	t.Helper()
	locs := []*time.Location{time.UTC, time.Local,
		time.FixedZone("", 0), time.FixedZone("X", 5*3600+30*60), time.FixedZone("", -(3*3600 + 30*60)),
		time.FixedZone("S", 3661), time.FixedZone("", -23*3600-59*60), time.FixedZone("", 24*3600),
		time.FixedZone("", -25*3600)}
	for _, name := range []string{"Europe/Paris", "America/St_Johns", "Asia/Kolkata", "Pacific/Chatham"} {
		if l, err := time.LoadLocation(name); err == nil {
			locs = append(locs, l)
		}
	}
	bases := []time.Time{{}, time.Unix(0, 0), time.Unix(1, 1), time.Now(),
		time.Date(2026, 11, 27, 16, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 1, 30, 0, 123456789, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), time.Date(2030, 1, 1, 0, 0, 0, 100, time.UTC)}
	var out []time.Time
	for _, b := range bases {
		out = append(out, b)
		for _, l := range locs {
			out = append(out, b.In(l))
		}
	}
	return out
}

type textError string

func (e textError) Error() string { return string(e) }

// jsonErrors are Report.Err values: nil, each sentinel bare, wrapped and in
// a SkipError, a run's end (ended), joined errors, read-back errors, and
// errors whose text is empty or hostile.
func jsonErrors(rnd *rand.Rand) []error {
	sentinels := []error{ErrKilled, ErrTickTaken, ErrOverlap, ErrLocked, ErrBackend, ErrStopped,
		ErrLockLost, ErrTimeout, ErrRunaway, ErrErrorBudget, context.Canceled, context.DeadlineExceeded,
		textError(""), textError("<b>&\u2028\xff\"\\"), errors.New("boom")}
	out := []error{nil}
	for _, s := range sentinels {
		out = append(out, s,
			fmt.Errorf("job %q: %w", randString(rnd), s),
			&SkipError{Job: randString(rnd), Reason: s},
			&SkipError{Job: "j", Reason: s, Cause: textError(randString(rnd))},
			ended(s, nil), ended(s, textError(randString(rnd))), ended(context.Canceled, s),
			errors.Join(s, textError(randString(rnd))),
			readBack("j", outcomeOf(s, false), rnd.IntN(2) == 0, randString(rnd)),
			keptError("j", s, 10))
	}
	return out
}

// fillRandom sets every field of the struct v points to, each one zero or
// not at random (all set with full): a field of a kind it does not know
// fails the test, so new fields are never left out of the comparison.
func fillRandom(t *testing.T, rnd *rand.Rand, v reflect.Value, full bool, times []time.Time, errs []error) {
	t.Helper()
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		if !full && rnd.IntN(3) == 0 {
			continue // zero
		}
		switch x := f.Addr().Interface().(type) {
		case *string:
			*x = randString(rnd)
		case *EventKind:
			kinds := []EventKind{EventFinished, EventSkipped, EventMissed, EventFlag, EventKind(randString(rnd))}
			*x = kinds[rnd.IntN(len(kinds))]
		case *Trigger:
			triggers := []Trigger{TriggerSchedule, TriggerManual, Trigger(randString(rnd))}
			*x = triggers[rnd.IntN(len(triggers))]
		case *time.Time:
			*x = times[rnd.IntN(len(times))]
		case *time.Duration:
			*x = time.Duration(randInt(rnd))
		case *int:
			*x = int(randInt(rnd))
		case *int64:
			*x = randInt(rnd)
		case *bool:
			*x = full || rnd.IntN(2) == 0
		case **bool:
			b := rnd.IntN(2) == 0
			*x = &b
		case *error:
			*x = errs[rnd.IntN(len(errs))]
		case **Report:
			r := new(Report)
			fillRandom(t, rnd, reflect.ValueOf(r).Elem(), full, times, errs)
			*x = r
		default:
			t.Fatalf("field %s of %s is a %s: teach fillRandom, the appender and its reference", name, v.Type(), f.Type())
		}
	}
}

func randInt(rnd *rand.Rand) int64 {
	edge := []int64{0, 1, -1, 9, 10, 99, 100, 255, 256, math.MaxInt64, math.MinInt64, math.MaxInt32}
	if rnd.IntN(2) == 0 {
		return edge[rnd.IntN(len(edge))]
	}
	return rnd.Int64() >> rnd.IntN(64)
}

// TestReportJSONMatchesEncodingJSON: appendReportJSON and Report.MarshalJSON
// write refReportJSON's bytes, directly and through json.Marshal, for
// random and adversarial reports; where the reference fails (a time JSON
// cannot hold) they fail with its error.
func TestReportJSONMatchesEncodingJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(8, 8))
	times, errs := jsonTimes(t), jsonErrors(rnd)
	failed := 0
	for i := range 20000 {
		var r Report
		fillRandom(t, rnd, reflect.ValueOf(&r).Elem(), i%10 == 0, times, errs)
		want, wantErr := refReportJSON(r)
		got, ok := appendReportJSON([]byte("prefix"), &r)
		marshaled, err := r.MarshalJSON()
		viaJSON, viaErr := json.Marshal(r)
		if wantErr != nil {
			failed++
			if ok || err == nil || err.Error() != wantErr.Error() || viaErr == nil {
				t.Fatalf("report %#v: reference fails with %v; appender ok %v, MarshalJSON %v, json.Marshal %v", r, wantErr, ok, err, viaErr)
			}
			continue
		}
		if !ok || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("report %#v:\nappender %s (ok %v)\nwant            %s", r, got, ok, want)
		}
		if err != nil || !bytes.Equal(marshaled, want) || viaErr != nil || !bytes.Equal(viaJSON, want) {
			t.Fatalf("report %#v:\nMarshalJSON  %s (%v)\njson.Marshal %s (%v)\nwant         %s", r, marshaled, err, viaJSON, viaErr, want)
		}
	}
	if failed == 0 || failed == 20000 {
		t.Fatalf("%d of 20000 reports failed to encode: the cases do not cover both paths", failed)
	}
}

// TestHistoryEntryJSONMatchesEncodingJSON: appendHistoryEntryJSON, what the
// Redis history stores, writes refStoredJSON's bytes for random and
// adversarial entries (every field set or not, every kind, every Err), and
// fails where it failed, with json.Marshal's error.
func TestHistoryEntryJSONMatchesEncodingJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(8, 9))
	times, errs := jsonTimes(t), jsonErrors(rnd)
	failed := 0
	for i := range 20000 {
		var e HistoryEntry
		fillRandom(t, rnd, reflect.ValueOf(&e).Elem(), i%10 == 0, times, errs)
		before := e
		want, wantErr := refStoredJSON(e)
		got, err := appendHistoryEntryJSON([]byte("prefix"), &e)
		if !reflect.DeepEqual(e, before) {
			t.Fatalf("the appender changed the entry: %#v, was %#v", e, before)
		}
		if wantErr != nil {
			failed++
			stored := e
			stored.ID, stored.Kind = "", storedKind(e.Kind)
			_, realErr := json.Marshal(stored)
			if err == nil || err.Error() != realErr.Error() || string(got) != "prefix" {
				t.Fatalf("entry %#v: reference fails with %v; appender %q, %v", e, wantErr, got, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("entry %#v:\nappender %s (%v)\nwant           %s", e, got, err, want)
		}
	}
	if failed == 0 || failed == 20000 {
		t.Fatalf("%d of 20000 entries failed to encode: the cases do not cover both paths", failed)
	}
}

// TestJSONStringMatchesEncodingJSON: every string of up to two bytes, and
// every rune, is written as json.Marshal writes it.
func TestJSONStringMatchesEncodingJSON(t *testing.T) {
	check := func(s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: got %s, want %s", s, got, want)
		}
	}
	for a := range 256 {
		check(string([]byte{byte(a)}))
		for b := range 256 {
			check(string([]byte{byte(a), byte(b)}))
		}
	}
	for r := range rune(0x110000) {
		check("x" + string(r) + "\xe2")
	}
}

// TestHistoryEntryJSONAllocatesNothing: the JSON of a run's entry is
// written without encoding/json. A batch's entries share one buffer, so a
// run's entry costs no allocation of its own for its JSON; with
// json.Marshal it cost several.
func TestHistoryEntryJSONAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	tick := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	e := HistoryEntry{Kind: EventFinished, Job: "noop", Time: tick, Instance: "i", Trigger: TriggerSchedule, Tick: tick,
		Report: &Report{Job: "noop", Trigger: TriggerSchedule, Tick: tick, Instance: "i", Start: tick, Duration: time.Millisecond}}
	buf := make([]byte, 0, 4096)
	n := testing.AllocsPerRun(100, func() {
		if _, err := appendHistoryEntryJSON(buf[:0], &e); err != nil {
			t.Fatal(err)
		}
	})
	if n != 0 {
		t.Errorf("the JSON of a run's entry allocates %.0f objects; want 0", n)
	}
}
