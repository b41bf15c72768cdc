package cronguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// A Report's Outcome comes from its Err, and survives JSON and the
// history: the sentinel of each outcome reaches errors.Is after the round
// trip, a skip is still a *SkipError for errors.As, and the text is kept.
func TestOutcomeSurvivesJSONAndHistory(t *testing.T) {
	skip := func(reason, cause error) error {
		return &SkipError{Job: "j", Reason: reason, Cause: cause, detail: "tick X"}
	}
	for _, c := range []struct {
		err     error
		more    bool
		want    string
		is      error // nil: no sentinel to keep
		skipped bool
	}{
		{nil, false, "done", nil, false},
		{nil, true, "max_batches", nil, false},
		{ended(fmt.Errorf("%w: job %q: hard kill", ErrKilled, "j"), context.Canceled), false, "killed", ErrKilled, false},
		{fmt.Errorf("%w: job %q: flag off before batch 2", ErrKilled, "j"), false, "killed", ErrKilled, false},
		{fmt.Errorf("%w: job %q: batch 1 returned item \"7\" again", ErrRunaway, "j"), false, "runaway", ErrRunaway, false},
		{ended(fmt.Errorf("%w: job %q", ErrLockLost, "j"), nil), false, "lock_lost", ErrLockLost, false},
		{fmt.Errorf("%w: job %q: 3 items failed, budget 2", ErrErrorBudget, "j"), false, "error_budget", ErrErrorBudget, false},
		{ended(fmt.Errorf("%w: job %q after 1s", ErrTimeout, "j"), context.Canceled), false, "timeout", ErrTimeout, false},
		{ended(ErrStopped, context.Canceled), false, "canceled", context.Canceled, false},
		{ended(context.DeadlineExceeded, nil), false, "canceled", context.Canceled, false}, // the caller's deadline: canceled, not timed out
		{fmt.Errorf("%w: job %q: boom", ErrPanic, "j"), false, "error", nil, false},
		{errors.New("smtp: 550 mailbox full"), false, "error", nil, false},
		{skip(ErrKilled, nil), false, "killed", ErrKilled, true},
		{skip(ErrTickTaken, nil), false, "tick_taken", ErrTickTaken, true},
		{skip(ErrOverlap, nil), false, "overlap", ErrOverlap, true},
		{skip(ErrLocked, fmt.Errorf("%w: job %q: web-7 holds it", ErrLocked, "j")), false, "locked", ErrLocked, true},
		{skip(ErrBackend, errors.New("dial tcp: refused")), false, "backend", ErrBackend, true},
		{skip(ErrStopped, nil), false, "stopped", ErrStopped, true},
	} {
		in := Report{Job: "j", Trigger: TriggerSchedule, Processed: 2, Err: c.err, More: c.more}
		if got := in.Outcome(); got != c.want {
			t.Errorf("%v: Outcome %q, want %q", c.err, got, c.want)
			continue
		}
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out Report
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		kept := historyReport(in)
		for name, r := range map[string]Report{"JSON " + string(b): out, "history": kept} {
			_, isSkip := errors.AsType[*SkipError](r.Err)
			switch {
			case r.Outcome() != c.want:
				t.Errorf("%s: Outcome %q, want %q", name, r.Outcome(), c.want)
			case c.is != nil && !errors.Is(r.Err, c.is):
				t.Errorf("%s: Err %v does not wrap %v", name, r.Err, c.is)
			case isSkip != c.skipped:
				t.Errorf("%s: a *SkipError: %t, want %t", name, isSkip, c.skipped)
			case c.err != nil && (r.Err == nil || r.Err.Error() != c.err.Error()):
				t.Errorf("%s: Err %q, want the text %q", name, r.Err, c.err)
			case c.err == nil && r.Err != nil:
				t.Errorf("%s: Err %v, want nil", name, r.Err)
			case r.Processed != 2 || r.More != c.more:
				t.Errorf("%s: fields lost: %+v", name, r)
			}
		}
	}
}

// The JSON keeps the words the history and the admin API always wrote:
// "stop" for a run that started, "skipped" for one that did not. Entries
// written before Report.More existed read back as More.
func TestReportJSONWords(t *testing.T) {
	b, _ := json.Marshal(Report{Job: "j", Err: &SkipError{Job: "j", Reason: ErrOverlap}})
	if !strings.Contains(string(b), `"skipped":"overlap"`) || strings.Contains(string(b), `"stop"`) {
		t.Errorf("skip: %s", b)
	}
	b, _ = json.Marshal(Report{Job: "j", More: true})
	if !strings.Contains(string(b), `"stop":"max_batches"`) || !strings.Contains(string(b), `"more":true`) {
		t.Errorf("max batches: %s", b)
	}
	var r Report
	if err := json.Unmarshal([]byte(`{"job":"j","stop":"max_batches"}`), &r); err != nil || !r.More || r.Err != nil {
		t.Errorf("an old max_batches entry: %+v, %v", r, err)
	}
}

// SkipError names its job; errors.Is reaches its Reason and its Cause.
func TestSkipError(t *testing.T) {
	cause := fmt.Errorf("acquire lock: %w", errors.New("dial tcp"))
	err := error(&SkipError{Job: "mail", Reason: ErrBackend, Cause: cause})
	if !errors.Is(err, ErrBackend) || !errors.Is(err, cause) || errors.Is(err, ErrKilled) {
		t.Errorf("errors.Is on %v", err)
	}
	if !strings.Contains(err.Error(), `job "mail"`) || !strings.Contains(err.Error(), "dial tcp") {
		t.Errorf("Error() = %q: want the job and the cause", err)
	}
	locked := fmt.Errorf("%w: job %q: web-7 holds it", ErrLocked, "mail")
	if got := (&SkipError{Job: "mail", Reason: ErrLocked, Cause: locked}).Error(); got != locked.Error() {
		t.Errorf("a Cause that says it all: %q, want %q", got, locked)
	}
}
