package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/admin"
	"go.uber.org/goleak"
)

// shortOptions is the scenario sped up: a tick every second, 300 users at
// 300 e-mails/s (one full run takes 1 s), the switch off 400 ms into the
// first run and on again 1.5 s later, so the tick after the killed run is
// skipped and the next one finishes.
func shortOptions() options {
	return options{
		Users:       300,
		Spec:        "@every 1s",
		Duration:    5 * time.Second,
		PerSecond:   300,
		FlipAfter:   400 * time.Millisecond,
		OffFor:      1500 * time.Millisecond,
		StopTimeout: 10 * time.Second,
		AdminAddr:   "127.0.0.1:0",
	}
}

func TestScenario(t *testing.T) {
	defer goleak.VerifyNone(t)
	var out bytes.Buffer
	sum, err := run(t.Context(), &out, shortOptions())
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}

	if sum.Manual.Trigger != cronguard.TriggerManual || sum.Manual.Processed != 1 || sum.Manual.Outcome() != "done" {
		t.Errorf("manual run = %v; want trigger manual, 1 processed, done", sum.Manual)
	}
	if sum.Confirmed != sum.Users || sum.Outbox != sum.Users || sum.Doubles != 0 {
		t.Errorf("end state: %d/%d confirmed, %d outbox rows, %d users e-mailed twice; want every user e-mailed exactly once",
			sum.Confirmed, sum.Users, sum.Outbox, sum.Doubles)
	}

	var killed, processed int
	for _, r := range sum.Runs {
		processed += r.Processed
		if r.Outcome() == "killed" {
			killed++
			if r.Processed == 0 || r.Processed >= sum.Users-1 || r.Processed%100 != 0 {
				t.Errorf("killed run %v: want it stopped between batches, part way", r)
			}
		}
	}
	if killed == 0 {
		t.Errorf("no scheduled run stopped with %q; runs: %v", "killed", sum.Runs)
	}
	if got := sum.Manual.Processed + processed; got != sum.Users {
		t.Errorf("runs processed %d users in all, want %d", got, sum.Users)
	}
	if sum.Skipped["killed"] == 0 {
		t.Errorf("no tick was skipped while the switch was off; skipped: %v", sum.Skipped)
	}
	if !strings.Contains(out.String(), "no user got two e-mails") {
		t.Errorf("summary line missing from the output")
	}
}

// TestInterrupt cancels the scenario's context in the middle of a run, as
// Ctrl-C does: run stops the scheduler, waits for the run in flight, and
// still leaves every e-mailed user confirmed and e-mailed once.
func TestInterrupt(t *testing.T) {
	defer goleak.VerifyNone(t)
	o := shortOptions()
	o.Duration = time.Hour
	o.FlipAfter = time.Hour // no flip: only the interrupt ends things
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	start := time.Now()
	var out bytes.Buffer
	sum, err := run(ctx, &out, o)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("run returned %s after start; want soon after the interrupt at 1.5s", took)
	}
	if !strings.Contains(out.String(), "interrupted; stopping") {
		t.Errorf("output does not mention the interrupt")
	}
	if sum.Doubles != 0 || sum.Outbox != sum.Confirmed {
		t.Errorf("%d outbox rows, %d confirmed, %d users e-mailed twice; want one e-mail per confirmed user",
			sum.Outbox, sum.Confirmed, sum.Doubles)
	}
}

func TestRejectsNoUsers(t *testing.T) {
	o := shortOptions()
	o.Users = 0
	if _, err := run(t.Context(), &bytes.Buffer{}, o); err == nil {
		t.Fatal("run with 0 users: want an error")
	}
}

// TestAdminAPI: while the scenario runs, its admin API answers on
// 127.0.0.1 with the token it printed, and refuses a request without it.
func TestAdminAPI(t *testing.T) {
	defer goleak.VerifyNone(t)
	o := shortOptions()
	o.Duration = 2 * time.Second
	o.FlipAfter = time.Hour
	type api struct{ url, token string }
	got := make(chan api, 1)
	o.onAdmin = func(url, token string) { got <- api{url, token} }
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		_, err := run(t.Context(), &out, o)
		done <- err
	}()
	var a api
	select {
	case a = <-got:
	case err := <-done:
		t.Fatalf("run ended before serving the admin API: %v", err)
	}
	if !strings.HasPrefix(a.url, "http://127.0.0.1:") || len(a.token) < 16 {
		t.Errorf("admin API at %q with token %q; want loopback and a long token", a.url, a.token)
	}
	get := func(token string) (int, []byte) {
		req, _ := http.NewRequest("GET", a.url+"/api/jobs", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	code, body := get(a.token)
	var list admin.JobList
	if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Jobs) != 1 || list.Jobs[0].Name != jobName {
		t.Errorf("GET /api/jobs: %d %s", code, body)
	}
	checkDashboardAndMetrics(t, a.url, a.token)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	http.DefaultClient.CloseIdleConnections()
	for _, want := range []string{"admin API on " + a.url + ", token " + a.token, "CRONGUARD_URL=" + a.url,
		"dashboard on " + a.url + "/ (sign in with the token), metrics on " + a.url + "/metrics"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// checkDashboardAndMetrics: / is the dashboard (the sign-in form without
// credentials, the jobs with the token) and /metrics answers with the
// job's series, without a token.
func checkDashboardAndMetrics(t *testing.T, base, token string) {
	t.Helper()
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req) // follows the redirect to the sign-in form
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/", ""); code != http.StatusOK || !strings.Contains(body, "<h1>Sign in</h1>") {
		t.Errorf("GET / without a token: %d; want the sign-in form:\n%s", code, body)
	}
	if code, body := get("/", token); code != http.StatusOK || !strings.Contains(body, `<a href="/jobs/`+jobName+`">`) {
		t.Errorf("GET / with the token: %d; want the jobs page with %s:\n%s", code, jobName, body)
	}
	code, body := get("/metrics", "")
	for _, want := range []string{`cronguard_job_enabled{job_name="` + jobName + `"}`, `cronguard_runs_total{job_name="` + jobName + `"`} {
		if code != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET /metrics: %d, lacks %q:\n%s", code, want, body)
		}
	}
}
