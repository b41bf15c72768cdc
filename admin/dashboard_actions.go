package admin

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cronguard/cronguard"
)

// Action bounds.
const (
	// maxReasonBytes bounds the reason given with a flip or a run.
	maxReasonBytes = 1024
	// runWait is how long run-now waits for the run to end before it goes
	// back to the page; the run goes on, and its result lands in the history.
	runWait = 5 * time.Second
	// flashMax bounds a flash message; flashAge is how long it may wait to
	// be shown.
	flashMax = 500
	flashAge = 60
)

// back is where an action returns: the jobs list when the form says so,
// else the job's page. Never a URL from the request, so no open redirect.
func back(r *http.Request, name string) string {
	if r.PostForm.Get("back") == "list" {
		return basePath(r) + "/"
	}
	return jobURL(basePath(r), name)
}

// reason reads the form's reason, trimmed; too long is an error.
func reason(r *http.Request) (string, error) {
	s := strings.TrimSpace(r.PostForm.Get("reason"))
	if len(s) > maxReasonBytes {
		return "", fmt.Errorf("the reason is %d bytes; keep it under %d", len(s), maxReasonBytes)
	}
	return s, nil
}

// flip switches the job on or off from a form; off needs a reason.
func (d *dashboard) flip(on bool) authed {
	action := map[bool]string{true: "enable", false: "disable"}[on]
	return func(w http.ResponseWriter, r *http.Request, c caller) {
		name := r.PathValue("name")
		if _, err := d.h.s.Job(name); err != nil {
			d.renderError(w, r, c, http.StatusNotFound, "There is no job of that name.")
			return
		}
		why, err := reason(r)
		if err == nil && !on && why == "" {
			err = errors.New("switching a job off needs a reason")
		}
		if err == nil {
			err = d.h.s.SetEnabled(r.Context(), name, on, why)
		}
		d.h.audit(r, action, name, c.who, err, "reason", clipN(why, maxReasonBytes), "via", "dashboard")
		switch {
		case err != nil:
			d.setFlash(w, r, flash{"bad", "Not switched " + map[bool]string{true: "on", false: "off"}[on] + ": " + err.Error()})
		case on:
			d.setFlash(w, r, flash{"ok", "Switched " + clip(name) + " on."})
		default:
			d.setFlash(w, r, flash{"ok", "Switched " + clip(name) + " off: it stops before its next run or batch."})
		}
		http.Redirect(w, r, back(r, name), http.StatusSeeOther)
	}
}

// ran is what RunManually returned.
type ran struct {
	rep cronguard.Report
	err error
}

// run runs the job now, whole, as the API's run does: bypassing the switch,
// never the lock. It waits up to runWait for the result; the run belongs to
// the scheduler, not to the request (Scheduler.Stop still ends it).
func (d *dashboard) run(w http.ResponseWriter, r *http.Request, c caller) {
	name := r.PathValue("name")
	if _, err := d.h.s.Job(name); err != nil {
		d.renderError(w, r, c, http.StatusNotFound, "There is no job of that name.")
		return
	}
	why, err := reason(r)
	if err != nil {
		d.setFlash(w, r, flash{"bad", "Not run: " + err.Error()})
		http.Redirect(w, r, back(r, name), http.StatusSeeOther)
		return
	}
	done := make(chan ran, 1) // never blocks the run's goroutine
	ctx := context.WithoutCancel(r.Context())
	go func() {
		rep, err := d.h.s.RunManually(ctx, name)
		done <- ran{rep, err}
	}()
	t := time.NewTimer(runWait)
	defer t.Stop()
	select {
	case res := <-done:
		d.h.audit(r, "run", name, c.who, res.err, "reason", clipN(why, maxReasonBytes), "via", "dashboard", "stop", res.rep.Outcome())
		d.setFlash(w, r, runFlash(res))
	case <-t.C:
		d.h.audit(r, "run", name, c.who, nil, "reason", clipN(why, maxReasonBytes), "via", "dashboard", "stop", "still running")
		d.setFlash(w, r, flash{"ok", fmt.Sprintf("Started; still running after %s: its result will show in the history.", runWait)})
	case <-r.Context().Done():
		return // the person went away; the run goes on
	}
	http.Redirect(w, r, back(r, name), http.StatusSeeOther)
}

func runFlash(res ran) flash {
	if res.rep.Start.IsZero() { // it did not start: locked, stopped
		return flash{"bad", "Not run: " + res.err.Error()}
	}
	v := newRunView(&res.rep, time.Now(), shownError)
	text := fmt.Sprintf("Ran now: %s in %s, %d processed, %d failed", v.Outcome, v.Duration, v.Processed, v.Failed)
	if v.Err != "" {
		text += ": " + v.Err
	}
	return flash{map[bool]string{true: "ok", false: "bad"}[v.Class == "ok"], text + "."}
}

// flash is a one-time message shown on the page an action returns to.
type flash struct {
	Class string // ok, bad
	Text  string
}

// setFlash stores f in a short-lived cookie, signed so that no one else can
// put words on the dashboard.
func (d *dashboard) setFlash(w http.ResponseWriter, r *http.Request, f flash) {
	f.Text = clipN(f.Text, flashMax)
	v := f.Class + "." + b64.EncodeToString([]byte(f.Text)) + "." + b64.EncodeToString(d.sessions.mac("flash", f.Class, f.Text))
	http.SetCookie(w, cookie(flashCookie, v, basePath(r), flashAge))
}

// takeFlash returns the request's flash, if it is valid, and deletes it.
func (d *dashboard) takeFlash(w http.ResponseWriter, r *http.Request) *flash {
	ck, err := r.Cookie(flashCookie)
	if err != nil {
		return nil
	}
	http.SetCookie(w, cookie(flashCookie, "", basePath(r), -1))
	parts := strings.Split(ck.Value, ".")
	if len(parts) != 3 || (parts[0] != "ok" && parts[0] != "bad") {
		return nil
	}
	text, err1 := b64.DecodeString(parts[1])
	sig, err2 := b64.DecodeString(parts[2])
	if err1 != nil || err2 != nil || !hmac.Equal(sig, d.sessions.mac("flash", parts[0], string(text))) {
		return nil
	}
	return &flash{Class: parts[0], Text: string(text)}
}
