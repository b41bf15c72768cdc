package admin

import (
	"errors"
	"fmt"
	"html/template"
	"net/url"
	"strconv"
	"time"

	"github.com/cronguard/cronguard"
)

// Display bounds: text from outside (job names, errors, reasons, actors)
// is cut to these many bytes on a page, then escaped by html/template.
const (
	shownName   = 200
	shownError  = 300  // in the jobs table
	shownDetail = 1000 // on the job page
	shownReason = 500
)

// templateFuncs are the functions the templates may call.
var templateFuncs = template.FuncMap{
	"plural": func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	},
	// f1 prints a chart coordinate.
	"f1": func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) },
	"actionData": func(j jobRow, csrf, back string, i int) actionData {
		return actionData{Job: j, CSRF: csrf, Back: back, ID: strconv.Itoa(i)}
	},
}

// actionData is what the "actions" template needs: the job, the form
// token, where to come back, and a suffix that keeps the inputs' ids unique.
type actionData struct {
	Job        jobRow
	CSRF, Back string
	ID         string
}

// jobRow is a job as the pages show it, built from the API's Job.
type jobRow struct {
	Name         string // cut to shownName
	URL          string // the job page
	Spec         string
	Next, Prev   when
	Last         *runView
	Enabled      bool
	EnabledError string
	Switch       *switchView
	Running      int
	Instance     string
	HistoryError string
}

// when is a time as shown: text, machine-readable, and relative to the
// page's rendering. Zero when the time is.
type when struct {
	Text, ISO, Rel string
}

// runView is a run's outcome as shown.
type runView struct {
	Outcome   string
	Class     string // ok, warn, bad
	Trigger   string
	By        string
	Start     when
	Duration  string
	Processed int
	Failed    int
	Err       string
}

// switchView is the kill switch's recorded state as shown.
type switchView struct {
	Reason, By string
	At         when
}

// jobURL is the job page of name under base; the name is one escaped path
// segment, whatever it holds ("/", "?", "<").
func jobURL(base, name string) string {
	return base + "/jobs/" + url.PathEscape(name)
}

func newJobRow(base string, j Job, now time.Time) jobRow {
	row := jobRow{
		Name: clipN(j.Name, shownName), URL: jobURL(base, j.Name), Spec: clipN(j.Spec, shownName),
		Next: newWhen(j.Next, now), Prev: newWhen(j.Prev, now),
		Enabled: j.Enabled, EnabledError: clipN(j.EnabledError, shownError),
		Running: j.Running, Instance: clipN(j.Instance, shownName), HistoryError: clipN(j.HistoryError, shownError),
	}
	if j.Last != nil {
		row.Last = newRunView(j.Last, now, shownError)
	}
	if st := j.Switch; st != nil && (st.Reason != "" || st.By != "" || !st.At.IsZero()) {
		row.Switch = &switchView{Reason: clipN(st.Reason, shownReason), By: clipN(st.By, shownName), At: newWhen(st.At, now)}
	}
	return row
}

func newRunView(r *cronguard.Report, now time.Time, errMax int) *runView {
	v := &runView{
		Outcome: outcome(r), Class: outcomeClass(r), Trigger: string(r.Trigger), By: clipN(r.By, shownName),
		Start: newWhen(r.Start, now), Duration: formatDuration(r.Duration), Processed: r.Processed, Failed: r.Failed,
	}
	if r.Err != nil {
		v.Err = clipN(r.Err.Error(), errMax)
	}
	return v
}

// outcome is a run's result in a word (Report.Outcome), prefixed for a
// run that was skipped.
func outcome(r *cronguard.Report) string {
	if skipped(r) {
		return "skipped: " + r.Outcome()
	}
	return r.Outcome()
}

// skipped reports whether r is a run that did not start.
func skipped(r *cronguard.Report) bool {
	_, ok := errors.AsType[*cronguard.SkipError](r.Err)
	return ok
}

// outcomeClass is ok for a clean run, warn for one stopped on purpose
// (switch, stop, skip), bad for a failure.
func outcomeClass(r *cronguard.Report) string {
	if skipped(r) {
		return "warn"
	}
	switch r.Outcome() {
	case "done", "max_batches":
		if r.Failed > 0 {
			return "bad"
		}
		return "ok"
	case "killed", "canceled":
		return "warn"
	}
	return "bad"
}

func newWhen(t, now time.Time) when {
	if t.IsZero() {
		return when{}
	}
	return when{Text: formatTime(t), ISO: t.Format(time.RFC3339), Rel: relative(t, now)}
}

func formatTime(t time.Time) string { return t.Format("2006-01-02 15:04:05 MST") }

// relative says "in 4s" or "3m ago", to the second, minute, hour or day.
func relative(t, now time.Time) string {
	d := t.Sub(now)
	suffix, prefix := "", "in "
	if d < 0 {
		d, suffix, prefix = -d, " ago", ""
	}
	var s string
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		s = strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		s = strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		s = strconv.Itoa(int(d/time.Hour)) + "h"
	default:
		s = strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return prefix + s + suffix
}

// formatDuration rounds d to what a person reads: µs under a millisecond,
// ms under a second, then tenths of a second.
func formatDuration(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// entryRow is one history entry as the job page shows it.
type entryRow struct {
	When      when
	Kind      string
	Trigger   string
	Tick      when
	Instance  string
	By        string
	Outcome   string
	Class     string // ok, warn, bad, info
	Run       bool   // a run: Duration and the counts apply
	Duration  string
	Batches   int
	Processed int
	Failed    int
	Detail    string // reason or error, cut to shownDetail
}

func newEntryRow(e cronguard.HistoryEntry, now time.Time) entryRow {
	row := entryRow{
		When: newWhen(e.Time, now), Kind: string(e.Kind), Trigger: string(e.Trigger), Tick: newWhen(e.Tick, now),
		Instance: clipN(e.Instance, shownName), By: clipN(e.By, shownName), Detail: clipN(e.Error, shownDetail),
	}
	switch e.Kind {
	case cronguard.EventFinished:
		row.Kind = "run" // the dashboard's words: run, skip, missed, flag
		if r := e.Report; r != nil {
			row.Run, row.Outcome, row.Class = true, outcome(r), outcomeClass(r)
			row.Duration, row.Batches, row.Processed, row.Failed = formatDuration(r.Duration), r.Batches, r.Processed, r.Failed
			if r.Err != nil && row.Detail == "" {
				row.Detail = clipN(r.Err.Error(), shownDetail)
			}
		}
	case cronguard.EventSkipped:
		row.Kind, row.Outcome, row.Class = "skip", "skipped: "+string(e.Skip), "warn"
	case cronguard.EventMissed:
		row.Outcome, row.Class = missedText(e), "bad"
	case cronguard.EventFlag:
		row.Outcome, row.Class = "switched on", "info"
		if e.Enabled != nil && !*e.Enabled {
			row.Outcome = "switched off"
		}
		row.Detail = clipN(e.Reason, shownDetail)
	default: // Kind "": the store could not read the entry
		row.Kind, row.Outcome, row.Class = "unreadable", "unreadable entry", "bad"
	}
	return row
}

func missedText(e cronguard.HistoryEntry) string {
	s := "missed"
	if e.Missed > 0 {
		s = fmt.Sprintf("missed %d %s", e.Missed, map[bool]string{true: "tick", false: "ticks"}[e.Missed == 1])
	}
	if !e.First.IsZero() && !e.Last.IsZero() {
		s += fmt.Sprintf(" (%s to %s)", formatTime(e.First), formatTime(e.Last))
	}
	return s
}
