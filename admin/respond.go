package admin

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/internal/textclip"
)

// ErrorBody is the JSON of every error response.
type ErrorBody struct {
	Error string `json:"error"` // what went wrong, for people
	Code  string `json:"code"`  // what went wrong, for programs: unknown_job, locked, invalid_items, ...
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the client went away: nothing to tell it
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: clipN(msg, 2048), Code: code})
}

// statusOf maps an error to its status and code.
func statusOf(err error) (int, string) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "body_too_large"
	case errors.Is(err, cronguard.ErrUnknownJob):
		return http.StatusNotFound, "unknown_job"
	case errors.Is(err, cronguard.ErrLocked):
		return http.StatusConflict, "locked"
	case errors.Is(err, cronguard.ErrInvalidItems):
		return http.StatusBadRequest, "invalid_items"
	case errors.Is(err, cronguard.ErrNotFlippable):
		return http.StatusConflict, "not_flippable"
	case errors.Is(err, cronguard.ErrStopped):
		return http.StatusServiceUnavailable, "stopped"
	}
	var bad *badRequest
	if errors.As(err, &bad) {
		return http.StatusBadRequest, bad.code
	}
	return http.StatusInternalServerError, "internal"
}

// badRequest is a request the API cannot take: a 400 with its code.
type badRequest struct{ code, msg string }

func (e *badRequest) Error() string { return e.msg }

func fail(w http.ResponseWriter, err error) {
	status, code := statusOf(err)
	writeError(w, status, code, err.Error())
}

// clip cuts s to 200 bytes on a UTF-8 boundary: request values (paths,
// methods) echoed in errors and logs stay short.
func clip(s string) string { return clipN(s, 200) }

func clipN(s string, n int) string { return textclip.Cut(s, n) }
