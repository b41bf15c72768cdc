package admin_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/admin"
)

func newServer(t testing.TB, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// renderBound is a regression bound for one page, far above what it takes
// (README, "Dashboard"): a page that slows down by orders of magnitude
// fails, a busy machine does not.
const renderBound = 2 * time.Second

// scheduler makes a quiet scheduler with n jobs, job-0000..., every fifth
// one switched off, and the history store hs (nil: the default).
func scheduler(t testing.TB, n int, opts ...cronguard.Option) *cronguard.Scheduler {
	t.Helper()
	s, err := cronguard.New(append([]cronguard.Option{cronguard.WithLogger(slog.New(slog.DiscardHandler)), cronguard.WithInstanceID("web-1")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	for i := range n {
		name := fmt.Sprintf("job-%04d", i)
		if err := s.Register(name, "*/5 * * * *", cronguard.JobFunc(func(context.Context) error { return nil })); err != nil {
			t.Fatal(err)
		}
		if i%5 == 4 {
			if err := s.SetEnabled(context.Background(), name, false, "switched off for the render test"); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s
}

// signedIn serves s's dashboard and signs in.
func signedIn(t testing.TB, s *cronguard.Scheduler) *browser {
	h, err := admin.Handler(s, admin.Token(token), admin.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	tt, _ := t.(*testing.T)
	b := newBrowser(tt, newServer(t, h).URL)
	if tt != nil {
		b.login(token)
	}
	return b
}

// timed gets path and checks it answers 200 within renderBound.
func timed(t *testing.T, b *browser, path string) (page, time.Duration) {
	t.Helper()
	start := time.Now()
	p := b.get(path)
	took := time.Since(start)
	wantStatus(t, "GET "+path, p, http.StatusOK)
	if took > renderBound {
		t.Errorf("GET %s took %s; want under %s", path, took, renderBound)
	}
	return p, took
}

// TestDashboardRendersJobs: the jobs page with 0, 1 and 500 jobs.
func TestDashboardRendersJobs(t *testing.T) {
	for _, n := range []int{0, 1, 500} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := scheduler(t, n)
			b := signedIn(t, s)
			p, took := timed(t, b, "/")
			t.Logf("jobs page with %d jobs: %s, %d KB", n, took, len(p.body)/1024)
			if got := strings.Count(p.body, `<th scope="row"`); got != n {
				t.Errorf("%d job rows, want %d", got, n)
			}
			if n == 0 && !strings.Contains(p.body, "No jobs are registered") {
				t.Error("empty jobs page does not say so")
			}
			if n > 0 {
				if !strings.Contains(p.body, fmt.Sprintf("%d %s,", n, map[bool]string{true: "job", false: "jobs"}[n == 1])) {
					t.Error("no job count in the caption")
				}
				if got := strings.Count(p.body, `action="/jobs/job-`); got != 2*n {
					t.Errorf("%d action forms, want 2 per job", got)
				}
			}
			if n == 500 {
				if got := strings.Count(p.body, `<span class="badge badge-bad">off</span>`); got != 100 {
					t.Errorf("%d jobs shown off, want 100", got)
				}
			}
		})
	}
}

// TestDashboardRendersLongHistory: a job page over 10,000 history entries
// shows the newest 200 (or ?limit=, up to 1,000) and charts the newest 100
// runs among them.
func TestDashboardRendersLongHistory(t *testing.T) {
	const entries = 10_000
	hs := &sliceHistory{}
	s := scheduler(t, 1, cronguard.WithHistoryStore(hs), cronguard.WithHistorySize(entries))
	fillHistory(t, hs, "job-0000", entries)
	if h, _ := s.History(context.Background(), "job-0000", 0); len(h) != entries {
		t.Fatalf("history holds %d entries, want %d", len(h), entries)
	}
	b := signedIn(t, s)
	for _, c := range []struct {
		path      string
		rows, bar int
		more      bool
	}{
		{"/jobs/job-0000", 200, 100, true},
		{"/jobs/job-0000?limit=1000", 1000, 100, false},
		{"/jobs/job-0000?limit=20", 20, 16, true}, // 16 runs among the newest 20 (every fifth is a skip)
	} {
		p, took := timed(t, b, c.path)
		t.Logf("%s over %d entries: %s, %d KB", c.path, entries, took, len(p.body)/1024)
		if got := strings.Count(p.body, `<tr class="kind-`); got != c.rows {
			t.Errorf("%s: %d history rows, want %d", c.path, got, c.rows)
		}
		if got := strings.Count(p.body, `class="bar-items"`); got != c.bar {
			t.Errorf("%s: %d bars, want %d", c.path, got, c.bar)
		}
		if got := strings.Contains(p.body, "show more"); got != c.more {
			t.Errorf("%s: show more link %v, want %v", c.path, got, c.more)
		}
		for _, want := range []string{"skipped: killed", "missed 3 ticks", "switched off", "error", "<svg"} {
			if c.rows >= 200 && !strings.Contains(p.body, want) {
				t.Errorf("%s lacks %q", c.path, want)
			}
		}
	}
	for _, q := range []string{"0", "1001", "-1", "x"} {
		if p := b.get("/jobs/job-0000?limit=" + q); p.status != http.StatusBadRequest {
			t.Errorf("limit=%s: %d, want 400", q, p.status)
		}
	}
}

// fillHistory appends n entries to job's history, oldest first: runs (one
// in seven failed), every fifth a skip, every 50th a missed tick, every
// 100th a flip.
// sliceHistory is a HistoryStore over a slice, for tests that fill a
// history directly (the memory ring is unexported: it is New's default).
type sliceHistory struct {
	mu      sync.Mutex
	entries []cronguard.HistoryEntry // oldest first
}

func (h *sliceHistory) Append(_ context.Context, e cronguard.HistoryEntry) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	e.ID = strconv.Itoa(len(h.entries) + 1)
	h.entries = append(h.entries, e)
	return nil
}

func (h *sliceHistory) History(_ context.Context, job string, limit int) ([]cronguard.HistoryEntry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []cronguard.HistoryEntry
	for i := len(h.entries) - 1; i >= 0 && len(out) < limit; i-- {
		if h.entries[i].Job == job {
			out = append(out, h.entries[i])
		}
	}
	return out, nil
}

func fillHistory(t testing.TB, hs cronguard.HistoryStore, job string, n int) {
	t.Helper()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	off := false
	for i := range n {
		at := t0.Add(time.Duration(i) * time.Minute)
		e := cronguard.HistoryEntry{Job: job, Time: at, Instance: fmt.Sprintf("web-%d", i%3), Trigger: cronguard.TriggerSchedule, Tick: at}
		switch {
		case i%100 == 99:
			e.Kind, e.Trigger, e.Tick, e.By, e.Reason = cronguard.EventFlag, "", time.Time{}, "ops", "flip"
			e.Enabled = &off
		case i%50 == 49:
			e.Kind, e.Missed, e.First, e.Last = cronguard.EventMissed, 3, at.Add(-3*time.Minute), at.Add(-time.Minute)
		case i%5 == 4:
			e.Kind, e.Skip = cronguard.EventSkipped, "killed"
		default:
			r := &cronguard.Report{Job: job, Trigger: cronguard.TriggerSchedule, Tick: at, Instance: e.Instance, Start: at,
				Duration: time.Duration(i%17+1) * 37 * time.Millisecond, Batches: i % 4, Processed: (i % 13) * 10}
			if i%7 == 0 {
				r.Err, r.Failed = errors.New("db: connection reset"), 3
			}
			e.Kind, e.Report = cronguard.EventFinished, r
		}
		if err := hs.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkDashboard measures the pages of TestDashboardRender*: the jobs
// list with 500 jobs, and a job page over 10,000 history entries.
func BenchmarkDashboard(b *testing.B) {
	b.Run("jobs=500", func(b *testing.B) {
		benchPage(b, scheduler(b, 500), "/")
	})
	b.Run("history=10000", func(b *testing.B) {
		hs := &sliceHistory{}
		s := scheduler(b, 1, cronguard.WithHistoryStore(hs), cronguard.WithHistorySize(10_000))
		fillHistory(b, hs, "job-0000", 10_000)
		benchPage(b, s, "/jobs/job-0000")
	})
}

func benchPage(b *testing.B, s *cronguard.Scheduler, path string) {
	h, err := admin.Handler(s, admin.Token(token), admin.Logger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		req := httptest.NewRequest("GET", path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("GET %s: %d", path, w.Code)
		}
	}
}
