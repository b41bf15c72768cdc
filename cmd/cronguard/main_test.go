package main

// End-to-end tests: the CLI against a live httptest server that runs the
// real admin handler over a real Scheduler (the core module comes from the
// workspace, go.work).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/admin"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "cli-test-token-0123456789"

type user struct {
	ID    int64  `json:"id"`
	Email string `json:"email"`
}

type server struct {
	s       *cronguard.Scheduler
	url     string
	started chan struct{}
	release chan struct{}
	mu      sync.Mutex
	sent    []int64
}

func newServer(t *testing.T) *server {
	t.Helper()
	sv := &server{started: make(chan struct{}, 4), release: make(chan struct{})}
	quiet := slog.New(slog.DiscardHandler)
	s, err := cronguard.New(cronguard.WithLogger(quiet), cronguard.WithInstanceID("web-1"))
	if err != nil {
		t.Fatal(err)
	}
	sv.s = s
	reg := func(name, spec string, j cronguard.Job) {
		if err := s.Register(name, spec, j); err != nil {
			t.Fatal(err)
		}
	}
	reg("mail", "@every 1h", cronguard.Batch[user]{
		Fetch: func(context.Context, cronguard.Page) ([]user, error) { return nil, nil },
		Process: func(_ context.Context, u user) error {
			sv.mu.Lock()
			defer sv.mu.Unlock()
			sv.sent = append(sv.sent, u.ID)
			return nil
		},
		Key: func(u user) string { return u.Email },
	})
	reg("broken", "@daily", cronguard.JobFunc(func(context.Context) error {
		return errors.New("smtp: 550\x1b[31m mailbox full\nsecond line")
	}))
	reg("slow", "0 3 * * *", cronguard.JobFunc(func(ctx context.Context) error {
		sv.started <- struct{}{}
		select {
		case <-sv.release:
		case <-ctx.Done():
		}
		return nil
	}))
	h, err := admin.Handler(s, admin.Token(token), admin.Logger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	sv.url = srv.URL
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return sv
}

type result struct {
	code        int
	out, errOut string
}

// runCLI runs the CLI with args, the environment vars and stdin.
func runCLI(t *testing.T, vars map[string]string, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, env{
		In: strings.NewReader(stdin), Out: &out, Err: &errOut,
		Getenv: func(k string) string { return vars[k] },
	})
	return result{code, out.String(), errOut.String()}
}

// as parses a --json output.
func as[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.out), &v); err != nil {
		t.Fatalf("output is not the JSON expected: %v\n%s\nstderr: %s", err, r.out, r.errOut)
	}
	return v
}

func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", r.code, code, r.out, r.errOut)
	}
}

