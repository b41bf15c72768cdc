package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/admin"
)

const token = "e2e-token-0123456789abcdef"

// xssName is a job name that would run script if the dashboard did not
// escape it; the test fails on any alert.
const xssName = `<img src=x onerror=alert(1)>`

// chromium returns the path of Debian's chromium, or skips the test
// (fails it under CI=true).
func chromium(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("chromium")
	if err == nil {
		return p
	}
	msg := "chromium is not installed, so the dashboard's browser tests cannot run: apt-get install -y chromium"
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: failing instead of skipping)", msg)
	}
	fmt.Fprintf(os.Stderr, "\n*** SKIP %s: %s\n\n", t.Name(), msg)
	t.Skip("SKIPPED LOUDLY: " + msg)
	return ""
}

// artifacts is where the screenshots go: $CRONGUARD_ARTIFACTS, or
// testdata/screenshots-out (git ignores it).
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CRONGUARD_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "screenshots-out")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// tab is one headless chromium tab with a fresh profile, and what it saw:
// JavaScript dialogs (confirms are accepted), uncaught exceptions.
type tab struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots

	mu         sync.Mutex
	dialogs    []string // "type: message"
	exceptions []string
}

func newTab(t *testing.T) *tab {
	exe := chromium(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	if os.Geteuid() == 0 { // chromium refuses to run as root with its sandbox
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	tb := &tab{t: t, ctx: ctx, dir: artifacts(t)}
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium %s: %v", exe, err)
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			tb.note(&tb.dialogs, string(ev.Type)+": "+ev.Message)
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			tb.note(&tb.exceptions, ev.ExceptionDetails.Text)
		}
	}()
	// Record every Content-Security-Policy violation of every page: the
	// dashboard must need no inline script or style.
	_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
		Source: `window.__csp = []; document.addEventListener('securitypolicyviolation',
			e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sourceFile + ':' + e.lineNumber));`,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func (tb *tab) note(list *[]string, s string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	*list = append(*list, s)
}

func (tb *tab) seen() (dialogs, exceptions []string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Clone(tb.dialogs), slices.Clone(tb.exceptions)
}

// do runs actions with a bound, failing the test with what it was doing.
func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

// text is the text of the first element sel matches.
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		tb.t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// eval evaluates JavaScript in the page, awaiting a promise.
func eval[T any](tb *tab, js string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitText reloads the page until sel's text holds want, for up to 20s.
func (tb *tab) waitText(sel, want string) string {
	tb.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := tb.text(sel)
		if strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("%s never showed %q; last:\n%s", sel, want, got)
		}
		time.Sleep(300 * time.Millisecond)
		tb.do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("main")))
	}
}

