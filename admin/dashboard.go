package admin

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"

	"github.com/cronguard/cronguard"
	"golang.org/x/time/rate"
)

// contentSecurityPolicy is sent with every dashboard response: only this
// handler's own script and stylesheet, no inline script or style, no
// framing, forms that post here only. connect-src lets the page's script
// re-read the page it shows (live refresh).
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pageFiles are the pages; each is parsed with layout.html and
// partials.html.
var pageFiles = []string{"jobs.html", "job.html", "login.html", "error.html"}

// dashboard is the HTML side of the handler: every path outside /api.
type dashboard struct {
	h            *handler
	mux          *http.ServeMux
	pages        map[string]*template.Template
	sessions     *sessions
	cop          *http.CrossOriginProtection
	failedLogins *rate.Limiter
}

func newDashboard(h *handler) (*dashboard, error) {
	d := &dashboard{
		h: h, mux: http.NewServeMux(), pages: map[string]*template.Template{},
		sessions: newSessions(h.cfg.dash.sessionTTL), cop: http.NewCrossOriginProtection(),
		failedLogins: newLoginLimiter(),
	}
	for _, p := range pageFiles {
		t, err := template.New(p).Funcs(templateFuncs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", "templates/"+p)
		if err != nil {
			return nil, fmt.Errorf("admin: dashboard template %s: %w", p, err)
		}
		d.pages[p] = t
	}
	d.routes()
	return d, nil
}

func (d *dashboard) routes() {
	static, _ := fs.Sub(staticFS, "static")
	d.mux.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, r.PathValue("file"))
	})
	d.mux.HandleFunc("GET /login", d.loginForm)
	d.mux.HandleFunc("POST /login", d.login)
	d.mux.HandleFunc("POST /logout", d.action(d.logout))
	d.mux.HandleFunc("GET /{$}", d.private(d.jobsPage))
	d.mux.HandleFunc("GET /jobs/{name}", d.private(d.jobPage))
	d.mux.HandleFunc("POST /jobs/{name}/enable", d.action(d.flip(true)))
	d.mux.HandleFunc("POST /jobs/{name}/disable", d.action(d.flip(false)))
	d.mux.HandleFunc("POST /jobs/{name}/run", d.action(d.run))
	d.mux.HandleFunc("/", d.private(func(w http.ResponseWriter, r *http.Request, c caller) {
		d.renderError(w, r, c, http.StatusNotFound, "There is no such page.")
	}))
}

// ServeHTTP serves the dashboard with its security headers.
func (d *dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", contentSecurityPolicy)
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "same-origin")
	d.mux.ServeHTTP(w, r)
}

// authed is a handler for a signed-in caller.
type authed func(w http.ResponseWriter, r *http.Request, c caller)

// caller says who makes r: a valid session cookie, or the credentials the
// API takes (bearer token, Authenticate).
func (d *dashboard) caller(r *http.Request) (caller, bool) {
	if ss, ok := d.sessions.fromRequest(r); ok {
		return caller{who: ss.who, session: &ss}, true
	}
	if who, ok := d.h.authenticate(r); ok {
		return caller{who: who}, true
	}
	return caller{}, false
}

// private lets signed-in callers through; others go to the sign-in form
// (GET, HEAD) or get 401.
func (d *dashboard) private(fn authed) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, ok := d.caller(r)
		if !ok {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, basePath(r)+"/login?next="+url.QueryEscape(r.URL.EscapedPath()), http.StatusSeeOther)
				return
			}
			d.renderError(w, r, caller{}, http.StatusUnauthorized, "Sign in first.")
			return
		}
		fn(w, r.WithContext(cronguard.WithActor(r.Context(), c.who)), c)
	}
}

// action is private plus a parsed form that passed the CSRF check (403
// otherwise).
func (d *dashboard) action(fn authed) http.HandlerFunc {
	return d.private(func(w http.ResponseWriter, r *http.Request, c caller) {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			d.renderError(w, r, c, http.StatusBadRequest, "The form could not be read.")
			return
		}
		if err := d.checkCSRF(r, c); err != nil {
			d.h.audit(r, "refused form", r.PathValue("name"), c.who, err, "path", clip(r.URL.Path))
			d.renderError(w, r, c, http.StatusForbidden,
				"This form did not come from this dashboard, or it is from an older sign-in: reload the page and try again.")
			return
		}
		fn(w, r, c)
	})
}

// basePath is where the handler is mounted: the part of the request's path
// that a StripPrefix took off ("" at the root). Links, redirects and
// cookies are made under it.
func basePath(r *http.Request) string {
	u, err := url.ParseRequestURI(r.RequestURI)
	if err != nil {
		return ""
	}
	full, rest := u.EscapedPath(), r.URL.EscapedPath()
	base, ok := strings.CutSuffix(full, rest)
	if !ok || base == "" || !strings.HasPrefix(base, "/") || strings.HasPrefix(base, "//") || strings.ContainsAny(base, "\\\"'<>") {
		return ""
	}
	return strings.TrimSuffix(base, "/")
}

// layout is what every page shows around its content.
type layout struct {
	Base    string // basePath
	Title   string
	Who     string // "" on the sign-in page
	Session bool   // signed in with the form: offer to sign out
	CSRF    string
	Flash   *flash
}

func (d *dashboard) layout(r *http.Request, c caller, title string) layout {
	l := layout{Base: basePath(r), Title: clip(title), Who: clip(c.who), Session: c.session != nil}
	if c.who != "" {
		l.CSRF = d.csrfToken(c)
	}
	return l
}

// errorPage is the data of error.html.
type errorPage struct {
	layout
	Status  int
	Message string
}

func (d *dashboard) renderError(w http.ResponseWriter, r *http.Request, c caller, status int, msg string) {
	d.render(w, r, status, "error.html", &errorPage{layout: d.layout(r, c, http.StatusText(status)), Status: status, Message: msg})
}

// render executes a page into a buffer first, so that a template error is a
// clean 500 rather than half a page.
func (d *dashboard) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	if err := d.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		d.h.cfg.logger.Error("cronguard admin: render", "page", page, "err", err)
		http.Error(w, "cronguard: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}
