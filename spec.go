package cronguard

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// specParser accepts 5 fields, an optional leading seconds field, the
// descriptors (@hourly, @daily, ...) and CRON_TZ=/TZ= prefixes.
var specParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour |
	cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// parseSpec turns a spec into a schedule. Specs without a time zone prefix
// are read in loc. "@every D" is aligned to the Unix epoch: it fires at the
// multiples of D since 1970-01-01 UTC, so every instance agrees on the ticks
// whenever it started.
//
// Daylight saving: robfig/cron computes wall-clock specs in their zone. A
// time that does not exist (02:30 on a spring-forward night) is skipped that
// day; a time that exists twice (01:30 on a fall-back night) fires twice, once
// per instant, and each is its own tick. A job that must run once a day
// should use CRON_TZ=UTC or an hour outside the change. @every counts real
// time and is unaffected. In the few zones whose clocks move by other than
// an hour (Australia/Lord_Howe, Pacific/Chatham, Antarctica/Troll),
// robfig/cron's Next can skip a tick near the change; cronguard finds
// ticks and gaps with that Next, so such a tick is neither run nor
// reported missed (README, Specs).
func parseSpec(spec string, loc *time.Location) (s cron.Schedule, err error) {
	defer func() { // robfig/cron has panicked on odd input before; never pass that on
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w %q: %v", ErrInvalidSpec, spec, r)
		}
	}()
	body := strings.TrimSpace(spec)
	if strings.HasPrefix(body, "TZ=") || strings.HasPrefix(body, "CRON_TZ=") {
		if i := strings.IndexByte(body, ' '); i > 0 {
			body = strings.TrimSpace(body[i:])
		}
	}
	if rest, ok := strings.CutPrefix(body, "@every "); ok {
		if _, err := specParser.Parse(spec); err != nil { // still checks the TZ prefix
			return nil, fmt.Errorf("%w %q: %v", ErrInvalidSpec, spec, err)
		}
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrInvalidSpec, spec, err)
		}
		if d < time.Second {
			return nil, fmt.Errorf("%w %q: @every needs at least 1s, got %s", ErrInvalidSpec, spec, d)
		}
		return everySchedule{d}, nil
	}
	sched, err := specParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrInvalidSpec, spec, err)
	}
	if ss, ok := sched.(*cron.SpecSchedule); ok && ss.Location == time.Local && !hasTZ(spec) {
		ss.Location = loc
	}
	return sched, nil
}

func hasTZ(spec string) bool {
	spec = strings.TrimSpace(spec)
	return strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")
}

// everySchedule fires at the multiples of d since the Unix epoch.
type everySchedule struct{ d time.Duration }

// Next returns the first multiple of d after t.
func (e everySchedule) Next(t time.Time) time.Time {
	n := t.UnixNano()
	d := int64(e.d)
	next := (n/d + 1) * d
	if n < 0 && n%d != 0 { // floor for times before 1970
		next -= d
	}
	return time.Unix(0, next).In(t.Location())
}