// shot saves a full-page PNG screenshot among the artifacts.
func (tb *tab) shot(name string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		tb.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(tb.dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot: %s", path)
}

// noCSPViolations checks the page the tab shows.
func (tb *tab) noCSPViolations(where string) {
	tb.t.Helper()
	if v := eval[[]string](tb, `window.__csp || []`); len(v) > 0 {
		tb.t.Errorf("%s: Content-Security-Policy violations: %q", where, v)
	}
}

// app is a real Scheduler, on memory backends, with the admin handler on a
// live server.
type app struct {
	s    *cronguard.Scheduler
	srv  *httptest.Server
	runs atomic.Int64 // scheduled and manual runs of "heartbeat"
}

func newApp(t *testing.T) *app {
	a := &app{}
	s, err := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)), cronguard.WithInstanceID("e2e-1"), cronguard.WithLocation(time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	a.s = s
	must(t, s.Register("heartbeat", "* * * * * *", cronguard.JobFunc(func(ctx context.Context) error {
		a.runs.Add(1)
		time.Sleep(20 * time.Millisecond)
		return nil
	})))
	must(t, s.Register(xssName, "@daily", cronguard.JobFunc(func(context.Context) error { return errors.New(`<script>alert(2)</script>`) })))
	must(t, s.Register("nightly report/eu", "@daily", cronguard.JobFunc(func(context.Context) error { return nil })))
	_, _ = s.RunManually(context.Background(), xssName) // an escaped error on the page
	h, err := admin.Handler(s, admin.Token(token), admin.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewServer(h)
	must(t, s.Start())
	t.Cleanup(func() {
		a.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return a
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// history returns heartbeat's newest entries.
func (a *app) history(t *testing.T) []cronguard.HistoryEntry {
	h, err := a.s.History(context.Background(), "heartbeat", 100)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestDashboardInBrowser drives the dashboard in headless chromium: sign
// in, see the jobs, switch a job off with the keyboard and see it skip the
// next tick, run it now and see the result, and see state changes without
// the CSRF token refused, from the page and from another origin.
func TestDashboardInBrowser(t *testing.T) {
	tb := newTab(t)
	a := newApp(t)
	base := a.srv.URL

	// Sign in through the form.
	tb.do("open the dashboard", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("token")))
	if title := tb.text("h1"); title != "Sign in" {
		t.Fatalf("signed out, / shows %q; want the sign-in form", title)
	}
	tb.shot("01-login")
	tb.do("sign in", chromedp.SendKeys(chromedp.ID("token"), token), chromedp.Click(chromedp.CSS(`.login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS("table.jobs")))
	tb.noCSPViolations("jobs page")

	// The jobs, with the hostile name as text.
	jobs := tb.text("table.jobs")
	for _, want := range []string{"heartbeat", "nightly report/eu", xssName, "<script>alert(2)</script>", "* * * * * *"} {
		if !strings.Contains(jobs, want) {
			t.Errorf("jobs table lacks %q:\n%s", want, jobs)
		}
	}
	waitFor(t, "a scheduled run of heartbeat", func() bool {
		for _, e := range a.history(t) {
			if e.Kind == cronguard.EventFinished && e.Trigger == cronguard.TriggerSchedule {
				return true
			}
		}
		return false
	})
	tb.do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("table.jobs")))
	tb.waitText(`tr[data-job="heartbeat"]`, "done")
	tb.shot("02-jobs")

	// Switch heartbeat off, with the keyboard only: Enter on "Switch
	// off…", type the reason, Enter; the confirm dialog is accepted.
	row := `tr[data-job="heartbeat"] `
	tb.do("switch heartbeat off",
		chromedp.SendKeys(chromedp.CSS(row+`details:has(form[action$="/disable"]) > summary`), "\r"),
		chromedp.WaitVisible(chromedp.CSS(row+`form[action$="/disable"] input[name=reason]`)),
		chromedp.SendKeys(chromedp.CSS(row+`form[action$="/disable"] input[name=reason]`), "e2e: stop the heartbeat\r"),
		chromedp.WaitVisible(chromedp.CSS(".flash-ok")),
	)
	flipped := time.Now()
	if got := tb.text(".flash-ok"); !strings.Contains(got, "Switched heartbeat off") {
		t.Errorf("flash after the switch: %q", got)
	}
	if info, _ := a.s.Job("heartbeat"); info.Enabled {
		t.Fatal("heartbeat is still on after the switch in the browser")
	}
	if got := tb.text(row); !strings.Contains(got, "off") || !strings.Contains(got, "e2e: stop the heartbeat") || !strings.Contains(got, "by token") {
		t.Errorf("heartbeat's row after the switch: %q", got)
	}
	if d, _ := tb.seen(); len(d) != 1 || !strings.HasPrefix(d[0], "confirm: Switch off heartbeat?") {
		t.Errorf("dialogs: %q; want one confirm before the switch", d)
	}
	tb.shot("03-switched-off")

	// The next tick is skipped, killed: on the job page's history.
	tb.do("open heartbeat's page", chromedp.Click(chromedp.CSS(row+`a[href="/jobs/heartbeat"]`)), chromedp.WaitVisible(chromedp.CSS("table.history")))
	tb.waitText("table.history tbody tr:first-child", "skipped: killed")
	runsAtSkip := a.runs.Load()
	time.Sleep(2500 * time.Millisecond) // two more ticks
	var skips int
	for _, e := range a.history(t) {
		switch {
		case e.Kind == cronguard.EventSkipped && e.Skip == "killed":
			skips++
		case e.Kind == cronguard.EventFinished && e.Report.Start.After(flipped.Add(time.Second)):
			t.Errorf("a run started %s after the switch went off: %v", e.Report.Start.Sub(flipped), e.Report)
		}
	}
	if skips < 2 || a.runs.Load() != runsAtSkip {
		t.Errorf("after the switch: %d killed skips, %d runs more; want every tick skipped", skips, a.runs.Load()-runsAtSkip)
	}
	tb.do("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("table.history")))
	tb.noCSPViolations("job page")
	tb.shot("04-job-killed")

	// Run now, with the mouse: it runs although switched off.
	before := a.runs.Load()
	tb.do("run heartbeat now",
		chromedp.Click(chromedp.CSS(`details:has(form[action$="/run"]) > summary`)),
		chromedp.SendKeys(chromedp.CSS(`form[action$="/run"] input[name=reason]`), "e2e: one by hand"),
		chromedp.Click(chromedp.CSS(`form[action$="/run"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(".flash-ok")),
	)
	if got := tb.text(".flash-ok"); !strings.Contains(got, "Ran now: done") {
		t.Errorf("flash after run-now: %q", got)
	}
	if a.runs.Load() != before+1 {
		t.Errorf("run-now ran heartbeat %d times", a.runs.Load()-before)
	}
	tb.waitText("table.history", "run (manual)")
	if got := tb.text("table.history tbody tr.kind-run"); !strings.Contains(got, "by token") || !strings.Contains(got, "done") {
		t.Errorf("newest run row: %q; want the manual run by token, done", got)
	}
	tb.shot("05-run-now")

	// State changes without the token: a fetch from the page, and a form
	// built in the page, are refused with 403; nothing changes.
	status := eval[int](tb, `fetch('/jobs/heartbeat/enable', {method: 'POST',
		headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'reason=no+token'}).then(r => r.status)`)
	if status != http.StatusForbidden {
		t.Errorf("POST without the CSRF token from the page: %d, want 403", status)
	}
	status = eval[int](tb, `fetch('/jobs/heartbeat/enable', {method: 'POST',
		headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'reason=x&csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'}).then(r => r.status)`)
	if status != http.StatusForbidden {
		t.Errorf("POST with a wrong CSRF token from the page: %d, want 403", status)
	}
	tb.do("post a form with no token",
		chromedp.Evaluate[chromedp.Void](`(() => { const f = document.createElement('form'); f.method = 'post';
			f.action = '/jobs/heartbeat/enable'; document.body.append(f); f.submit(); })()`),
		chromedp.WaitVisible(chromedp.CSS("p.error-message")))
	if h1 := tb.text("h1"); h1 != "403 Forbidden" {
		t.Errorf("the form without a token gave %q; want 403 Forbidden", h1)
	}
	tb.shot("06-csrf-refused")

	// From another origin (same site: 127.0.0.1 on another port, so the
	// SameSite cookie goes along): an auto-posting page with a guessed
	// token. The browser's Sec-Fetch-Site and the token both refuse it.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html><form id=f method=post action="%s/jobs/heartbeat/enable">
			<input name=csrf value=guess><input name=reason value=pwned></form>
			<script>document.getElementById('f').submit()</script>`, base)
	}))
	defer evil.Close()
	tb.do("visit a page of another origin", chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("p.error-message")))
	if h1 := tb.text("h1"); h1 != "403 Forbidden" {
		t.Errorf("the cross-origin form gave %q; want 403 Forbidden", h1)
	}
	tb.shot("07-cross-origin-refused")
	if info, _ := a.s.Job("heartbeat"); info.Enabled {
		t.Fatal("a refused form switched heartbeat back on")
	}

	// Switch it on again from its page; scheduled runs resume.
	tb.do("back to heartbeat's page", chromedp.Navigate(base+"/jobs/heartbeat"), chromedp.WaitVisible(chromedp.CSS("table.history")))
	tb.do("switch heartbeat on",
		chromedp.Click(chromedp.CSS(`details:has(form[action$="/enable"]) > summary`)),
		chromedp.Click(chromedp.CSS(`form[action$="/enable"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(".flash-ok")))
	tb.waitText("table.history tbody tr:first-child", "run (schedule)")

	// On a phone.
	tb.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("table.jobs")))
	if w := eval[int](tb, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("jobs page on a 390px phone is %dpx wide: it scrolls sideways", w)
	}
	tb.shot("08-jobs-phone")
	tb.do("job page on a phone", chromedp.Navigate(base+"/jobs/heartbeat"), chromedp.WaitVisible(chromedp.CSS("table.history")))
	if w := eval[int](tb, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("job page on a 390px phone is %dpx wide", w)
	}
	tb.shot("09-job-phone")
	tb.noCSPViolations("job page on a phone")

	dialogs, exceptions := tb.seen()
	for _, d := range dialogs {
		if !strings.HasPrefix(d, "confirm: ") {
			t.Errorf("a dialog that is not a confirmation: %q (script from a job name or error ran?)", d)
		}
	}
	if len(dialogs) != 3 {
		t.Errorf("dialogs: %q; want a confirm for the switch off, the run and the switch on", dialogs)
	}
	if len(exceptions) > 0 {
		t.Errorf("uncaught JavaScript exceptions: %q", exceptions)
	}
}

// TestBrowserRefreshKeepsForms: the page refreshes itself every few
// seconds, but not while a form on it is open.
func TestBrowserRefreshKeepsForms(t *testing.T) {
	tb := newTab(t)
	a := newApp(t)
	tb.do("sign in", chromedp.Navigate(a.srv.URL+"/login?next="+url.QueryEscape("/jobs/heartbeat")),
		chromedp.SendKeys(chromedp.ID("token"), token+"\r"), chromedp.WaitVisible(chromedp.CSS("table.history")))
	// Mark the live region: a refresh replaces it.
	eval[bool](tb, `(document.getElementById('live').dataset.mark = 'old') === 'old'`)
	waitFor(t, "a refresh", func() bool {
		return eval[bool](tb, `document.getElementById('live').dataset.mark === undefined`)
	})
	tb.do("open the run form", chromedp.Click(chromedp.CSS(`details:has(form[action$="/run"]) > summary`)),
		chromedp.SendKeys(chromedp.CSS(`form[action$="/run"] input[name=reason]`), "half typed"))
	eval[bool](tb, `(document.getElementById('live').dataset.mark = 'open') === 'open'`)
	time.Sleep(7 * time.Second) // more than a refresh period
	if v := eval[string](tb, `document.querySelector('form[action$="/run"] input[name=reason]').value`); v != "half typed" {
		t.Errorf("the half-typed reason is %q after a refresh period", v)
	}
	if !eval[bool](tb, `document.getElementById('live').dataset.mark === 'open'`) {
		t.Error("the page refreshed under an open form")
	}
}

// waitFor polls cond for up to 20s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
