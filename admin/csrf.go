package admin

import (
	"crypto/hmac"
	"errors"
	"net/http"
)

// csrfField is the hidden form field that carries the CSRF token.
const csrfField = "csrf"

// errCSRF: a state change without this dashboard's token, or sent from
// another site.
var errCSRF = errors.New("admin: the form did not come from this dashboard")

// caller is who makes a dashboard request, and how they proved it.
type caller struct {
	who     string
	session *session // nil: the request's own credentials (bearer token, Authenticate)
}

// csrfToken is the caller's CSRF token: a MAC of the session id, so it
// differs per login and cannot be made without the handler's key. Callers
// without a session (bearer token, Authenticate on every request) get a MAC
// of their name: those requests still need it, since a browser may attach
// such credentials by itself (cached basic auth, an auth proxy).
func (d *dashboard) csrfToken(c caller) string {
	if c.session != nil {
		return b64.EncodeToString(d.sessions.mac("csrf-session", c.session.id))
	}
	return b64.EncodeToString(d.sessions.mac("csrf-actor", c.who))
}

// checkCSRF refuses a state change that another site may have made: first
// by the browser's Sec-Fetch-Site and Origin headers when present
// (http.CrossOriginProtection), then by the form's token, compared in
// constant time. The form must be parsed already. SameSite=Strict on the
// session cookie is a third line: a cross-site post carries no session.
func (d *dashboard) checkCSRF(r *http.Request, c caller) error {
	if err := d.cop.Check(r); err != nil {
		return errCSRF
	}
	got, err := b64.DecodeString(r.PostForm.Get(csrfField))
	want, _ := b64.DecodeString(d.csrfToken(c))
	if err != nil || !hmac.Equal(got, want) {
		return errCSRF
	}
	return nil
}
