package admin

import (
	"net/http"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Login bounds.
const (
	// maxFormBytes bounds a dashboard form's body.
	maxFormBytes = 64 << 10
	// Failed logins per handler: a burst of 20, then one a second; past
	// it, 429 without checking the credentials. Sessions already open and
	// the API's bearer token are not affected.
	failedLoginBurst = 20
	failedLoginEvery = time.Second
)

// loginPage is the data of login.html.
type loginPage struct {
	layout
	Next      string // where to go after: a dashboard path, relative to Base
	Error     string
	BasicAuth bool // Authenticate is set: offer user and password too
}

// safeNext returns next if it is a path of this dashboard ("/" or
// "/jobs/..."), else "/": a login never redirects off the dashboard.
func safeNext(next string) string {
	if next == "/" || (strings.HasPrefix(next, "/jobs/") && !strings.ContainsAny(next, "\\\r\n\t") && len(next) < 2048) {
		return next
	}
	return "/"
}

func (d *dashboard) loginForm(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if _, ok := d.sessions.fromRequest(r); ok {
		http.Redirect(w, r, basePath(r)+next, http.StatusSeeOther)
		return
	}
	d.renderLogin(w, r, http.StatusOK, next, "")
}

func (d *dashboard) renderLogin(w http.ResponseWriter, r *http.Request, status int, next, msg string) {
	d.render(w, r, status, "login.html", &loginPage{
		layout: d.layout(r, caller{}, "Sign in"), Next: next, Error: msg, BasicAuth: d.h.cfg.auth != nil,
	})
}

// login takes the form: a token, or (with Authenticate) a user and a
// password, checked exactly as the API checks a request that carries them
// (Bearer, Basic). On success it sets the session cookie and goes on to
// next; on failure it shows the form again with 401.
func (d *dashboard) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		d.renderError(w, r, caller{}, http.StatusBadRequest, "The form could not be read.")
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if d.cop.Check(r) != nil {
		d.renderError(w, r, caller{}, http.StatusForbidden, "This sign-in form was sent from another site.")
		return
	}
	if d.failedLogins.Tokens() < 1 {
		d.renderLogin(w, r, http.StatusTooManyRequests, next, "Too many failed sign-ins: wait a few seconds and try again.")
		return
	}
	probe, ok := credentials(r)
	if !ok {
		d.renderLogin(w, r, http.StatusUnauthorized, next, "Enter the token.")
		return
	}
	who, ok := d.h.authenticate(probe)
	if !ok {
		d.failedLogins.Allow()
		d.h.cfg.logger.Warn("cronguard admin: failed dashboard sign-in", "remote", r.RemoteAddr)
		d.renderLogin(w, r, http.StatusUnauthorized, next, "Wrong credentials.")
		return
	}
	ss, value := d.sessions.issue(who)
	http.SetCookie(w, cookie(sessionCookie, value, basePath(r), int(time.Until(ss.exp).Seconds())))
	d.h.cfg.logger.Info("cronguard admin: dashboard sign-in", "by", clip(ss.who), "remote", r.RemoteAddr)
	http.Redirect(w, r, basePath(r)+next, http.StatusSeeOther)
}

// credentials turns the form into the request the API would get: a copy of
// r with "Authorization: Bearer <token>", or Basic user:password.
func credentials(r *http.Request) (*http.Request, bool) {
	probe := r.Clone(r.Context())
	probe.Body = http.NoBody
	probe.Header.Del("Authorization")
	probe.Header.Del("Cookie")
	token, user := strings.TrimSpace(r.PostForm.Get("token")), r.PostForm.Get("user")
	switch {
	case token != "":
		probe.Header.Set("Authorization", "Bearer "+token)
	case user != "":
		probe.SetBasicAuth(user, r.PostForm.Get("password"))
	default:
		return nil, false
	}
	return probe, true
}

// logout ends the session: its id is remembered as ended until it would
// have expired, and the cookie is deleted.
func (d *dashboard) logout(w http.ResponseWriter, r *http.Request, c caller) {
	if c.session != nil {
		d.sessions.revoke(*c.session)
	}
	http.SetCookie(w, cookie(sessionCookie, "", basePath(r), -1))
	d.h.cfg.logger.Info("cronguard admin: dashboard sign-out", "by", clip(c.who), "remote", r.RemoteAddr)
	http.Redirect(w, r, basePath(r)+"/login", http.StatusSeeOther)
}

func newLoginLimiter() *rate.Limiter {
	return rate.NewLimiter(rate.Every(failedLoginEvery), failedLoginBurst)
}
