package unleash

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	unleashclient "github.com/Unleash/unleash-client-go/v4"
	"github.com/cronguard/cronguard"
)

// These tests run against a real Unleash server (scripts/unleash-up):
//
//	scripts/unleash-up && set -a && . /tmp/cronguard-unleash/env && set +a
//	cd unleash && go test -race -count=1 -run 'TestUnleash' .
//
// Without UNLEASH_URL they skip, unless CI=true, where they fail.

// unleashServer is the Unleash server under test.
type unleashServer struct {
	url, adminToken, apiToken string
}

func unleashFromEnv(t *testing.T) unleashServer {
	t.Helper()
	u := unleashServer{
		url:        strings.TrimSuffix(os.Getenv("UNLEASH_URL"), "/"),
		adminToken: os.Getenv("UNLEASH_ADMIN_TOKEN"),
		apiToken:   os.Getenv("UNLEASH_API_TOKEN"),
	}
	if u.url == "" || u.adminToken == "" || u.apiToken == "" {
		msg := "Unleash integration test: UNLEASH_URL, UNLEASH_ADMIN_TOKEN and UNLEASH_API_TOKEN are not all set; " +
			"start a server with scripts/unleash-up and load /tmp/cronguard-unleash/env (scripts/test does both)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
	return u
}

// admin calls the Admin API.
func (u unleashServer) admin(t *testing.T, method, path, body string) {
	t.Helper()
	req, err := http.NewRequest(method, u.url+"/admin/projects/default/features"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", u.adminToken)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("Unleash Admin API %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		t.Fatalf("Unleash Admin API %s %s: %s: %s", method, path, resp.Status, b.String())
	}
}

// createToggle creates a toggle, off in every environment, archived when
// the test ends.
func (u unleashServer) createToggle(t *testing.T, name string) {
	t.Helper()
	u.admin(t, http.MethodPost, "", fmt.Sprintf(`{"name":%q}`, name))
	t.Cleanup(func() {
		req, _ := http.NewRequest(http.MethodDelete, u.url+"/admin/projects/default/features/"+name, nil)
		req.Header.Set("Authorization", u.adminToken)
		c := &http.Client{Timeout: 5 * time.Second}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
		}
	})
}

// flip turns a toggle on or off in the development environment, the one
// the API token is for.
func (u unleashServer) flip(t *testing.T, name string, on bool) {
	t.Helper()
	state := "off"
	if on {
		state = "on"
	}
	u.admin(t, http.MethodPost, "/"+name+"/environments/development/"+state, "")
}

// unleashListener counts what the client reports.
type unleashListener struct {
	errors atomic.Int64
	ready  atomic.Bool
}

func (l *unleashListener) OnError(error)   { l.errors.Add(1) }
func (l *unleashListener) OnWarning(error) {}
func (l *unleashListener) OnReady()        { l.ready.Store(true) }
func (l *unleashListener) OnUpdate()       {}

