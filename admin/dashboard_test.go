package admin_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/admin"
)

const wantCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// browser talks to the dashboard as a browser would: it keeps the cookies
// it is given (Go's cookie jar would not send Secure cookies over
// http://127.0.0.1; browsers do) and does not follow redirects, so that
// tests see them.
type browser struct {
	t       *testing.T
	base    string
	client  *http.Client
	cookies map[string]*http.Cookie
	header  http.Header // added to every request
}

func newBrowser(t *testing.T, base string) *browser {
	return &browser{
		t: t, base: base, cookies: map[string]*http.Cookie{}, header: http.Header{},
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

type page struct {
	status int
	header http.Header
	body   string
	set    map[string]*http.Cookie // the cookies this response set
}

func (b *browser) get(path string) page { return b.send("GET", path, nil, nil) }

func (b *browser) post(path string, form url.Values, hdr ...string) page {
	return b.send("POST", path, form, hdr)
}

// send makes a request; hdr is name, value pairs.
func (b *browser) send(method, path string, form url.Values, hdr []string) page {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.base+path, body)
	if err != nil {
		b.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range b.header {
		req.Header[k] = v
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	for _, c := range b.cookies {
		req.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	p := page{status: resp.StatusCode, header: resp.Header, body: string(raw), set: map[string]*http.Cookie{}}
	for _, c := range resp.Cookies() {
		p.set[c.Name] = c
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return p
}

// login signs in with the form and the token.
func (b *browser) login(tok string) page {
	b.t.Helper()
	p := b.post("/login", url.Values{"token": {tok}, "next": {"/"}})
	if p.status != http.StatusSeeOther || b.cookies["cronguard_session"] == nil {
		b.t.Fatalf("login: %d, cookies %v\n%s", p.status, p.set, p.body)
	}
	return p
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from a page the browser gets.
func (b *browser) csrf(path string) string {
	b.t.Helper()
	p := b.get(path)
	m := csrfRE.FindStringSubmatch(p.body)
	if p.status != http.StatusOK || m == nil {
		b.t.Fatalf("GET %s: %d, no csrf field\n%s", path, p.status, p.body)
	}
	return m[1]
}

func wantStatus(t *testing.T, what string, p page, status int) {
	t.Helper()
	if p.status != status {
		t.Fatalf("%s: status %d, want %d\n%s", what, p.status, status, p.body)
	}
}

func TestDashboardLogin(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)

	p := b.get("/")
	wantStatus(t, "GET / signed out", p, http.StatusSeeOther)
	if loc := p.header.Get("Location"); loc != "/login?next=%2F" {
		t.Errorf("GET / signed out: Location %q", loc)
	}
	p = b.get("/login")
	wantStatus(t, "GET /login", p, http.StatusOK)
	if !strings.Contains(p.body, `id="token"`) || strings.Contains(p.body, `id="user"`) {
		t.Errorf("login form: want a token field and, without Authenticate, no user field:\n%s", p.body)
	}

	const wrong = "wrong-token-but-long-enough-42"
	for _, form := range []url.Values{{"token": {wrong}}, {"token": {token + "x"}}, {"token": {""}}, {"user": {"admin"}, "password": {token}}} {
		p = b.post("/login", form)
		wantStatus(t, "login with "+form.Encode(), p, http.StatusUnauthorized)
		if !strings.Contains(p.body, `<form method="post" action="/login"`) || !strings.Contains(p.body, `role="alert"`) {
			t.Errorf("a refused login does not show the form again with an error:\n%s", p.body)
		}
		if len(p.set) != 0 || len(b.cookies) != 0 {
			t.Errorf("a refused login set cookies: %v", p.set)
		}
		if strings.Contains(p.body, wrong) || strings.Contains(p.body, token) {
			t.Errorf("the refused login's page shows the token")
		}
	}

	p = b.post("/login", url.Values{"token": {token}, "next": {"/jobs/mail"}})
	wantStatus(t, "login with the token", p, http.StatusSeeOther)
	if loc := p.header.Get("Location"); loc != "/jobs/mail" {
		t.Errorf("after login: Location %q, want /jobs/mail", loc)
	}
	c := p.set["cronguard_session"]
	if c == nil {
		t.Fatalf("no session cookie: %v", p.header["Set-Cookie"])
	}
	if !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Errorf("session cookie %q: want Secure, HttpOnly, SameSite=Strict, Path=/", p.header.Get("Set-Cookie"))
	}
	if c.MaxAge < int((admin.DefaultSessionTTL-time.Minute).Seconds()) || c.MaxAge > int(admin.DefaultSessionTTL.Seconds()) {
		t.Errorf("session cookie Max-Age %d, want about %s", c.MaxAge, admin.DefaultSessionTTL)
	}
	if strings.Contains(c.Value, token) {
		t.Error("the session cookie holds the token")
	}
	p = b.get("/")
	wantStatus(t, "GET / signed in", p, http.StatusOK)
	for _, want := range []string{"Signed in as <strong>token</strong>", `href="/jobs/mail"`, `href="/jobs/nightly%20report%2Feu"`, "Sign out"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("jobs page lacks %q", want)
		}
	}
	if got := b.get("/login"); got.status != http.StatusSeeOther {
		t.Errorf("GET /login signed in: %d, want a redirect to the jobs", got.status)
	}
	if strings.Contains(f.log(), token) {
		t.Errorf("the log holds the token:\n%s", f.log())
	}
	if !strings.Contains(f.log(), "failed dashboard sign-in") || !strings.Contains(f.log(), `dashboard sign-in" by=token`) {
		t.Errorf("sign-ins are not logged:\n%s", f.log())
	}
}

// TestDashboardLoginNext: a login only ever redirects to a dashboard page.
func TestDashboardLoginNext(t *testing.T) {
	f := newFixture(t)
	for next, want := range map[string]string{
		"/jobs/mail": "/jobs/mail", "/": "/", "//evil.example/": "/", "https://evil.example/": "/",
		"/\\evil.example": "/", "/api/jobs": "/", "": "/", "/jobs/\\evil": "/",
	} {
		b := newBrowser(t, f.srv.URL)
		p := b.post("/login", url.Values{"token": {token}, "next": {next}})
		if loc := p.header.Get("Location"); p.status != http.StatusSeeOther || loc != want {
			t.Errorf("next %q: %d Location %q, want %q", next, p.status, loc, want)
		}
	}
}

func TestDashboardLoginThrottled(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	var last page
	for range 25 {
		last = b.post("/login", url.Values{"token": {"wrong-token-but-long-enough-42"}})
	}
	wantStatus(t, "the 25th failed login in a row", last, http.StatusTooManyRequests)
	// A session already open is not affected.
	if p := b.get("/"); p.status != http.StatusSeeOther {
		t.Errorf("GET /: %d", p.status)
	}
	if p := newBrowser(t, f.srv.URL).get("/api/jobs"); p.status != http.StatusUnauthorized {
		t.Errorf("API without a token: %d", p.status)
	}
}

func TestDashboardAuthenticateBasic(t *testing.T) {
	f := newFixture(t, admin.Authenticate(func(r *http.Request) (string, bool) {
		u, p, ok := r.BasicAuth()
		return u, ok && u == "alice" && p == "correct horse"
	}))
	b := newBrowser(t, f.srv.URL)
	if p := b.get("/login"); !strings.Contains(p.body, `id="user"`) || !strings.Contains(p.body, `id="password"`) {
		t.Errorf("login form with Authenticate: want user and password fields:\n%s", p.body)
	}
	wantStatus(t, "wrong password", b.post("/login", url.Values{"user": {"alice"}, "password": {"nope"}}), http.StatusUnauthorized)
	wantStatus(t, "right password", b.post("/login", url.Values{"user": {"alice"}, "password": {"correct horse"}}), http.StatusSeeOther)
	tok := b.csrf("/")
	wantStatus(t, "disable", b.post("/jobs/mail/disable", url.Values{"csrf": {tok}, "reason": {"bounces"}}), http.StatusSeeOther)
	if st, _ := f.s.Job("mail"); st.Enabled || st.EnabledBy != "alice" || st.EnabledReason != "bounces" {
		t.Errorf("switch after alice's disable: %+v", st)
	}
	if p := b.get("/"); !strings.Contains(p.body, "by <strong>alice</strong>") {
		t.Errorf("jobs page does not say who switched mail off")
	}
	// Basic auth on each request (a browser's cached credentials) also
	// works, without a session; its forms still need the token.
	nb := newBrowser(t, f.srv.URL)
	nb.header.Set("Authorization", "Basic "+basic("alice", "correct horse"))
	wantStatus(t, "basic auth without a session", nb.get("/"), http.StatusOK)
	wantStatus(t, "basic auth, no csrf", nb.post("/jobs/mail/enable", url.Values{}), http.StatusForbidden)
	wantStatus(t, "basic auth with csrf", nb.post("/jobs/mail/enable", url.Values{"csrf": {nb.csrf("/")}}), http.StatusSeeOther)
}

func basic(user, pass string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pass)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func TestDashboardLogout(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	old := *b.cookies["cronguard_session"]
	tok := b.csrf("/")
	wantStatus(t, "logout without csrf", b.post("/logout", url.Values{}), http.StatusForbidden)
	p := b.post("/logout", url.Values{"csrf": {tok}})
	wantStatus(t, "logout", p, http.StatusSeeOther)
	if c := p.set["cronguard_session"]; c == nil || c.MaxAge >= 0 {
		t.Errorf("logout does not delete the cookie: %v", p.header["Set-Cookie"])
	}
	// The old cookie, replayed, no longer signs in.
	b.cookies["cronguard_session"] = &old
	wantStatus(t, "GET / with the logged-out cookie", b.get("/"), http.StatusSeeOther)
}

func TestDashboardForgedCookie(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	good := b.cookies["cronguard_session"].Value
	parts := strings.Split(good, ".")
	// Another name in the cookie, with the old MAC.
	forged := parts
	forged[3] = "YWxpY2U" // "alice"
	for name, v := range map[string]string{
		"other who":    strings.Join(forged, "."),
		"no mac":       good[:strings.LastIndexByte(good, '.')],
		"flipped bit":  good[:len(good)-2] + map[bool]string{true: "A", false: "B"}[good[len(good)-2] != 'A'] + good[len(good)-1:],
		"empty":        "",
		"garbage":      "v1.x.y.z.w",
		"another key":  newSessionElsewhere(t),
		"long garbage": strings.Repeat("a.", 5000),
	} {
		b.cookies["cronguard_session"].Value = v
		if p := b.get("/"); p.status != http.StatusSeeOther {
			t.Errorf("%s cookie: GET / %d, want a redirect to the login", name, p.status)
		}
	}
}

// newSessionElsewhere signs in to another handler and returns its cookie:
// each handler has a key of its own.
func newSessionElsewhere(t *testing.T) string {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	return b.cookies["cronguard_session"].Value
}

func TestDashboardCSRF(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	tok := b.csrf("/")
	other := newBrowser(t, f.srv.URL)
	other.login(token)
	otherTok := other.csrf("/")
	if otherTok == tok {
		t.Fatal("two sessions share a CSRF token")
	}
	form := func(csrf string) url.Values { return url.Values{"csrf": {csrf}, "reason": {"forged"}} }
	for name, p := range map[string]page{
		"no token":           b.post("/jobs/mail/disable", url.Values{"reason": {"forged"}}),
		"empty token":        b.post("/jobs/mail/disable", form("")),
		"wrong token":        b.post("/jobs/mail/disable", form(tok[:len(tok)-2]+"AA")),
		"not base64":         b.post("/jobs/mail/disable", form("!!!")),
		"another session's":  b.post("/jobs/mail/disable", form(otherTok)),
		"token in the query": b.post("/jobs/mail/disable?csrf="+url.QueryEscape(tok), url.Values{"reason": {"forged"}}),
		"cross-site fetch":   b.post("/jobs/mail/disable", form(tok), "Sec-Fetch-Site", "cross-site"),
		"other origin":       b.post("/jobs/mail/disable", form(tok), "Origin", "https://evil.example"),
		"run, no token":      b.post("/jobs/mail/run", url.Values{}),
		"enable, no token":   b.post("/jobs/mail/enable", url.Values{}),
	} {
		if p.status != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", name, p.status)
		}
	}
	if info, _ := f.s.Job("mail"); !info.Enabled {
		t.Fatal("a refused form switched the job off")
	}
	if len(f.processed()) != 0 {
		t.Fatal("a refused form ran the job")
	}
	if !strings.Contains(f.log(), "refused form") {
		t.Errorf("refused forms are not logged")
	}
	p := b.post("/jobs/mail/disable", form(tok), "Sec-Fetch-Site", "same-origin", "Origin", f.srv.URL)
	wantStatus(t, "disable with the token", p, http.StatusSeeOther)
	if st, _ := f.s.Job("mail"); st.Enabled || st.EnabledReason != "forged" || st.EnabledBy != "token" {
		t.Errorf("after the disable: %+v", st)
	}
}

func TestDashboardBearer(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	b.header.Set("Authorization", "Bearer "+token)
	p := b.get("/")
	wantStatus(t, "GET / with the bearer token", p, http.StatusOK)
	if strings.Contains(p.body, "Sign out") {
		t.Error("a page shown to a bearer token offers to sign out")
	}
	wantStatus(t, "bearer, no csrf", b.post("/jobs/mail/disable", url.Values{"reason": {"x"}}), http.StatusForbidden)
	wantStatus(t, "bearer with csrf", b.post("/jobs/mail/disable", url.Values{"reason": {"x"}, "csrf": {b.csrf("/")}}), http.StatusSeeOther)
	// The API never takes the dashboard's cookie.
	c := newBrowser(t, f.srv.URL)
	c.login(token)
	if p := c.get("/api/jobs"); p.status != http.StatusUnauthorized {
		t.Errorf("API with the session cookie only: %d, want 401", p.status)
	}
}

func TestDashboardFlip(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	tok := b.csrf("/")

	p := b.post("/jobs/mail/disable", url.Values{"csrf": {tok}, "back": {"list"}, "reason": {"  "}})
	wantStatus(t, "disable without a reason", p, http.StatusSeeOther)
	if info, _ := f.s.Job("mail"); !info.Enabled {
		t.Fatal("a disable without a reason switched the job off")
	}
	if got := b.get("/"); !strings.Contains(got.body, "needs a reason") {
		t.Errorf("no message for the missing reason")
	}
	long := url.Values{"csrf": {tok}, "reason": {strings.Repeat("r", 2000)}}
	wantStatus(t, "a too long reason", b.post("/jobs/mail/disable", long), http.StatusSeeOther)
	if info, _ := f.s.Job("mail"); !info.Enabled {
		t.Fatal("a disable with a 2,000-byte reason switched the job off")
	}
	wantStatus(t, "unknown job", b.post("/jobs/nope/disable", url.Values{"csrf": {tok}, "reason": {"x"}}), http.StatusNotFound)

	p = b.post("/jobs/mail/disable", url.Values{"csrf": {tok}, "back": {"list"}, "reason": {"wrong template"}})
	if loc := p.header.Get("Location"); p.status != http.StatusSeeOther || loc != "/" {
		t.Fatalf("disable: %d to %q, want 303 to /", p.status, loc)
	}
	list := b.get("/")
	for _, want := range []string{"Switched mail off", "“wrong template”", "by <strong>token</strong>", `action="/jobs/mail/enable"`} {
		if !strings.Contains(list.body, want) {
			t.Errorf("jobs page after disable lacks %q", want)
		}
	}
	if again := b.get("/"); strings.Contains(again.body, "Switched mail off") {
		t.Error("the flash message shows twice")
	}
	p = b.post("/jobs/mail/enable", url.Values{"csrf": {tok}})
	if loc := p.header.Get("Location"); loc != "/jobs/mail" {
		t.Errorf("enable from the job page: back to %q", loc)
	}
	if info, _ := f.s.Job("mail"); !info.Enabled {
		t.Error("enable did not switch the job on")
	}
	if !strings.Contains(f.log(), `msg="cronguard admin: disable" job=mail by=token`) {
		t.Errorf("flips are not logged:\n%s", f.log())
	}
}

func TestDashboardRunNow(t *testing.T) {
	f := newFixture(t)
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	tok := b.csrf("/")
	p := b.post("/jobs/broken/run", url.Values{"csrf": {tok}, "reason": {"retry after fix"}})
	if loc := p.header.Get("Location"); p.status != http.StatusSeeOther || loc != "/jobs/broken" {
		t.Fatalf("run: %d to %q", p.status, loc)
	}
	page := b.get("/jobs/broken")
	if !strings.Contains(page.body, "Ran now: error") || !strings.Contains(page.body, "smtp: 550 mailbox full") {
		t.Errorf("job page after run-now lacks the run's result:\n%s", page.body)
	}
	waitFor(t, "the manual run in the history", func() bool {
		h, _ := f.s.History(context.Background(), "broken", 5)
		return len(h) == 1 && h[0].By == "token" && h[0].Trigger == cronguard.TriggerManual
	})
	page = b.get("/jobs/broken")
	if !strings.Contains(page.body, "run (manual)") || !strings.Contains(page.body, "by token") {
		t.Errorf("history lacks the manual run by token")
	}
	if !strings.Contains(f.log(), `reason="retry after fix"`) {
		t.Errorf("the run's reason is not logged:\n%s", f.log())
	}

	// A job whose lock is held: not run, and said so.
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = f.s.RunManually(context.Background(), "slow")
	}()
	<-f.started
	b.post("/jobs/slow/run", url.Values{"csrf": {tok}, "back": {"list"}})
	if got := b.get("/"); !strings.Contains(got.body, "Not run:") || !strings.Contains(got.body, "locked") {
		t.Errorf("run of a locked job: no message")
	}
	close(f.release)
	<-done
}

// TestDashboardCSP: every response of the dashboard carries the policy, and
// no page has inline script, inline style or event handler attributes that
// it would block.
func TestDashboardCSP(t *testing.T) {
	f := newFixture(t)
	_, _ = f.s.RunManually(context.Background(), "broken")
	signedOut := newBrowser(t, f.srv.URL)
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	tok := b.csrf("/")
	inline := regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>[^<]|\sstyle\s*=|\son[a-z]+\s*=|javascript:|<style`)
	for name, p := range map[string]page{
		"login":         signedOut.get("/login"),
		"bad login":     signedOut.post("/login", url.Values{"token": {"nope"}}),
		"redirect":      signedOut.get("/jobs/mail"),
		"401":           signedOut.post("/jobs/mail/run", url.Values{}),
		"jobs":          b.get("/"),
		"job":           b.get("/jobs/broken"),
		"job 404":       b.get("/jobs/nope"),
		"404":           b.get("/nope"),
		"400":           b.get("/jobs/mail?limit=x"),
		"403":           b.post("/jobs/mail/run", url.Values{}),
		"after a flip":  b.post("/jobs/mail/disable", url.Values{"csrf": {tok}, "reason": {"x"}}),
		"static css":    b.get("/static/dashboard.css"),
		"static js":     b.get("/static/dashboard.js"),
		"static 404":    b.get("/static/nope.js"),
		"head":          b.send("HEAD", "/", nil, nil),
		"mux 405":       b.send("DELETE", "/jobs/mail", nil, nil),
		"flash on list": b.get("/jobs/mail"),
	} {
		if got := p.header.Get("Content-Security-Policy"); got != wantCSP {
			t.Errorf("%s (%d): CSP %q", name, p.status, got)
		}
		if got := p.header.Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("%s: X-Frame-Options %q", name, got)
		}
		if strings.HasPrefix(p.header.Get("Content-Type"), "text/html") {
			if m := inline.FindString(p.body); m != "" {
				t.Errorf("%s: inline script or style %q in\n%s", name, m, p.body)
			}
			if p.status < 300 && p.body != "" && !strings.Contains(p.body, `<meta name="viewport"`) {
				t.Errorf("%s: no viewport meta", name)
			}
		}
	}
	if p := b.get("/static/dashboard.css"); p.status != http.StatusOK || !strings.HasPrefix(p.header.Get("Content-Type"), "text/css") {
		t.Errorf("stylesheet: %d %q", p.status, p.header.Get("Content-Type"))
	}
	if p := b.get("/static/dashboard.js"); p.status != http.StatusOK || !strings.Contains(p.header.Get("Content-Type"), "javascript") {
		t.Errorf("script: %d %q", p.status, p.header.Get("Content-Type"))
	}
}

// TestDashboardEscaping: names, errors and reasons from outside are escaped
// and cut, on the list and on the job page.
func TestDashboardEscaping(t *testing.T) {
	f := newFixture(t)
	const evil = `<script>alert(1)</script>`
	const evilErr = `<img src=x onerror=alert(2)>`
	long := strings.Repeat("é", 3000) // 6,000 bytes
	must(t, f.s.Register(evil, "@daily", cronguard.JobFunc(func(context.Context) error {
		return &textError{evilErr + long}
	})))
	_, _ = f.s.RunManually(context.Background(), evil)
	must(t, f.s.SetEnabled(cronguard.WithActor(context.Background(), `<b>mallory</b>`), evil, false, `<i>why</i>"'`))
	b := newBrowser(t, f.srv.URL)
	b.login(token)
	waitFor(t, "the run in the history", func() bool {
		h, _ := f.s.History(context.Background(), evil, 5)
		return len(h) == 2
	})
	list := b.get("/")
	job := b.get("/jobs/" + url.PathEscape(evil))
	wantStatus(t, "the job page of "+evil, job, http.StatusOK)
	for name, p := range map[string]page{"list": list, "job": job} {
		for _, raw := range []string{evil, "<img", "<b>mallory", "<i>why"} {
			if strings.Contains(p.body, raw) {
				t.Errorf("%s page holds %q unescaped", name, raw)
			}
		}
		for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;", "&lt;b&gt;mallory&lt;/b&gt;", "&lt;i&gt;why&lt;/i&gt;&#34;&#39;"} {
			if !strings.Contains(p.body, want) {
				t.Errorf("%s page lacks %q", name, want)
			}
		}
		if strings.Contains(p.body, strings.Repeat("é", 600)) || !strings.Contains(p.body, "bytes)") {
			t.Errorf("%s page: the 6 KB error is not cut", name)
		}
	}
	if !strings.Contains(list.body, `href="/jobs/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"`) {
		t.Errorf("the job's link is not one escaped path segment")
	}
	if p := b.get("/jobs/" + url.PathEscape("nightly report/eu")); p.status != http.StatusOK || !strings.Contains(p.body, "<h1>nightly report/eu</h1>") {
		t.Errorf("job page of a name with a slash: %d", p.status)
	}
}

