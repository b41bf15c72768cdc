package cronguard

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	from := time.Date(2026, 11, 27, 10, 7, 30, 0, time.UTC)
	cases := []struct {
		spec string
		next time.Time
	}{
		{"*/5 * * * *", time.Date(2026, 11, 27, 10, 10, 0, 0, time.UTC)},
		{"*/20 * * * * *", time.Date(2026, 11, 27, 10, 7, 40, 0, time.UTC)},
		{"@hourly", time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)},
		{"@every 90s", time.Unix(from.Unix()/90*90+90, 0).UTC()},
		{"CRON_TZ=America/New_York 0 9 * * *", time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)}, // EST = UTC-5
		{"TZ=Europe/Berlin 0 12 * * *", time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)},        // CET = UTC+1
		{"  0 0 1 1 *  ", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, c := range cases {
		s, err := parseSpec(c.spec, time.UTC)
		if err != nil {
			t.Errorf("%q: %v", c.spec, err)
			continue
		}
		if got := s.Next(from); !got.Equal(c.next) {
			t.Errorf("%q: Next(%v) = %v, want %v", c.spec, from, got.UTC(), c.next)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	for _, spec := range []string{
		"", "* * *", "* * * * * * *", "61 * * * *", "@every", "@every 0s", "@every -5s",
		"@every 500ms", "@every x", "@sometimes", "CRON_TZ=Bad/Zone * * * * *", "TZ=Nowhere @every 1m",
	} {
		_, err := parseSpec(spec, time.UTC)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), spec) {
			t.Errorf("%q: err = %v, want ErrInvalidSpec naming the spec", spec, err)
		}
	}
}

// @every ticks are the multiples of the interval since the Unix epoch, so two
// instances started at different moments agree on every tick.
func TestEveryIsAlignedToEpoch(t *testing.T) {
	for _, d := range []time.Duration{7 * time.Second, 90 * time.Second, time.Hour, 1500 * time.Millisecond} {
		s, err := parseSpec("@every "+d.String(), time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		base := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC).UnixNano()
		a := time.Unix(0, base/int64(d)*int64(d)+int64(time.Millisecond)).UTC()
		b := a.Add(d / 3) // started later, within the same interval
		na, nb := s.Next(a), s.Next(b)
		if !na.Equal(nb) {
			t.Errorf("@every %s: instances disagree: %v vs %v", d, na, nb)
		}
		if na.UnixNano()%int64(d) != 0 || !na.After(a) || na.Sub(a) > d {
			t.Errorf("@every %s: Next(%v) = %v is not the next multiple since the epoch", d, a, na)
		}
		if n2 := s.Next(na); n2.Sub(na) != d {
			t.Errorf("@every %s: step %s", d, n2.Sub(na))
		}
	}
}

func TestWithLocationAppliesToSpecsWithoutTZ(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	s, _ := parseSpec("0 9 * * *", tokyo)
	from := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC) // 09:00 JST
	if got := s.Next(from); !got.Equal(time.Date(2026, 11, 28, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("Next = %v, want 09:00 JST the next day", got.UTC())
	}
	// An explicit CRON_TZ wins over the location.
	s, _ = parseSpec("CRON_TZ=UTC 0 9 * * *", tokyo)
	if got := s.Next(from); !got.Equal(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("Next = %v, want 09:00 UTC", got.UTC())
	}
}

// What happens at daylight-saving changes, as documented on parseSpec.
func TestDST(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	// Spring forward, 2026-03-08: 02:30 does not exist and is skipped.
	s, _ := parseSpec("CRON_TZ=America/New_York 30 2 * * *", time.UTC)
	got := s.Next(time.Date(2026, 3, 7, 12, 0, 0, 0, ny))
	if want := time.Date(2026, 3, 9, 2, 30, 0, 0, ny); !got.Equal(want) {
		t.Errorf("spring forward: Next = %v, want %v (the missing 02:30 skipped)", got, want)
	}
	// Fall back, 2026-11-01: 01:30 exists twice and fires at both instants.
	s, _ = parseSpec("CRON_TZ=America/New_York 30 1 * * *", time.UTC)
	first := s.Next(time.Date(2026, 10, 31, 12, 0, 0, 0, ny))
	second := s.Next(first)
	if second.Sub(first) != time.Hour || first.Hour() != 1 || second.Hour() != 1 {
		t.Errorf("fall back: ticks %v and %v, want 01:30 EDT then 01:30 EST", first, second)
	}
	// @every is real time and ignores the change.
	s, _ = parseSpec("CRON_TZ=America/New_York @every 1h", time.UTC)
	a := time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC)
	if got := s.Next(a); got.Sub(a) != time.Hour {
		t.Errorf("@every across fall back: %v", got.Sub(a))
	}
}

func FuzzParseSpec(f *testing.F) {
	for _, s := range []string{"* * * * *", "*/5 * * * * *", "@every 90s", "CRON_TZ=UTC 0 9 * * 1-5",
		"TZ=Europe/Berlin @daily", "0 0 31 2 *", "@every 1h30m", "1-5/0 * * * *", "CRON_TZ= ", "TZ=x"} {
		f.Add(s)
	}
	from := time.Date(2026, 11, 27, 10, 7, 30, 0, time.UTC)
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := parseSpec(spec, time.UTC)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("%q: error %v does not wrap ErrInvalidSpec", spec, err)
			}
			return
		}
		next := s.Next(from)
		if !next.IsZero() && !next.After(from) {
			t.Fatalf("%q: Next(%v) = %v is not after", spec, from, next)
		}
	})
}
