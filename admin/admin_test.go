package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/admin"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const token = "s3cret-token-0123456789abcdef"

type user struct {
	ID    int64  `json:"id"`
	Email string `json:"email"`
}

// fixture is a scheduler with jobs behind the real handler on a live
// httptest server, with the handler's log captured.
type fixture struct {
	s       *cronguard.Scheduler
	srv     *httptest.Server
	release chan struct{} // releases the "slow" job
	started chan struct{} // one value each time "slow" starts

	mu   sync.Mutex
	logs bytes.Buffer
	sent []int64 // users the "mail" job processed
}

func (f *fixture) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.Write(p)
}

func (f *fixture) log() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.logs.String()
}

func (f *fixture) processed() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.sent...)
}

func newFixture(t *testing.T, opts ...admin.Option) *fixture {
	t.Helper()
	f := &fixture{release: make(chan struct{}), started: make(chan struct{}, 8)}
	logger := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := cronguard.New(cronguard.WithLogger(logger), cronguard.WithInstanceID("web-1"), cronguard.WithLocation(time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	f.s = s
	must(t, s.Register("mail", "@every 1h", cronguard.Batch[user]{
		Fetch: func(context.Context, cronguard.Page) ([]user, error) { return nil, nil },
		Process: func(_ context.Context, u user) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.sent = append(f.sent, u.ID)
			return nil
		},
		Key: func(u user) string { return u.Email },
	}))
	must(t, s.Register("slow", "0 3 * * *", cronguard.JobFunc(func(ctx context.Context) error {
		f.started <- struct{}{}
		select {
		case <-f.release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})))
	must(t, s.Register("broken", "@daily", cronguard.JobFunc(func(context.Context) error {
		return errors.New("smtp: 550 mailbox full")
	})))
	must(t, s.Register("nightly report/eu", "@daily", cronguard.JobFunc(func(context.Context) error { return nil })))
	h, err := admin.Handler(s, append([]admin.Option{admin.Token(token), admin.Logger(logger)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		f.srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request with the bearer token tok ("" for none).
func (f *fixture) do(t *testing.T, method, path, tok, body string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// wantError checks a JSON error response.
func wantError(t *testing.T, r response, status int, code string) admin.ErrorBody {
	t.Helper()
	var e admin.ErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("status %d body %q: not a JSON error: %v", r.status, r.body, err)
	}
	if r.status != status || e.Code != code || e.Error == "" {
		t.Errorf("got %d %+v; want %d with code %q", r.status, e, status, code)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q; want JSON", ct)
	}
	return e
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

func TestHandlerRefusesToBuildWithoutAuth(t *testing.T) {
	s, err := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	if _, err := admin.Handler(s); !errors.Is(err, admin.ErrNoAuth) {
		t.Errorf("no auth: err = %v; want ErrNoAuth", err)
	}
	if _, err := admin.Handler(s, admin.MaxBodyBytes(10)); !errors.Is(err, admin.ErrNoAuth) {
		t.Errorf("options but no auth: err = %v; want ErrNoAuth", err)
	}
	short := "tiny-secret"
	_, err = admin.Handler(s, admin.Token(short))
	if !errors.Is(err, admin.ErrInvalidOption) || strings.Contains(err.Error(), short) {
		t.Errorf("short token: err = %v; want ErrInvalidOption without the token in it", err)
	}
	if _, err := admin.Handler(s, admin.Authenticate(nil)); !errors.Is(err, admin.ErrInvalidOption) {
		t.Errorf("Authenticate(nil): err = %v", err)
	}
	if _, err := admin.Handler(nil, admin.Token(token)); !errors.Is(err, admin.ErrInvalidOption) {
		t.Errorf("nil scheduler: err = %v", err)
	}
	if h, err := admin.Handler(s, admin.Token(token)); err != nil || h == nil {
		t.Errorf("with a token: %v", err)
	}
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	const wrong = "wrong-token-but-long-enough-42"
	for name, r := range map[string]response{
		"no token":    f.do(t, "GET", "/api/jobs", "", ""),
		"wrong token": f.do(t, "GET", "/api/jobs", wrong, ""),
		"token+1":     f.do(t, "GET", "/api/jobs", token+"x", ""),
		"prefix":      f.do(t, "GET", "/api/jobs", token[:20], ""),
		"state change": f.do(t, "POST", "/api/jobs/mail/disable", wrong,
			`{"reason":"x"}`),
		"unknown route": f.do(t, "GET", "/api/nope", "", ""),
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, r, http.StatusUnauthorized, "unauthorized")
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
	// A Basic header carrying the token is not a bearer token.
	req, _ := http.NewRequest("GET", f.srv.URL+"/api/jobs", nil)
	req.SetBasicAuth("admin", token)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("Basic auth: %d; want 401", resp.StatusCode)
	}
	if info, _ := f.s.Job("mail"); !info.Enabled {
		t.Fatal("a refused disable switched the job off")
	}
	ok := f.do(t, "GET", "/api/jobs", token, "")
	if ok.status != http.StatusOK {
		t.Fatalf("right token: %d %s", ok.status, ok.body)
	}
	// Neither token shows in any log line, and never in a body.
	f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":"audit"}`)
	f.do(t, "POST", "/api/jobs/nope/run", token, `[1]`)
	for _, secret := range []string{token, wrong, token[:20]} {
		if strings.Contains(f.log(), secret) {
			t.Errorf("log contains a token:\n%s", f.log())
		}
		if bytes.Contains(ok.body, []byte(secret)) {
			t.Errorf("body contains a token")
		}
	}
	if !strings.Contains(f.log(), "cronguard admin: unauthorized request") {
		t.Errorf("refused requests not logged:\n%s", f.log())
	}
}

func TestAuthenticateFunc(t *testing.T) {
	f := newFixture(t, admin.Authenticate(func(r *http.Request) (string, bool) {
		u := r.Header.Get("X-Test-User")
		return u, u == "alice" || u == "bob"
	}))
	send := func(user, path, body string) response {
		req, _ := http.NewRequest("POST", f.srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-Test-User", user)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return response{resp.StatusCode, resp.Header, b}
	}
	wantError(t, send("mallory", "/api/jobs/mail/disable", `{"reason":"x"}`), http.StatusUnauthorized, "unauthorized")
	job := decode[admin.Job](t, send("alice", "/api/jobs/mail/disable", `{"reason":"bounce storm"}`))
	if job.Enabled || job.Switch == nil || job.Switch.By != "alice" || job.Switch.Reason != "bounce storm" {
		t.Errorf("after alice's disable: %+v switch %+v", job, job.Switch)
	}
	rep := decode[cronguard.Report](t, send("bob", "/api/jobs/mail/run", `[{"id":7,"email":"g@x"}]`))
	if rep.By != "bob" || rep.Processed != 1 {
		t.Errorf("bob's run: %+v", rep)
	}
	// The token still works alongside.
	if r := f.do(t, "GET", "/api/jobs", token, ""); r.status != http.StatusOK {
		t.Errorf("token with Authenticate too: %d", r.status)
	}
	for _, want := range []string{`msg="cronguard admin: disable" job=mail by=alice`, `msg="cronguard admin: run" job=mail by=bob`} {
		if !strings.Contains(f.log(), want) {
			t.Errorf("log lacks %q:\n%s", want, f.log())
		}
	}
}

func TestListJobs(t *testing.T) {
	f := newFixture(t)
	_, _ = f.s.RunManually(context.Background(), "broken")
	if r := f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":"bounces"}`); r.status != http.StatusOK {
		t.Fatalf("disable: %d %s", r.status, r.body)
	}
	go func() { _, _ = f.s.RunManually(context.Background(), "slow") }()
	<-f.started
	defer close(f.release)
	var list admin.JobList
	waitFor(t, "the broken run in the history", func() bool {
		list = decode[admin.JobList](t, f.do(t, "GET", "/api/jobs", token, ""))
		return list.Jobs[0].Name == "broken" && list.Jobs[0].Last != nil
	})
	names := []string{}
	byName := map[string]admin.Job{}
	for _, j := range list.Jobs {
		names = append(names, j.Name)
		byName[j.Name] = j
	}
	if got := strings.Join(names, ","); got != "broken,mail,nightly report/eu,slow" {
		t.Errorf("jobs = %s; want sorted by name", got)
	}
	mail := byName["mail"]
	if mail.Enabled || mail.Switch == nil || mail.Switch.Reason != "bounces" || mail.Switch.By != "token" || mail.Switch.At.IsZero() {
		t.Errorf("mail: %+v switch %+v; want off, with the reason, by token, when", mail, mail.Switch)
	}
	if mail.Spec != "@every 1h" || mail.Next.IsZero() || mail.Instance != "web-1" || mail.Flag != "mail" {
		t.Errorf("mail: %+v", mail)
	}
	if slow := byName["slow"]; slow.Running != 1 || !slow.Enabled {
		t.Errorf("slow: running %d enabled %v; want 1 run going, on", slow.Running, slow.Enabled)
	}
	b := byName["broken"]
	if b.Last == nil || b.Last.Outcome() != "error" || b.Last.Err == nil || b.Last.Err.Error() != "smtp: 550 mailbox full" {
		t.Errorf("broken's last run: %+v; want the failed run with its error text", b.Last)
	}
}

func TestGetJob(t *testing.T) {
	f := newFixture(t)
	for range 3 {
		_, _ = f.s.RunManually(cronguard.WithActor(context.Background(), "cron-test"), "broken")
	}
	if r := f.do(t, "POST", "/api/jobs/broken/disable", token, `{"reason":"flaky"}`); r.status != http.StatusOK {
		t.Fatal(r.status)
	}
	var d admin.JobDetail
	waitFor(t, "4 entries", func() bool {
		d = decode[admin.JobDetail](t, f.do(t, "GET", "/api/jobs/broken", token, ""))
		return len(d.History) == 4
	})
	if h := d.History[0]; h.Kind != cronguard.EventFlag || h.By != "token" || h.Reason != "flaky" {
		t.Errorf("newest entry %+v; want the flip by token", h)
	}
	if h := d.History[1]; h.Kind != cronguard.EventFinished || h.By != "cron-test" || h.Error != "smtp: 550 mailbox full" {
		t.Errorf("entry 1 %+v; want the failed manual run by cron-test", h)
	}
	if d.Job.Name != "broken" || d.Job.Enabled || d.Job.Last == nil {
		t.Errorf("job %+v", d.Job)
	}
	d = decode[admin.JobDetail](t, f.do(t, "GET", "/api/jobs/broken?limit=2", token, ""))
	if len(d.History) != 2 {
		t.Errorf("limit=2: %d entries", len(d.History))
	}
	for _, q := range []string{"0", "-1", "1001", "x"} {
		wantError(t, f.do(t, "GET", "/api/jobs/broken?limit="+q, token, ""), http.StatusBadRequest, "bad_request")
	}
	wantError(t, f.do(t, "GET", "/api/jobs/nope", token, ""), http.StatusNotFound, "unknown_job")
	// A name with a space and a slash, escaped in the path.
	d = decode[admin.JobDetail](t, f.do(t, "GET", "/api/jobs/"+url.PathEscape("nightly report/eu"), token, ""))
	if d.Job.Name != "nightly report/eu" || d.History == nil {
		t.Errorf("escaped name: %+v", d)
	}
}

func TestRunNow(t *testing.T) {
	f := newFixture(t, admin.MaxBodyBytes(512))

	rep := decode[cronguard.Report](t, f.do(t, "POST", "/api/jobs/mail/run", token, ""))
	if rep.Trigger != cronguard.TriggerManual || rep.By != "token" || rep.Outcome() != "done" || rep.Instance != "web-1" {
		t.Errorf("whole run: %+v", rep)
	}
	rep = decode[cronguard.Report](t, f.do(t, "POST", "/api/jobs/mail/run", token, `[{"id":1,"email":"a@x"},{"id":2,"email":"b@x"}]`))
	if rep.Processed != 2 || rep.Batches != 1 {
		t.Errorf("items: %+v", rep)
	}
	rep = decode[cronguard.Report](t, f.do(t, "POST", "/api/jobs/broken/run", token, ""))
	if rep.Outcome() != "error" || rep.Err == nil || !strings.Contains(rep.Err.Error(), "mailbox full") {
		t.Errorf("a failed run: %+v; want 200 with the report and its error", rep)
	}

	wantError(t, f.do(t, "POST", "/api/jobs/mail/run", token, `[{"id":"one"}]`), http.StatusBadRequest, "invalid_items")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/run", token, `[{"id":1,"emial":"a@x"}]`), http.StatusBadRequest, "invalid_items")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/run", token, `[{"id":1`), http.StatusBadRequest, "bad_body")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/run", token, `{"id":1}`), http.StatusBadRequest, "bad_body")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/run", token, `[]`), http.StatusBadRequest, "no_items")
	wantError(t, f.do(t, "POST", "/api/jobs/broken/run", token, `[1]`), http.StatusBadRequest, "invalid_items")
	wantError(t, f.do(t, "POST", "/api/jobs/nope/run", token, ""), http.StatusNotFound, "unknown_job")
	big := `[` + strings.Repeat(`{"id":1,"email":"a@x"},`, 40) + `{"id":1,"email":"a@x"}]`
	wantError(t, f.do(t, "POST", "/api/jobs/mail/run", token, big), http.StatusRequestEntityTooLarge, "body_too_large")
	if got := f.processed(); len(got) != 2 {
		t.Errorf("processed %v; want only the 2 good items", got)
	}
}

// TestRunLockedAndSwitchedOff: run-now gets 409 while a run holds the lock,
// and works on a switched-off job (manual runs bypass the switch).
func TestRunLockedAndSwitchedOff(t *testing.T) {
	f := newFixture(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = f.s.RunManually(context.Background(), "slow")
	}()
	<-f.started
	e := wantError(t, f.do(t, "POST", "/api/jobs/slow/run", token, ""), http.StatusConflict, "locked")
	if !strings.Contains(e.Error, `"slow"`) {
		t.Errorf("409 error %q: want it to name the job", e.Error)
	}
	close(f.release)
	<-done

	decode[admin.Job](t, f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":"maintenance"}`))
	rep := decode[cronguard.Report](t, f.do(t, "POST", "/api/jobs/mail/run", token, `[{"id":9,"email":"z@x"}]`))
	if rep.Processed != 1 {
		t.Errorf("run of a switched-off job: %+v; want it to run", rep)
	}
	list := decode[admin.JobList](t, f.do(t, "GET", "/api/jobs", token, ""))
	for _, j := range list.Jobs {
		if j.Name == "mail" && (j.Enabled || j.Switch == nil || j.Switch.Reason != "maintenance" || j.Switch.By != "token") {
			t.Errorf("mail after the manual run: %+v %+v; want still off with reason and by", j, j.Switch)
		}
	}
}

func TestFlip(t *testing.T) {
	f := newFixture(t)
	wantError(t, f.do(t, "POST", "/api/jobs/mail/disable", token, ""), http.StatusBadRequest, "reason_required")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":""}`), http.StatusBadRequest, "reason_required")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":`), http.StatusBadRequest, "bad_body")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/disable", token, `{"why":"x"}`), http.StatusBadRequest, "bad_body")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":"a"} {}`), http.StatusBadRequest, "bad_body")
	wantError(t, f.do(t, "POST", "/api/jobs/nope/disable", token, `{"reason":"x"}`), http.StatusNotFound, "unknown_job")
	wantError(t, f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":"`+strings.Repeat("r", 2<<20)+`"}`),
		http.StatusRequestEntityTooLarge, "body_too_large")
	if info, _ := f.s.Job("mail"); !info.Enabled {
		t.Fatal("a refused disable switched the job off")
	}
	off := decode[admin.Job](t, f.do(t, "POST", "/api/jobs/mail/disable", token, `{"reason":"bad template"}`))
	if off.Enabled || off.Switch == nil || off.Switch.Reason != "bad template" || off.Switch.By != "token" {
		t.Errorf("disable: %+v %+v", off, off.Switch)
	}
	on := decode[admin.Job](t, f.do(t, "POST", "/api/jobs/mail/enable", token, ""))
	if !on.Enabled || on.Switch.By != "token" {
		t.Errorf("enable: %+v", on)
	}
	waitFor(t, "both flips in the history", func() bool {
		h, _ := f.s.History(context.Background(), "mail", 5)
		return len(h) == 2 && h[0].Kind == cronguard.EventFlag && *h[0].Enabled &&
			h[1].Reason == "bad template" && !*h[1].Enabled && h[1].By == "token"
	})
	for _, want := range []string{`msg="cronguard admin: disable" job=mail by=token`, `msg="cronguard admin: enable" job=mail by=token`} {
		if !strings.Contains(f.log(), want) {
			t.Errorf("log lacks %q", want)
		}
	}
}

// readOnly is a kill switch that cannot be flipped from the program.
type readOnly struct{}

func (readOnly) Enabled(context.Context, string) (bool, error) { return true, nil }

func TestFlipNotFlippable(t *testing.T) {
	s, err := cronguard.New(cronguard.WithKillSwitch(readOnly{}), cronguard.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	must(t, s.Register("j", "@daily", cronguard.JobFunc(func(context.Context) error { return nil })))
	h, _ := admin.Handler(s, admin.Token(token), admin.Logger(slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(h)
	defer srv.Close()
	f := &fixture{srv: srv}
	wantError(t, f.do(t, "POST", "/api/jobs/j/disable", token, `{"reason":"x"}`), http.StatusConflict, "not_flippable")
	list := decode[admin.JobList](t, f.do(t, "GET", "/api/jobs", token, ""))
	if len(list.Jobs) != 1 || list.Jobs[0].Switch != nil || !list.Jobs[0].Enabled {
		t.Errorf("jobs: %+v; want no switch state from a switch that keeps none", list.Jobs)
	}
}

func TestMethodsAndRoutes(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ method, path, allow string }{
		{"GET", "/api/jobs/mail/run", "POST"},
		{"DELETE", "/api/jobs", "GET, HEAD"},
		{"POST", "/api/jobs/mail", "GET, HEAD"},
		{"PUT", "/api/jobs/mail/disable", "POST"},
	} {
		r := f.do(t, c.method, c.path, token, "")
		wantError(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
		if got := r.header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	wantError(t, f.do(t, "GET", "/api/nope", token, ""), http.StatusNotFound, "not_found")
	// Paths outside /api are the dashboard's (dashboard_test.go).
	if r := f.do(t, "GET", "/nope", token, ""); r.status != http.StatusNotFound || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Errorf("GET /nope: %d %q; want the dashboard's 404 page", r.status, r.header.Get("Content-Type"))
	}
	if r := f.do(t, "HEAD", "/api/jobs", token, ""); r.status != http.StatusOK {
		t.Errorf("HEAD /api/jobs: %d", r.status)
	}
}

// waitFor polls cond for up to 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hungHistory is a history store whose reads hang until their context ends.
type hungHistory struct{ cronguard.HistoryStore }

func (hungHistory) History(ctx context.Context, _ string, _ int) ([]cronguard.HistoryEntry, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestListWithHungHistory: a history store that does not answer costs the
// jobs list one bounded wait in all, not one per job; every job still shows,
// with the history error.
func TestListWithHungHistory(t *testing.T) {
	s, err := cronguard.New(cronguard.WithHistoryStore(hungHistory{&sliceHistory{}}),
		cronguard.WithCallBudget(time.Hour), cronguard.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		must(t, s.Register(n, "@daily", cronguard.JobFunc(func(context.Context) error { return nil })))
	}
	h, _ := admin.Handler(s, admin.Token(token), admin.Logger(slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(h)
	defer srv.Close()
	f := &fixture{srv: srv}
	start := time.Now()
	list := decode[admin.JobList](t, f.do(t, "GET", "/api/jobs", token, ""))
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("list took %s with the history hung; want about 3s in all", took)
	}
	if len(list.Jobs) != 5 {
		t.Fatalf("%d jobs", len(list.Jobs))
	}
	for _, j := range list.Jobs {
		if !strings.Contains(j.HistoryError, "deadline") {
			t.Errorf("job %s: history_error %q; want the deadline", j.Name, j.HistoryError)
		}
	}
}