type textError struct{ s string }

func (e *textError) Error() string { return e.s }

// TestDashboardMounted: under http.StripPrefix, links, redirects and
// cookies carry the prefix.
func TestDashboardMounted(t *testing.T) {
	f := newFixture(t)
	h, err := admin.Handler(f.s, admin.Token(token), admin.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ops/cron/", http.StripPrefix("/ops/cron", h))
	srv := newServer(t, mux)
	b := newBrowser(t, srv.URL)
	if p := b.get("/ops/cron/"); p.header.Get("Location") != "/ops/cron/login?next=%2F" {
		t.Errorf("signed out: Location %q", p.header.Get("Location"))
	}
	p := b.post("/ops/cron/login", url.Values{"token": {token}, "next": {"/jobs/mail"}})
	if p.header.Get("Location") != "/ops/cron/jobs/mail" || p.set["cronguard_session"] == nil || p.set["cronguard_session"].Path != "/ops/cron/" {
		t.Errorf("login: Location %q, cookie %v", p.header.Get("Location"), p.set["cronguard_session"])
	}
	list := b.get("/ops/cron/")
	for _, want := range []string{`href="/ops/cron/static/dashboard.css"`, `href="/ops/cron/jobs/mail"`, `action="/ops/cron/jobs/mail/disable"`, `action="/ops/cron/logout"`} {
		if !strings.Contains(list.body, want) {
			t.Errorf("mounted jobs page lacks %q", want)
		}
	}
	if p := b.get("/ops/cron/api/jobs"); p.status != http.StatusUnauthorized {
		t.Errorf("mounted API with a cookie only: %d", p.status)
	}
}