func TestCLIEndToEnd(t *testing.T) {
	sv := newServer(t)
	vars := map[string]string{"CRONGUARD_URL": sv.url, "CRONGUARD_TOKEN": token}

	// jobs, from the environment
	r := runCLI(t, vars, "", "jobs", "--json")
	wantCode(t, r, 0)
	list := as[admin.JobList](t, r)
	if len(list.Jobs) != 3 || list.Jobs[0].Name != "broken" || !list.Jobs[1].Enabled {
		t.Errorf("jobs --json: %+v", list.Jobs)
	}

	// run with items from stdin, and from a file
	r = runCLI(t, vars, `[{"id":1,"email":"a@x"},{"id":2,"email":"b@x"}]`, "run", "mail", "--items", "-", "--json")
	wantCode(t, r, 0)
	if rep := as[cronguard.Report](t, r); rep.Processed != 2 || rep.By != "token" || rep.Outcome() != "done" {
		t.Errorf("run --items -: %+v", rep)
	}
	file := filepath.Join(t.TempDir(), "items.json")
	if err := os.WriteFile(file, []byte(`[{"id":3,"email":"c@x"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, vars, "", "run", "mail", "--items", file)
	wantCode(t, r, 0)
	if !strings.Contains(r.out, "processed  1") || !strings.Contains(r.out, "manual by token") {
		t.Errorf("run table:\n%s", r.out)
	}

	// a run that fails: exit 1, the report still printed
	r = runCLI(t, vars, "", "run", "broken", "--json")
	wantCode(t, r, 1)
	if rep := as[cronguard.Report](t, r); rep.Outcome() != "error" || rep.Err == nil {
		t.Errorf("failed run: %+v", rep)
	}
	// wrong item type, unknown job: exit 1 with the API's error as JSON
	r = runCLI(t, vars, `[{"id":"x"}]`, "run", "mail", "--items", "-", "--json")
	wantCode(t, r, 1)
	if e := as[admin.ErrorBody](t, r); e.Code != "invalid_items" {
		t.Errorf("wrong items: %+v", e)
	}
	r = runCLI(t, vars, "", "history", "nope", "--json")
	wantCode(t, r, 1)
	if e := as[admin.ErrorBody](t, r); e.Code != "unknown_job" {
		t.Errorf("unknown job: %+v", e)
	}
	if !strings.Contains(r.errOut, "404 unknown_job") {
		t.Errorf("stderr: %s", r.errOut)
	}

	// locked: a run is going
	go func() { _, _ = sv.s.RunManually(context.Background(), "slow") }()
	<-sv.started
	r = runCLI(t, vars, "", "run", "slow", "--json")
	wantCode(t, r, 1)
	if e := as[admin.ErrorBody](t, r); e.Code != "locked" {
		t.Errorf("locked: %+v", e)
	}
	r = runCLI(t, vars, "", "jobs")
	wantCode(t, r, 0)
	if !strings.Contains(r.out, "1 on web-1") {
		t.Errorf("jobs table does not show the run going:\n%s", r.out)
	}
	close(sv.release)

	// disable, enable, and the history that records them
	r = runCLI(t, vars, "", "disable", "mail", "--reason", "bounce storm", "--json")
	wantCode(t, r, 0)
	if j := as[admin.Job](t, r); j.Enabled || j.Switch == nil || j.Switch.Reason != "bounce storm" || j.Switch.By != "token" {
		t.Errorf("disable: %+v", j)
	}
	r = runCLI(t, vars, "", "jobs", "--json")
	for _, j := range as[admin.JobList](t, r).Jobs {
		if j.Name == "mail" && j.Enabled {
			t.Error("mail still on after disable")
		}
	}
	r = runCLI(t, vars, "", "enable", "mail")
	wantCode(t, r, 0)
	if !strings.HasPrefix(r.out, "mail: on") {
		t.Errorf("enable: %q", r.out)
	}
	var d admin.JobDetail
	deadline := time.Now().Add(5 * time.Second)
	for {
		r = runCLI(t, vars, "", "history", "mail", "--limit", "10", "--json")
		wantCode(t, r, 0)
		if d = as[admin.JobDetail](t, r); len(d.History) == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var kinds []string
	for _, e := range d.History {
		kinds = append(kinds, string(e.Kind))
	}
	if got := strings.Join(kinds, " "); got != "flag flag finished finished" {
		t.Errorf("history kinds %q; want flag flag finished finished", got)
	}
	r = runCLI(t, vars, "", "history", "broken")
	wantCode(t, r, 0)
	if strings.Contains(r.out, "\x1b") || !strings.Contains(r.out, "mailbox full second line") {
		t.Errorf("history table must show the error on one line, without escapes:\n%q", r.out)
	}

	// watch: a fixed number of refreshes
	r = runCLI(t, vars, "", "watch", "--interval", "100ms", "--count", "2", "--json")
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if len(lines) != 2 {
		t.Fatalf("watch --count 2 --json: %d lines:\n%s", len(lines), r.out)
	}
	for _, l := range lines {
		var jl admin.JobList
		if err := json.Unmarshal([]byte(l), &jl); err != nil || len(jl.Jobs) != 3 {
			t.Errorf("watch line %q: %v", l, err)
		}
	}
	r = runCLI(t, vars, "", "watch", "--interval", "100ms", "--count", "2")
	wantCode(t, r, 0)
	if n := strings.Count(r.out, "NAME "); n != 2 {
		t.Errorf("watch table printed %d times, want 2:\n%s", n, r.out)
	}
}

// TestCLIJobsTable: the table for people is aligned: every column starts at
// the same offset on every line.
func TestCLIJobsTable(t *testing.T) {
	sv := newServer(t)
	if err := sv.s.SetEnabled(cronguard.WithActor(context.Background(), "alice"), "mail", false, "bounces"); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, nil, "", "--url", sv.url, "--token", token, "jobs")
	wantCode(t, r, 0)
	lines := strings.Split(strings.TrimRight(r.out, "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines:\n%s", len(lines), r.out)
	}
	col := strings.Index(lines[0], "SWITCH")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("column SWITCH not aligned at %d in %q", col, l)
		}
	}
	if !strings.Contains(r.out, "off: bounces (by alice)") {
		t.Errorf("switch state missing:\n%s", r.out)
	}
}

func TestCLIExitCodes(t *testing.T) {
	sv := newServer(t)
	ok := map[string]string{"CRONGUARD_URL": sv.url, "CRONGUARD_TOKEN": token}
	const wrong = "wrong-token-wrong-token"
	for _, c := range []struct {
		name string
		vars map[string]string
		args []string
		code int
	}{
		{"help", ok, []string{"--help"}, 0},
		{"no command", ok, nil, 2},
		{"unknown command", ok, []string{"frobnicate"}, 2},
		{"unknown flag", ok, []string{"jobs", "--frob"}, 2},
		{"disable without reason", ok, []string{"disable", "mail"}, 2},
		{"run without job", ok, []string{"run"}, 2},
		{"no url", map[string]string{"CRONGUARD_TOKEN": token}, []string{"jobs"}, 2},
		{"no token", map[string]string{"CRONGUARD_URL": sv.url}, []string{"jobs"}, 2},
		{"bad url", map[string]string{"CRONGUARD_URL": "ftp://x", "CRONGUARD_TOKEN": token}, []string{"jobs"}, 2},
		{"missing items file", ok, []string{"run", "mail", "--items", "/nonexistent/items.json"}, 2},
		{"bad limit", ok, []string{"history", "mail", "--limit", "0"}, 2},
		{"bad interval", ok, []string{"watch", "--interval", "1ms", "--count", "1"}, 2},
		{"wrong token", map[string]string{"CRONGUARD_URL": sv.url, "CRONGUARD_TOKEN": wrong}, []string{"jobs"}, 1},
		{"unreachable", map[string]string{"CRONGUARD_URL": "http://127.0.0.1:1", "CRONGUARD_TOKEN": token}, []string{"jobs"}, 1},
		{"watch unreachable", map[string]string{"CRONGUARD_URL": "http://127.0.0.1:1", "CRONGUARD_TOKEN": token},
			[]string{"watch", "--count", "1"}, 1},
		{"flag beats env", map[string]string{"CRONGUARD_URL": "http://127.0.0.1:1", "CRONGUARD_TOKEN": wrong},
			[]string{"--url", sv.url, "--token", token, "jobs"}, 0},
		{"ok", ok, []string{"jobs"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, c.vars, "", c.args...)
			wantCode(t, r, c.code)
			if strings.Contains(r.out+r.errOut, token) || strings.Contains(r.out+r.errOut, wrong) {
				t.Errorf("a token is in the output:\n%s\n%s", r.out, r.errOut)
			}
			if c.code != 0 && r.errOut == "" {
				t.Error("a failure with nothing on stderr")
			}
		})
	}
}
