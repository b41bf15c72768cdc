package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

const timeLayout = "2006-01-02 15:04:05"

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// row writes one table row; every cell is made safe for a terminal.
func row(tw io.Writer, cells ...string) {
	for i, c := range cells {
		cells[i] = safe(c)
		if cells[i] == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
}

func printJobs(w io.Writer, jobs []job) error {
	tw := newTable(w)
	row(tw, "NAME", "SPEC", "SWITCH", "NEXT", "LAST RUN", "RESULT", "RUNNING")
	for _, j := range jobs {
		last, result := "", ""
		if r := j.Last; r != nil {
			last = stamp(r.Start) + " on " + r.Instance
			result = reportText(*r, 60)
		}
		running := ""
		if j.Running > 0 {
			running = strconv.Itoa(j.Running) + " on " + j.Instance
		}
		row(tw, j.Name, j.Spec, switchText(j, 40), stamp(j.Next), last, result, running)
	}
	return tw.Flush()
}

func printHistory(w io.Writer, d jobDetail) error {
	fmt.Fprintf(w, "%s (%s): %s\n\n", safe(d.Job.Name), safe(d.Job.Spec), switchText(d.Job, 200))
	if d.Job.HistoryError != "" {
		fmt.Fprintln(w, "history error:", safe(d.Job.HistoryError))
	}
	tw := newTable(w)
	row(tw, "TIME", "KIND", "TRIGGER", "TICK", "INSTANCE", "BY", "RESULT")
	for _, e := range d.History {
		row(tw, stamp(e.Time), e.Kind, e.Trigger, stamp(e.Tick), e.Instance, e.By, entryText(e))
	}
	return tw.Flush()
}

func printReport(w io.Writer, r report) error {
	tw := newTable(w)
	trigger := r.Trigger
	if r.By != "" {
		trigger += " by " + r.By
	}
	row(tw, "job", r.Job)
	row(tw, "trigger", trigger)
	row(tw, "instance", r.Instance)
	row(tw, "started", stamp(r.Start))
	row(tw, "result", reportText(r, 0))
	row(tw, "batches", strconv.Itoa(r.Batches))
	row(tw, "processed", strconv.Itoa(r.Processed))
	row(tw, "failed", strconv.Itoa(r.Failed))
	if r.Error != "" {
		row(tw, "error", r.Error)
	}
	return tw.Flush()
}

// switchText says whether the job is on, and why it is off.
func switchText(j job, max int) string {
	s := "on"
	if !j.Enabled {
		s = "off"
	}
	if st := j.Switch; st != nil && (st.Reason != "" || st.By != "") {
		s += ": " + cut(st.Reason, max)
		if st.By != "" {
			s += " (by " + st.By + ")"
		}
	}
	if j.EnabledError != "" {
		s += " [switch unreadable: " + cut(j.EnabledError, max) + "]"
	}
	return safe(s)
}

// reportText sums a run up: "done: 250 ok, 0 failed, 1.2s".
func reportText(r report, max int) string {
	if r.Skipped != "" {
		return "skipped (" + r.Skipped + "): " + cut(r.Error, max)
	}
	s := fmt.Sprintf("%s: %d ok, %d failed, %s", r.Stop, r.Processed, r.Failed, roundDuration(r.Duration))
	if r.Tripped {
		s += ", switch tripped"
	}
	if r.Error != "" && max > 0 {
		s += ": " + cut(r.Error, max)
	}
	return s
}

func entryText(e historyEntry) string {
	switch e.Kind { // the names of before cronguard's EventKind too (run, skip)
	case "finished", "run":
		if e.Report != nil {
			return reportText(*e.Report, 80)
		}
	case "skipped", "skip":
		return "skipped (" + e.Skip + "): " + cut(e.Error, 80)
	case "missed":
		return fmt.Sprintf("%d tick(s) missed, %s to %s", e.Missed, stamp(e.First), stamp(e.Last))
	case "flag":
		on := "off"
		if e.Enabled != nil && *e.Enabled {
			on = "on"
		}
		return "switched " + on + ": " + cut(e.Reason, 80)
	}
	return cut(e.Error, 80)
}

// roundDuration keeps about three digits: 1.506s, 12ms, 359µs.
func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Local().Format(timeLayout)
}

// cut shortens s to max runes (0: no limit).
func cut(s string, max int) string {
	if max <= 0 || utf8.RuneCountInString(s) <= max {
		return s
	}
	return string([]rune(s)[:max]) + "…"
}

// safe replaces control characters (newlines, tabs, terminal escapes) from
// the API's texts, which a job's error may carry, by spaces.
func safe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}
