// Package admin serves cronguard's operator API over HTTP: list the jobs
// with their state, read a job's history, run a job now (whole, or chosen
// items given as JSON), and switch a job off or on with a reason; and the
// same as an HTML dashboard for people.
//
//	h, err := admin.Handler(s, admin.Token(os.Getenv("CRONGUARD_TOKEN")))
//	mux.Handle("/admin/", http.StripPrefix("/admin", h))
//
// Dashboard routes (HTML; server-rendered with html/template, files
// embedded, a little plain JavaScript for confirmations and a 5-second
// refresh, every page usable without it):
//
//	GET  /                          the jobs table
//	GET  /jobs/{name}?limit=N       a job: its facts, an SVG chart of its newest 100 runs, its newest N entries (default 200, at most 1000)
//	GET  /login, POST /login        sign in: the token, or (with Authenticate) a user and password sent to it as Basic auth
//	POST /logout
//	POST /jobs/{name}/disable       form: reason (required), csrf
//	POST /jobs/{name}/enable        form: reason, csrf
//	POST /jobs/{name}/run           form: reason (logged), csrf; waits up to 5s for the run
//	GET  /static/{file}             the stylesheet and the script
//
// A dashboard request passes with a session cookie (set by the sign-in
// form: HMAC-signed under a key drawn per handler, with an expiry,
// SessionTTL, Secure, HttpOnly, SameSite=Strict) or with the credentials
// the API takes. Every state change needs the caller's CSRF token (a hidden
// field, compared in constant time) and is refused with 403 when the
// browser says it comes from another origin (Sec-Fetch-Site, Origin).
// Every dashboard response carries a strict Content-Security-Policy. The
// JSON API never takes the cookie.
//
// API routes (JSON in, JSON out):
//
//	GET  /api/jobs                  {"jobs": [Job...]}
//	GET  /api/jobs/{name}?limit=N   {"job": Job, "history": [HistoryEntry...]}  (N: 1..1000, default 100)
//	POST /api/jobs/{name}/run       no body: one whole run; a JSON array: those items → the Report
//	POST /api/jobs/{name}/disable   {"reason": "..."} (required) → Job
//	POST /api/jobs/{name}/enable    {"reason": "..."} (optional) → Job
//
// Every request must authenticate: a bearer token (Token), compared in
// constant time, or a function of the request (Authenticate); Handler
// refuses to build without one (ErrNoAuth). Errors are JSON,
// {"error": "...", "code": "..."}, with a fitting status: 400 bad body or
// invalid items (code invalid_items), 401, 404 unknown job or route, 405,
// 409 locked, 413 body over the limit (MaxBodyBytes, 1 MiB), 503 scheduler
// stopped.
//
// A run started here belongs to the scheduler, not to the request: if the
// client goes away, the run goes on (Scheduler.Stop still ends it) and its
// Report lands in the history. Every state-changing call is logged with who
// made it and lands in the history: manual runs with Report.By, flips as
// entries of kind "flag". Tokens never appear in logs or responses.
package admin

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/cronguard/cronguard"
)

// DefaultMaxBodyBytes bounds request bodies (MaxBodyBytes).
const DefaultMaxBodyBytes = 1 << 20

// minTokenLen is the shortest bearer token Token accepts: shorter ones can
// be guessed.
const minTokenLen = 16

var (
	// ErrNoAuth: Handler was called without Token or Authenticate.
	ErrNoAuth = errors.New("admin: no authentication: give admin.Token or admin.Authenticate")
	// ErrInvalidOption: an option with a value that cannot work.
	ErrInvalidOption = errors.New("admin: invalid option")
)

// Option configures Handler.
type Option func(*config) error

type config struct {
	tokenSum *[sha256.Size]byte // sha256 of the token: compared in constant time, whatever its length
	auth     func(*http.Request) (string, bool)
	maxBody  int64
	logger   *slog.Logger
	dash     dashConfig // session.go
}

