package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Session bounds.
const (
	// DefaultSessionTTL is how long a dashboard login lasts (SessionTTL).
	DefaultSessionTTL = 8 * time.Hour
	minSessionTTL     = time.Minute
	maxSessionTTL     = 30 * 24 * time.Hour
	// maxRevoked bounds the sessions remembered as logged out before their
	// expiry; past it the handler's key changes and every session ends.
	maxRevoked = 10_000
	// maxWhoLen bounds the actor name a session carries.
	maxWhoLen = 200
)

// Cookie names.
const (
	sessionCookie = "cronguard_session"
	flashCookie   = "cronguard_flash"
)

// SessionTTL sets how long a dashboard login lasts (default 8h; from 1
// minute to 30 days). The session cannot be extended: past it, log in again.
func SessionTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < minSessionTTL || d > maxSessionTTL {
			return fmt.Errorf("%w: SessionTTL %s: want from %s to %s", ErrInvalidOption, d, minSessionTTL, maxSessionTTL)
		}
		c.dash.sessionTTL = d
		return nil
	}
}

// dashConfig is the dashboard's part of config.
type dashConfig struct {
	sessionTTL time.Duration // 0: DefaultSessionTTL
}

// session is a dashboard login: who, until when, under which random id.
type session struct {
	id  string // 128 random bits, base64url
	who string
	exp time.Time
}

// sessions signs and checks session cookies. A cookie is
//
//	v1.<expiry unix>.<id>.<base64url who>.<base64url HMAC-SHA256 of what precedes>
//
// under a key drawn at random when the handler is built: nothing is stored
// per session but the ids logged out before their expiry.
type sessions struct {
	ttl time.Duration
	now func() time.Time // time.Now; tests move it

	mu      sync.Mutex
	key     []byte
	revoked map[string]time.Time // session id → its expiry
}

func newSessions(ttl time.Duration) *sessions {
	if ttl == 0 {
		ttl = DefaultSessionTTL
	}
	return &sessions{ttl: ttl, now: time.Now, key: randomKey(), revoked: map[string]time.Time{}}
}

func randomKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand)
	return k
}

// mac is the HMAC-SHA256 of the parts under the current key, with a label
// so that a MAC made for one use (session, CSRF, flash) fits no other.
func (s *sessions) mac(label string, parts ...string) []byte {
	s.mu.Lock()
	m := hmac.New(sha256.New, s.key)
	s.mu.Unlock()
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write([]byte{0})
		m.Write([]byte(p))
	}
	return m.Sum(nil)
}

var b64 = base64.RawURLEncoding

// issue makes a session for who and its cookie value.
func (s *sessions) issue(who string) (session, string) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	ss := session{id: b64.EncodeToString(id), who: clipN(who, maxWhoLen), exp: s.now().Add(s.ttl).Truncate(time.Second)}
	body := strings.Join([]string{"v1", strconv.FormatInt(ss.exp.Unix(), 10), ss.id, b64.EncodeToString([]byte(ss.who))}, ".")
	return ss, body + "." + b64.EncodeToString(s.mac("session", body))
}

// parse checks a cookie value: its MAC, its expiry, and that it was not
// logged out.
func (s *sessions) parse(v string) (session, bool) {
	if len(v) > 1024 {
		return session{}, false
	}
	i := strings.LastIndexByte(v, '.')
	if i < 0 {
		return session{}, false
	}
	body, sig := v[:i], v[i+1:]
	got, err := b64.DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac("session", body)) {
		return session{}, false
	}
	f := strings.Split(body, ".")
	if len(f) != 4 || f[0] != "v1" {
		return session{}, false
	}
	exp, err1 := strconv.ParseInt(f[1], 10, 64)
	who, err2 := b64.DecodeString(f[3])
	if err1 != nil || err2 != nil || !s.now().Before(time.Unix(exp, 0)) {
		return session{}, false
	}
	s.mu.Lock()
	_, out := s.revoked[f[2]]
	s.mu.Unlock()
	if out {
		return session{}, false
	}
	return session{id: f[2], who: string(who), exp: time.Unix(exp, 0)}, true
}

// fromRequest returns the request's valid session, if any.
func (s *sessions) fromRequest(r *http.Request) (session, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return session{}, false
	}
	return s.parse(c.Value)
}

// revoke ends ss before its expiry. The list of ended sessions is pruned
// of expired ones; if it still holds maxRevoked, the key changes instead,
// which ends every session (and CSRF token) of this handler.
func (s *sessions) revoke(ss session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.revoked) >= maxRevoked {
		for id, exp := range s.revoked {
			if !now.Before(exp) {
				delete(s.revoked, id)
			}
		}
	}
	if len(s.revoked) >= maxRevoked {
		s.key = randomKey()
		clear(s.revoked)
		return
	}
	s.revoked[ss.id] = ss.exp
}

// cookie is a cookie of the dashboard: Secure, HttpOnly, SameSite=Strict,
// on the path the handler is mounted at. maxAge < 0 deletes it.
func cookie(name, value, base string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: base + "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	}
}
