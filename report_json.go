package cronguard

import (
	"encoding/json"
	"errors"
)

// MarshalJSON writes the report with its error's text as "error" (omitted
// when nil), so a Report read back from JSON (the admin API, the Redis
// history) still tells why a run failed.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report // no methods: no recursion
	var msg string
	if r.Err != nil {
		msg = r.Err.Error()
	}
	return json.Marshal(struct {
		plain
		Error string `json:"error,omitempty"`
	}{plain(r), msg})
}

// UnmarshalJSON reads what MarshalJSON writes. Err becomes a plain error
// with the text of "error": errors.Is does not reach the original sentinels
// across JSON; branch on Stop and Skipped instead.
func (r *Report) UnmarshalJSON(b []byte) error {
	type plain Report
	var v struct {
		plain
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*r = Report(v.plain)
	if v.Error != "" {
		r.Err = errors.New(v.Error)
	}
	return nil
}
