package cronguard

import (
	"encoding/json"
	"errors"
)

// reportJSON is the wire form of a Report: its fields, its outcome (in
// "skipped" for a run that did not start, in "stop" for one that did, as
// the history and the admin API have always written them) and its error's
// text. appendReportJSON writes the same bytes without reflection; this
// type stays the reader, and the reference the tests compare it with.
type reportJSON struct {
	plainReport
	Skipped string `json:"skipped,omitempty"`
	Stop    string `json:"stop,omitempty"`
	Error   string `json:"error,omitempty"`
}

type plainReport Report // no methods: no recursion

// wire returns the wire form of r.
func (r *Report) wire() reportJSON {
	v := reportJSON{plainReport: plainReport(*r)}
	v.Skipped, v.Stop = r.outcomeFields()
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	return v
}

// outcomeFields returns the outcome of r as "skipped" (a run that did not
// start) or as "stop" (one that did); the other is empty.
func (r *Report) outcomeFields() (skipped, stop string) {
	if _, ok := errors.AsType[*SkipError](r.Err); ok {
		return r.Outcome(), ""
	}
	return "", r.Outcome()
}

// MarshalJSON writes the report with its outcome (Outcome) and its error's
// text as "error" (omitted when nil). It fails only for a time JSON cannot
// hold (a year outside [0,9999]), with encoding/json's error.
func (r Report) MarshalJSON() ([]byte, error) {
	if b, ok := appendReportJSON(make([]byte, 0, 320), &r); ok {
		return b, nil
	}
	return json.Marshal(r.wire()) // its error
}

// appendReportJSON appends what json.Marshal(r.wire()) writes, byte for
// byte (compact, HTML-escaped), in the field order of reportJSON. ok is
// false when a time cannot be written (appendJSONTime).
func appendReportJSON(b []byte, r *Report) (_ []byte, ok bool) {
	o := newJSONObject(b)
	o.str("job", r.Job)
	o.str("trigger", string(r.Trigger))
	o.time("tick", r.Tick)
	o.str("instance", r.Instance)
	o.time("start", r.Start)
	o.int("duration", int64(r.Duration))
	o.strOmit("by", r.By)
	o.int("batches", int64(r.Batches))
	o.int("processed", int64(r.Processed))
	o.int("failed", int64(r.Failed))
	o.boolOmit("more", r.More)
	o.boolOmit("tripped", r.Tripped)
	o.intOmit("duplicates", int64(r.Duplicates))
	o.intOmit("token", r.Token)
	skipped, stop := r.outcomeFields()
	o.strOmit("skipped", skipped)
	o.strOmit("stop", stop)
	if r.Err != nil {
		o.strOmit("error", r.Err.Error())
	}
	return o.end()
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
