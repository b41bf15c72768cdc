package cronguard

import (
	"encoding/json"
	"errors"
)

// reportJSON is the wire form of a Report: its fields, its outcome (in
// "skipped" for a run that did not start, in "stop" for one that did, as
// the history and the admin API have always written them) and its error's
// text.
type reportJSON struct {
	plainReport
	Skipped string `json:"skipped,omitempty"`
	Stop    string `json:"stop,omitempty"`
	Error   string `json:"error,omitempty"`
}

type plainReport Report // no methods: no recursion

// MarshalJSON writes the report with its outcome (Outcome) and its error's
// text as "error" (omitted when nil).
func (r Report) MarshalJSON() ([]byte, error) {
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

// UnmarshalJSON reads what MarshalJSON writes. Err gets its text back, and
// the sentinel its outcome names, so errors.Is (ErrKilled, ErrRunaway, ...)
// and errors.As (*SkipError) work across JSON, and Outcome is the same.
func (r *Report) UnmarshalJSON(b []byte) error {
	var v reportJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Report(v.plainReport)
	if v.Skipped != "" {
		r.Err = readBack(r.Job, v.Skipped, true, v.Error)
	} else {
		r.Err = readBack(r.Job, v.Stop, false, v.Error)
		r.More = r.More || v.Stop == "max_batches" // written before More was
	}
	return nil
}
