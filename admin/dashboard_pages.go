package admin

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/cronguard/cronguard"
)

// Job page bounds: it shows the newest pageHistory entries (?limit= from 1
// to maxHistoryLimit), whatever the history holds, and charts the newest
// chartRuns runs among them.
const pageHistory = 200

// refreshSeconds is how often the pages re-read themselves (dashboard.js),
// unless the person is using a form on them.
const refreshSeconds = 5

// jobsPageData is the data of jobs.html.
type jobsPageData struct {
	layout
	Jobs     []jobRow
	Instance string
	Refresh  int
}

func (d *dashboard) jobsPage(w http.ResponseWriter, r *http.Request, c caller) {
	l := d.layout(r, c, "Jobs")
	l.Flash = d.takeFlash(w, r)
	now := time.Now()
	infos := d.h.s.Jobs()
	// One bound for all the history reads, as the API's list has.
	ctx, cancel := context.WithTimeout(r.Context(), listHistoryBudget)
	defer cancel()
	page := &jobsPageData{layout: l, Jobs: make([]jobRow, 0, len(infos)), Instance: clipN(d.h.s.InstanceID(), shownName), Refresh: refreshSeconds}
	for _, info := range infos {
		page.Jobs = append(page.Jobs, newJobRow(l.Base, d.h.view(ctx, info, nil), now))
	}
	d.render(w, r, http.StatusOK, "jobs.html", page)
}

// jobPageData is the data of job.html.
type jobPageData struct {
	layout
	Job          jobRow
	Entries      []entryRow
	Limit        int
	MoreURL      string // a page with more entries; "" when there are no more to show
	Chart        chart
	HistoryError string
	Refresh      int
}

func (d *dashboard) jobPage(w http.ResponseWriter, r *http.Request, c caller) {
	limit, ok := pageLimit(r.URL.Query().Get("limit"))
	if !ok {
		d.renderError(w, r, c, http.StatusBadRequest, "limit: want a number from 1 to "+strconv.Itoa(maxHistoryLimit)+".")
		return
	}
	info, err := d.h.s.Job(r.PathValue("name"))
	if err != nil {
		d.renderError(w, r, c, http.StatusNotFound, "There is no job of that name.")
		return
	}
	l := d.layout(r, c, info.Name)
	l.Flash = d.takeFlash(w, r)
	hist, herr := d.h.s.History(r.Context(), info.Name, limit)
	if hist == nil {
		hist = []cronguard.HistoryEntry{} // read already (or failed): view must not read again
	}
	now := time.Now()
	page := &jobPageData{
		layout: l, Job: newJobRow(l.Base, d.h.view(r.Context(), info, hist), now),
		Entries: make([]entryRow, 0, len(hist)), Limit: limit, Chart: newChart(hist), Refresh: refreshSeconds,
	}
	if herr != nil {
		page.HistoryError = clipN(herr.Error(), shownDetail)
	}
	for _, e := range hist {
		page.Entries = append(page.Entries, newEntryRow(e, now))
	}
	if len(hist) == limit && limit < maxHistoryLimit {
		page.MoreURL = page.Job.URL + "?limit=" + strconv.Itoa(min(limit*5, maxHistoryLimit))
	}
	d.render(w, r, http.StatusOK, "job.html", page)
}

// pageLimit reads ?limit=: pageHistory when absent.
func pageLimit(q string) (int, bool) {
	if q == "" {
		return pageHistory, true
	}
	n, err := strconv.Atoi(q)
	return n, err == nil && n >= 1 && n <= maxHistoryLimit
}