// newUnleashClient returns a client with the settings the switch's
// documentation recommends (a short refresh), its backup in backupDir
// (a new temporary directory when ""), closed when the test ends — after
// the schedulers made later, which t.Cleanup stops first.
func (u unleashServer) newUnleashClient(t *testing.T, app, backupDir string) (*unleashclient.Client, *unleashListener) {
	t.Helper()
	if backupDir == "" {
		backupDir = t.TempDir()
	}
	l := &unleashListener{}
	c, err := unleashclient.NewClient(
		unleashclient.WithUrl(u.url),
		unleashclient.WithAppName(app),
		unleashclient.WithCustomHeaders(http.Header{"Authorization": {u.apiToken}}),
		unleashclient.WithRefreshInterval(250*time.Millisecond),
		unleashclient.WithBackupPath(backupDir),
		unleashclient.WithHttpClient(&http.Client{Timeout: 2 * time.Second}),
		unleashclient.WithListener(l),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, l
}

func unleashName(prefix string) string {
	return prefix + "-" + strconv.FormatUint(rand.Uint64()%1e9, 36)
}

// Toggle off: the job is skipped (killed); on: it runs. A missing toggle is
// off. The switch cannot be flipped from cronguard.
func TestUnleashKillSwitchToggle(t *testing.T) {
	srv := unleashFromEnv(t)
	job := unleashName("ug-job")
	toggle := DefaultUnleashPrefix + job
	srv.createToggle(t, toggle) // created off

	client, _ := srv.newUnleashClient(t, unleashName("cronguard-test"), "")
	ks := NewUnleashKillSwitch(client)
	s, rec := newScheduler(t, cronguard.WithKillSwitch(ks))
	var ran atomic.Int32
	if err := s.Register(job, everySecond, cronguard.JobFunc(func(context.Context) error { ran.Add(1); return nil })); err != nil {
		t.Fatal(err)
	}
	// The client has fetched once the toggle is known to it.
	waitFor(t, 10*time.Second, "client fetched the new toggle", func() bool {
		for _, f := range client.ListFeatures() {
			if f.Name == toggle {
				return true
			}
		}
		return false
	})
	seen := time.Now()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if ev := rec.outcome(t, job, seen); ev.Skip != "killed" || !errors.Is(ev.Err, cronguard.ErrKilled) || ran.Load() != 0 {
		t.Fatalf("toggle off: %+v, ran %d", ev, ran.Load())
	}

	flipped := time.Now()
	srv.flip(t, toggle, true)
	took := waitFor(t, 10*time.Second, "toggle on reaches the client", ksIs(ks, job, true))
	t.Logf("Unleash flip on seen after %s (refresh 250ms)", took)
	if ev := rec.outcome(t, job, time.Now()); ev.Kind != cronguard.EventFinished || ev.Report.Outcome() != "done" || ran.Load() == 0 {
		t.Fatalf("toggle on: %+v, ran %d", ev, ran.Load())
	}
	if _, reason, _ := ks.Flipped(job); !strings.Contains(reason, toggle) {
		t.Fatalf("Flipped: reason %q", reason)
	}

	srv.flip(t, toggle, false)
	took = waitFor(t, 10*time.Second, "toggle off reaches the client", ksIs(ks, job, false))
	t.Logf("Unleash flip off seen after %s (refresh 250ms); round trip since first flip %s", took, time.Since(flipped))
	if ev := rec.outcome(t, job, time.Now()); ev.Skip != "killed" {
		t.Fatalf("toggle off again: %+v", ev)
	}

	// Unleash's rule: a toggle that does not exist is off.
	if on, err := ks.Enabled(context.Background(), unleashName("never-created")); err != nil || on {
		t.Fatalf("missing toggle: Enabled = %v, %v", on, err)
	}
	// A job name Unleash would refuse as a toggle name: fail, do not guess.
	if _, err := ks.Enabled(context.Background(), "send emails"); err == nil || !strings.Contains(err.Error(), "Flag(") {
		t.Fatalf("invalid toggle name: err = %v", err)
	}
	// Flipped in Unleash, not here; the error names the toggle.
	err := s.SetEnabled(context.Background(), job, true, "")
	if !errors.Is(err, cronguard.ErrNotFlippable) || !strings.Contains(err.Error(), `"`+toggle+`"`) || !strings.Contains(err.Error(), "in Unleash") {
		t.Fatalf("SetEnabled: err = %v", err)
	}
	// A prefix of one's own, or none.
	if got := NewUnleashKillSwitch(client, UnleashPrefix("")).Toggle("x"); got != "x" {
		t.Fatalf("UnleashPrefix(\"\"): Toggle = %q", got)
	}
}

// The server goes away: clients that fetched keep the last known toggles;
// a client started while it is away does not block anything, and the fail
// policy applies until it fetches (or it answers from its backup file).
func TestUnleashKillSwitchServerDown(t *testing.T) {
	srv := unleashFromEnv(t)
	pidFile := filepath.Join(cmp.Or(os.Getenv("UNLEASH_STATE_DIR"), "/tmp/cronguard-unleash"), "unleash.pid")
	if _, err := os.Stat(pidFile); err != nil {
		msg := "Unleash server-down test: needs the server scripts/unleash-up started (" + err.Error() + ")"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
	onJob, offJob := unleashName("ug-on"), unleashName("ug-off")
	srv.createToggle(t, DefaultUnleashPrefix+onJob)
	srv.createToggle(t, DefaultUnleashPrefix+offJob)
	srv.flip(t, DefaultUnleashPrefix+onJob, true)

	app, backup := unleashName("cronguard-test"), t.TempDir()
	client, l := srv.newUnleashClient(t, app, backup)
	ks := NewUnleashKillSwitch(client)
	waitFor(t, 10*time.Second, "client sees both toggles", func() bool {
		return ksIs(ks, onJob, true)() && ksIs(ks, offJob, false)()
	})

	// Stop the server; start it again at the end, whatever happens.
	stopUnleash(t, pidFile)
	t.Cleanup(func() { startUnleash(t) })
	errs := l.errors.Load()
	waitFor(t, 5*time.Second, "client notices the server is gone", func() bool { return l.errors.Load() > errs })

	// The last known value holds.
	s, rec := newScheduler(t, cronguard.WithKillSwitch(ks))
	job := cronguard.JobFunc(func(context.Context) error { return nil })
	for _, j := range []string{onJob, offJob} {
		if err := s.Register(j, everySecond, job); err != nil {
			t.Fatal(err)
		}
	}
	down := time.Now()
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if ev := rec.outcome(t, onJob, down); ev.Kind != cronguard.EventFinished || ev.Report.Outcome() != "done" {
		t.Fatalf("server down, toggle was on: %+v (err %v)", ev, ev.Err)
	}
	if ev := rec.outcome(t, offJob, down); ev.Skip != "killed" {
		t.Fatalf("server down, toggle was off: %+v (err %v)", ev, ev.Err)
	}

	// A client started now: nothing blocks, nothing is known, the fail
	// policy applies.
	begin := time.Now()
	fresh, freshL := srv.newUnleashClient(t, unleashName("cronguard-test"), "")
	freshKS := NewUnleashKillSwitch(fresh)
	closed, closedRec := newScheduler(t, cronguard.WithKillSwitch(freshKS))
	open, openRec := newScheduler(t, cronguard.WithKillSwitch(freshKS), cronguard.WithFailOpen())
	if err := closed.Start(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("NewClient, NewUnleashKillSwitch, New and Start took %s with the server down", d)
	}
	if err := open.Start(); err != nil {
		t.Fatal(err)
	}
	for _, sc := range []*cronguard.Scheduler{closed, open} {
		if err := sc.Register(onJob, everySecond, job); err != nil {
			t.Fatal(err)
		}
	}
	ev := closedRec.outcome(t, onJob, begin)
	if ev.Skip != "backend" || !errors.Is(ev.Err, cronguard.ErrBackend) || !strings.Contains(ev.Err.Error(), "no toggles yet") {
		t.Fatalf("fresh client, fail closed: %+v (err %v)", ev, ev.Err)
	}
	if ev, ok := closedRec.find(onJob, cronguard.EventFlag); !ok || ev.Enabled {
		t.Fatalf("EventFlag = %+v, %v", ev, ok)
	}
	if ev := openRec.outcome(t, onJob, begin); ev.Kind != cronguard.EventFinished || ev.Report.Outcome() != "done" {
		t.Fatalf("fresh client, WithFailOpen: %+v (err %v)", ev, ev.Err)
	}
	if freshL.ready.Load() {
		t.Fatal("fresh client ready with the server down")
	}

	// A client started now with the first client's backup file answers
	// from it: the last known values, across a restart of the process.
	fromBackup, _ := srv.newUnleashClient(t, app, backup)
	backupKS := NewUnleashKillSwitch(fromBackup)
	if !ksIs(backupKS, onJob, true)() || !ksIs(backupKS, offJob, false)() {
		t.Fatal("client started from the backup file does not answer its toggles")
	}

	// The server comes back: the fresh client fetches and follows Unleash.
	startUnleash(t)
	waitFor(t, 15*time.Second, "fresh client fetches once the server is back", ksIs(freshKS, onJob, true))
	if ev := closedRec.outcome(t, onJob, time.Now()); ev.Kind != cronguard.EventFinished || ev.Report.Outcome() != "done" {
		t.Fatalf("server back: %+v (err %v)", ev, ev.Err)
	}
}

// stopUnleash stops the Unleash server process scripts/unleash-up started
// (PostgreSQL stays up) and waits until it is gone.
func stopUnleash(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %v", pidFile, err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatalf("stop Unleash (pid %d): %v", pid, err)
	}
	waitFor(t, 20*time.Second, "Unleash exits", func() bool { return syscall.Kill(pid, 0) != nil })
}

// startUnleash runs scripts/unleash-up (in the repository root, the parent
// of this module), which starts the server again if it is not up (same
// port, same database).
func startUnleash(t *testing.T) {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join("..", "scripts", "unleash-up")).CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/unleash-up: %v\n%s", err, out)
	}
}
