package cronguard

import (
	"context"
	"errors"
)

// One vocabulary for how a run ends: the sentinel in Report.Err (a
// *SkipError for a run that did not start), and Report.Outcome, the one
// word logs, metrics and dashboards show. The words are named here only,
// each next to its sentinel; JSON carries the word and the error's text,
// and reading it back (report_json.go) gives Err its sentinel again.

// outcomeTickTaken is the outcome of a tick taken elsewhere, which the
// history does not keep (that instance records its run).
const outcomeTickTaken = "tick_taken"

// skipOutcomes names the reasons of a SkipError.
var skipOutcomes = []struct {
	name   string
	reason error
}{
	{"killed", ErrKilled},
	{outcomeTickTaken, ErrTickTaken},
	{"overlap", ErrOverlap},
	{"locked", ErrLocked},
	{"backend", ErrBackend},
	{"stopped", ErrStopped},
}

// endOutcomes names the ends of a run that started with an error, in the
// order they are tested ("error" for any other error).
var endOutcomes = []struct {
	name string
	is   error
}{
	{"lock_lost", ErrLockLost},
	{"timeout", ErrTimeout},
	{"killed", ErrKilled},
	{"runaway", ErrRunaway},
	{"error_budget", ErrErrorBudget},
	{"canceled", context.Canceled},
	{"timeout", context.DeadlineExceeded},
}

// outcomeOf is Report.Outcome of a run that ended with err (and more).
func outcomeOf(err error, more bool) string {
	switch {
	case err == nil && more:
		return "max_batches"
	case err == nil:
		return "done"
	}
	if se, ok := errors.AsType[*SkipError](err); ok {
		return skipOutcome(se.Reason)
	}
	if ee, ok := errors.AsType[*endedError](err); ok {
		return ee.outcome()
	}
	for _, o := range endOutcomes {
		if errors.Is(err, o.is) {
			return o.name
		}
	}
	return "error"
}

// skipOutcome names the reason of a skip; "skipped" for a reason that is
// none of the six.
func skipOutcome(reason error) string {
	for _, o := range skipOutcomes {
		if errors.Is(reason, o.reason) {
			return o.name
		}
	}
	return "skipped"
}

// endedError is the Err of a run whose context ended: its cause explains
// the end better than the error the job returned for it (usually
// context.Canceled), so the cause names the outcome, and comes first.
type endedError struct {
	cause error
	err   error // what the job returned, or nil
}

// ended is the Err of a run whose context ended with cause, the job having
// returned err.
func ended(cause, err error) error { return &endedError{cause, err} }

// Error is errors.Join's text of the cause and the job's error, or the
// job's error alone when it wraps the cause.
func (e *endedError) Error() string {
	switch {
	case e.err == nil:
		return e.cause.Error()
	case errors.Is(e.err, e.cause):
		return e.err.Error()
	}
	return e.cause.Error() + "\n" + e.err.Error()
}

// Unwrap returns the cause and the job's error.
func (e *endedError) Unwrap() []error {
	if e.err == nil {
		return []error{e.cause}
	}
	return []error{e.cause, e.err}
}

// outcome: the run lost its lock, timed out or was hard-killed; any other
// cause (Scheduler.Stop, the caller's context) cancels it.
func (e *endedError) outcome() string {
	for _, o := range endOutcomes[:3] { // lock_lost, timeout, killed
		if errors.Is(e.cause, o.is) {
			return o.name
		}
	}
	return "canceled"
}

// readBackError is an error read back from JSON or kept by the history:
// its text as it was, and the sentinel its outcome names, for errors.Is.
type readBackError struct {
	text string
	is   error // nil for "error"
}

func (e *readBackError) Error() string { return e.text }
func (e *readBackError) Unwrap() error { return e.is }

// readBack rebuilds the Err of job's run from its outcome word, whether
// it was a skip, and its error's text: a *SkipError for a skip, an error
// wrapping the outcome's sentinel otherwise. nil for a run without error.
func readBack(job, word string, skipped bool, text string) error {
	if skipped {
		reason := ErrBackend // an unknown word: a store that could not answer
		for _, o := range skipOutcomes {
			if o.name == word {
				reason = o.reason
			}
		}
		return &SkipError{Job: job, Reason: reason, Cause: &readBackError{text, reason}}
	}
	if text == "" {
		return nil
	}
	for _, o := range endOutcomes {
		if o.name == word {
			return &readBackError{text, o.is}
		}
	}
	return &readBackError{text: text}
}

// keptError is err as the history keeps it: its text cut to n bytes, its
// outcome the same.
func keptError(job string, err error, n int) error {
	if err == nil {
		return nil
	}
	_, skipped := errors.AsType[*SkipError](err)
	return readBack(job, outcomeOf(err, false), skipped, clipN(err.Error(), n))
}