// Token makes requests that carry "Authorization: Bearer <token>" pass, as
// the actor "token". The token must be at least 16 bytes long. It is kept
// only as a SHA-256 digest.
func Token(token string) Option {
	return func(c *config) error {
		if len(token) < minTokenLen {
			return fmt.Errorf("%w: Token: the token is %d bytes; want at least %d", ErrInvalidOption, len(token), minTokenLen)
		}
		sum := sha256.Sum256([]byte(token))
		c.tokenSum = &sum
		return nil
	}
}

// Authenticate makes requests pass for which fn returns ok, as the actor
// who (recorded in logs, Report.By and the switch's state). With Token too,
// a request passes if either does.
func Authenticate(fn func(r *http.Request) (who string, ok bool)) Option {
	return func(c *config) error {
		if fn == nil {
			return fmt.Errorf("%w: Authenticate(nil)", ErrInvalidOption)
		}
		c.auth = fn
		return nil
	}
}

// MaxBodyBytes bounds request bodies (default 1 MiB); a bigger body is
// refused with 413.
func MaxBodyBytes(n int64) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: MaxBodyBytes %d: must be positive", ErrInvalidOption, n)
		}
		c.maxBody = n
		return nil
	}
}

// Logger sets where calls are logged (default slog.Default()).
func Logger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return fmt.Errorf("%w: Logger(nil)", ErrInvalidOption)
		}
		c.logger = l
		return nil
	}
}

// handler is the http.Handler Handler returns.
type handler struct {
	s    *cronguard.Scheduler
	cfg  config
	mux  *http.ServeMux
	dash *dashboard // every path outside /api (dashboard.go)
}

// Handler returns the admin API of s. It fails with ErrNoAuth without
// Token or Authenticate, and with ErrInvalidOption for a bad option.
func Handler(s *cronguard.Scheduler, opts ...Option) (http.Handler, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: nil Scheduler", ErrInvalidOption)
	}
	cfg := config{maxBody: DefaultMaxBodyBytes, logger: slog.Default()}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		if err := opt(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.tokenSum == nil && cfg.auth == nil {
		return nil, ErrNoAuth
	}
	h := &handler{s: s, cfg: cfg, mux: http.NewServeMux()}
	h.routes()
	var err error
	if h.dash, err = newDashboard(h); err != nil {
		return nil, err
	}
	return h, nil
}

// route is one method and pattern of the API.
type route struct {
	method, path string
	fn           http.HandlerFunc
}

func (h *handler) routes() {
	rs := []route{
		{"GET", "/api/jobs", h.listJobs},
		{"GET", "/api/jobs/{name}", h.getJob},
		{"POST", "/api/jobs/{name}/run", h.runJob},
		{"POST", "/api/jobs/{name}/enable", h.flip(true)},
		{"POST", "/api/jobs/{name}/disable", h.flip(false)},
	}
	allow := map[string][]string{}
	for _, r := range rs {
		h.mux.HandleFunc(r.method+" "+r.path, r.fn)
		allow[r.path] = append(allow[r.path], r.method)
		if r.method == "GET" {
			allow[r.path] = append(allow[r.path], "HEAD")
		}
	}
	// The same paths without a method catch the other methods: a JSON 405
	// (ServeMux's own is plain text).
	for path, methods := range allow {
		slices.Sort(methods)
		h.mux.HandleFunc(path, methodNotAllowed(strings.Join(methods, ", ")))
	}
	h.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such route: "+clip(r.URL.Path))
	})
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("method %s not allowed here; allowed: %s", clip(r.Method), allow))
	}
}

// ServeHTTP authenticates the request, then routes it: /api/... to the
// JSON API, which takes only the request's own credentials (never the
// dashboard's cookie, so it needs no CSRF defence), the rest to the
// dashboard.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.URL.Path != "/api" && !strings.HasPrefix(r.URL.Path, "/api/") {
		h.dash.ServeHTTP(w, r)
		return
	}
	who, ok := h.authenticate(r)
	if !ok {
		h.cfg.logger.Warn("cronguard admin: unauthorized request",
			"method", clip(r.Method), "path", clip(r.URL.Path), "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="cronguard"`)
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or wrong credentials")
		return
	}
	h.mux.ServeHTTP(w, r.WithContext(cronguard.WithActor(r.Context(), who)))
}
