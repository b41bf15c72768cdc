package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/cronguard/cronguard"
)

// runJob runs the job now: no body (or null) for one whole run, a JSON
// array for those items, decoded into the job's item type by the core.
func (h *handler) runJob(w http.ResponseWriter, r *http.Request) {
	name, who := r.PathValue("name"), cronguard.ActorFrom(r.Context())
	body, err := readBody(w, r, h.cfg.maxBody)
	var items []any
	if err == nil {
		items, err = parseItems(body)
	}
	if err != nil {
		h.audit(r, "run", name, who, err)
		fail(w, err)
		return
	}
	// The run belongs to the scheduler, not to this request.
	ctx := cronguard.WithActor(context.WithoutCancel(r.Context()), who)
	rep, err := h.s.RunManually(ctx, name, items...)
	if rep.Start.IsZero() { // it did not start: unknown job, wrong items, locked, stopped
		h.audit(r, "run", name, who, err, "items", countItems(items))
		fail(w, err)
		return
	}
	h.audit(r, "run", name, who, err, "items", countItems(items), "stop", rep.Outcome(),
		"processed", rep.Processed, "failed", rep.Failed)
	writeJSON(w, http.StatusOK, rep)
}

// parseItems reads a run's body: nothing or null for a whole run, else a
// non-empty JSON array, handed to the core as one json.RawMessage.
func parseItems(body []byte) ([]any, error) {
	t := bytes.TrimSpace(body)
	switch {
	case len(t) == 0 || bytes.Equal(t, []byte("null")):
		return nil, nil
	case !json.Valid(t):
		return nil, &badRequest{"bad_body", "body is not valid JSON; want a JSON array of items, or no body for a whole run"}
	case t[0] != '[':
		return nil, &badRequest{"bad_body", "body is not a JSON array; want a JSON array of items, or no body for a whole run"}
	}
	var elems []json.RawMessage
	if err := json.Unmarshal(t, &elems); err != nil || len(elems) == 0 {
		return nil, &badRequest{"no_items", "an empty array of items; send no body for a whole run"}
	}
	return []any{json.RawMessage(t)}, nil
}

// countItems counts the items of the one JSON array parseItems returns.
func countItems(items []any) int {
	if len(items) == 0 {
		return 0
	}
	var elems []json.RawMessage
	_ = json.Unmarshal(items[0].(json.RawMessage), &elems)
	return len(elems)
}

// flipBody is the body of enable and disable.
type flipBody struct {
	Reason string `json:"reason"`
}

// flip switches the job on or off; switching off needs a reason.
func (h *handler) flip(on bool) http.HandlerFunc {
	action := map[bool]string{true: "enable", false: "disable"}[on]
	return func(w http.ResponseWriter, r *http.Request) {
		name, who := r.PathValue("name"), cronguard.ActorFrom(r.Context())
		var b flipBody
		err := decodeBody(w, r, h.cfg.maxBody, &b)
		if err == nil && !on && b.Reason == "" {
			err = &badRequest{"reason_required", "disable needs a reason: {\"reason\": \"...\"}"}
		}
		if err == nil {
			err = h.s.SetEnabled(r.Context(), name, on, b.Reason)
		}
		h.audit(r, action, name, who, err, "reason", clipN(b.Reason, 1024))
		if err != nil {
			fail(w, err)
			return
		}
		info, err := h.s.Job(name)
		if err != nil {
			fail(w, err)
			return
		}
		writeJSON(w, http.StatusOK, h.view(r.Context(), info, nil))
	}
}

// readBody reads at most limit bytes of the body; past it, an
// *http.MaxBytesError (413).
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return b, nil
}

// decodeBody decodes an optional JSON object body into v, strictly.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	b, err := readBody(w, r, limit)
	if err != nil || len(bytes.TrimSpace(b)) == 0 {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &badRequest{"bad_body", "body: " + clip(err.Error())}
	}
	if dec.Decode(new(json.RawMessage)) != io.EOF {
		return &badRequest{"bad_body", "body: trailing data after the JSON object"}
	}
	return nil
}

// audit logs a state-changing call with who made it and how it ended.
func (h *handler) audit(r *http.Request, action, job, who string, err error, attrs ...any) {
	level := slog.LevelInfo
	args := append([]any{"job", clip(job), "by", clip(who), "remote", r.RemoteAddr}, attrs...)
	if err != nil {
		level = slog.LevelWarn
		args = append(args, "err", clipN(err.Error(), 1024))
	}
	h.cfg.logger.Log(r.Context(), level, "cronguard admin: "+action, args...)
}
