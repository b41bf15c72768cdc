package admin

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/cronguard/cronguard"
)

// History limits of GET /api/jobs/{name}.
const (
	defaultHistoryLimit = 100
	maxHistoryLimit     = 1000
	// lastRunScan is how many history entries are searched for a job's
	// last run in the jobs list.
	lastRunScan = 20
	// listHistoryBudget bounds all the history reads of one jobs list
	// together, so a history store that is down costs the list this once,
	// not once per job; past it, jobs show this instance's last run.
	listHistoryBudget = 3 * time.Second
)

// Switch is the last flip of a job's kill switch flag, from
// cronguard.JobInfo's EnabledBy, EnabledReason and EnabledAt.
type Switch struct {
	Enabled bool      `json:"enabled"`
	Reason  string    `json:"reason,omitempty"`
	By      string    `json:"by,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// Job is a job as the API shows it.
type Job struct {
	Name string    `json:"name"`
	Spec string    `json:"spec"`
	Flag string    `json:"flag"`
	Prev time.Time `json:"prev,omitzero"` // last tick fired on this instance
	Next time.Time `json:"next,omitzero"` // next tick by the spec
	// Enabled is what the next run would act on; EnabledError says why the
	// kill switch could not answer, when it could not.
	Enabled      bool   `json:"enabled"`
	EnabledError string `json:"enabled_error,omitempty"`
	// Switch is the flag's last flip — reason, by whom, since when — when
	// the kill switch records one (memory, Redis; Unleash names its toggle).
	Switch *Switch `json:"switch,omitempty"`
	// Running counts the runs going on Instance, the instance serving this.
	Running  int    `json:"running"`
	Instance string `json:"instance"`
	// Last is the job's newest run in the history (any instance, with
	// Redis), or else the last run on this instance.
	Last         *cronguard.Report `json:"last,omitempty"`
	HistoryError string            `json:"history_error,omitempty"`
}

// JobList is the answer of GET /api/jobs.
type JobList struct {
	Jobs []Job `json:"jobs"`
}

// JobDetail is the answer of GET /api/jobs/{name}.
type JobDetail struct {
	Job     Job                      `json:"job"`
	History []cronguard.HistoryEntry `json:"history"`
}

func (h *handler) listJobs(w http.ResponseWriter, r *http.Request) {
	infos := h.s.Jobs()
	list := JobList{Jobs: make([]Job, 0, len(infos))}
	ctx, cancel := context.WithTimeout(r.Context(), listHistoryBudget)
	defer cancel()
	for _, info := range infos {
		list.Jobs = append(list.Jobs, h.view(ctx, info, nil))
	}
	writeJSON(w, http.StatusOK, list)
}

func (h *handler) getJob(w http.ResponseWriter, r *http.Request) {
	limit, err := historyLimit(r)
	if err != nil {
		fail(w, err)
		return
	}
	info, err := h.s.Job(r.PathValue("name"))
	if err != nil {
		fail(w, err)
		return
	}
	hist, herr := h.s.History(r.Context(), info.Name, limit)
	d := JobDetail{Job: h.view(r.Context(), info, hist), History: hist}
	if herr != nil {
		d.Job.HistoryError = clipN(herr.Error(), 1024)
	}
	if d.History == nil {
		d.History = []cronguard.HistoryEntry{}
	}
	writeJSON(w, http.StatusOK, d)
}

func historyLimit(r *http.Request) (int, error) {
	q := r.URL.Query().Get("limit")
	if q == "" {
		return defaultHistoryLimit, nil
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 || n > maxHistoryLimit {
		return 0, &badRequest{"bad_request", fmt.Sprintf("limit %q: want a number from 1 to %d", clip(q), maxHistoryLimit)}
	}
	return n, nil
}

// view builds the Job of info; hist, when given, is its history already
// read, else the last run is looked for in the newest entries.
func (h *handler) view(ctx context.Context, info cronguard.JobInfo, hist []cronguard.HistoryEntry) Job {
	j := Job{
		Name: info.Name, Spec: info.Spec, Flag: info.Flag, Prev: info.Prev, Next: info.Next,
		Enabled: info.Enabled, Running: info.Running, Instance: h.s.InstanceID(), Last: info.Last,
	}
	if info.EnabledErr != nil {
		j.EnabledError = clipN(info.EnabledErr.Error(), 1024)
	}
	if info.EnabledBy != "" || info.EnabledReason != "" || !info.EnabledAt.IsZero() {
		j.Switch = &Switch{Enabled: info.Enabled, Reason: info.EnabledReason, By: info.EnabledBy, At: info.EnabledAt}
	}
	if hist == nil {
		var err error
		if hist, err = h.s.History(ctx, info.Name, lastRunScan); err != nil {
			j.HistoryError = clipN(err.Error(), 1024)
		}
	}
	for _, e := range hist {
		if e.Kind == cronguard.EventFinished && e.Report != nil {
			j.Last = e.Report
			break
		}
	}
	return j
}
