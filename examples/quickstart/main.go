// Command quickstart is cronguard's seed scenario, on embedded backends only
// (no Redis needed):
//
//	go run ./examples/quickstart              # from the repository root
//	go run ./examples/quickstart -duration 20s
//
// It seeds an SQLite database (modernc.org/sqlite, pure Go, in a temporary
// file removed at exit) with 1,000 users whose e-mail address is not
// confirmed yet, and registers a cronguard.Batch[User] job,
// "confirmation-emails", on a 5-second spec. Each item "sends" the
// confirmation e-mail (an outbox row) and marks the user, in one
// transaction; the job fetches the users still to do, 100 per batch, and a
// rate limit (Batch.PerSecond) makes one run take a few seconds.
//
// What it shows, in order:
//
//  1. A manual run (Scheduler.RunManually) for one chosen user, before the
//     scheduler starts, and its Report.
//  2. A kill-switch flip: about 1.5 s into the first scheduled run an
//     "operator" goroutine calls Scheduler.SetEnabled(ctx, job, false,
//     reason). The run stops between two batches (Report.Outcome() == "killed"),
//     the next tick is skipped, and a few seconds later the switch goes back
//     on so the following tick finishes the rest.
//  3. A clean exit after -duration (default 30s) or Ctrl-C: Scheduler.Stop
//     with a timeout, then a summary — users confirmed, outbox rows, and how
//     many users got two e-mails (there must be none).
//
// While it runs it serves, on 127.0.0.1 on a free port, cronguard's admin
// handler (package admin: the dashboard at /, the JSON API under /api) and
// Prometheus metrics at /metrics (package cgprom), and prints the address
// and a token made for this run: sign in to the dashboard with the token,
// or try the CLI against the API:
//
//	CRONGUARD_URL=http://127.0.0.1:PORT CRONGUARD_TOKEN=... go run ./cmd/cronguard jobs
//
// -admin sets the address ("" turns the server off: no dashboard, API or
// metrics).
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cronguard/cronguard"
	cgprom "github.com/cronguard/cronguard/prometheus"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// jobName is the job's name and, by default, its kill switch flag.
const jobName = "confirmation-emails"

// User is one row of the users table, and the item type of the job.
type User struct {
	ID    int64
	Email string
}

// options are the knobs of the scenario; main fills them from flags, the
// test picks shorter ones.
type options struct {
	Users       int           // users to seed
	Spec        string        // the job's cron spec
	Duration    time.Duration // how long the scheduler runs
	PerSecond   float64       // e-mails per second (Batch.PerSecond)
	FlipAfter   time.Duration // kill switch off this long into the first scheduled run...
	OffFor      time.Duration // ...and on again this long after that
	StopTimeout time.Duration // bound on Scheduler.Stop
	AdminAddr   string        // where the admin API listens; "" for none

	// onAdmin, when set, is told the admin API's URL and token once it
	// serves (the test uses it).
	onAdmin func(url, token string)
}

func defaultOptions() options {
	return options{
		Users:       1000,
		Spec:        "@every 5s",
		Duration:    30 * time.Second,
		PerSecond:   400, // 1,000 users take 2.5 s: the flip at 1.5 s lands mid-run
		FlipAfter:   1500 * time.Millisecond,
		OffFor:      6 * time.Second, // one tick comes while the switch is off
		StopTimeout: 10 * time.Second,
		AdminAddr:   "127.0.0.1:0",
	}
}

// summary is what the scenario did, for the final lines and the test.
type summary struct {
	Users     int                // users seeded
	Confirmed int                // users marked confirmed at the end
	Outbox    int                // e-mails "sent"
	Doubles   int                // users with more than one e-mail
	Manual    cronguard.Report   // the manual run for one user
	Runs      []cronguard.Report // scheduled runs that finished, in order
	Skipped   map[string]int     // scheduled ticks that did not run, by reason
}

func main() {
	o := defaultOptions()
	flag.DurationVar(&o.Duration, "duration", o.Duration, "how long to run the scheduler before stopping")
	flag.IntVar(&o.Users, "users", o.Users, "users to seed")
	flag.StringVar(&o.Spec, "spec", o.Spec, "cron spec of the job")
	flag.Float64Var(&o.PerSecond, "rate", o.PerSecond, "e-mails per second")
	flag.StringVar(&o.AdminAddr, "admin", o.AdminAddr, `address of the admin API ("" for none)`)
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // a second Ctrl-C ends the program at once

	if _, err := run(ctx, os.Stdout, o); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// run plays the scenario and writes what happens to out. It returns when
// o.Duration has passed or ctx is done, after stopping the scheduler and
// removing the database.
func run(ctx context.Context, out io.Writer, o options) (sum summary, err error) {
	if o.Users < 1 {
		return sum, fmt.Errorf("-users %d: need at least one user", o.Users)
	}
	p := &printer{out: out, t0: time.Now()}
	sum.Users = o.Users
	sum.Skipped = map[string]int{}

	dir, err := os.MkdirTemp("", "cronguard-quickstart-")
	if err != nil {
		return sum, err
	}
	defer os.RemoveAll(dir)
	db, err := openDB(filepath.Join(dir, "users.db"))
	if err != nil {
		return sum, err
	}
	defer db.Close()
	if err := seed(ctx, db, o.Users); err != nil {
		return sum, err
	}
	p.printf("seeded %d unconfirmed users in SQLite; job %q runs on %q, 100 per batch, %g e-mails/s",
		o.Users, jobName, o.Spec, o.PerSecond)

	// The operator: flips the kill switch off during the first scheduled
	// run, then on again. Started by the observer, stopped before exit.
	opCtx, stopOperator := context.WithCancel(ctx)
	var operator sync.WaitGroup
	defer operator.Wait()
	defer stopOperator()
	var firstRun sync.Once
	var s *cronguard.Scheduler // set before any event can start the operator

	var mu sync.Mutex // guards sum.Runs and sum.Skipped
	observe := func(ev cronguard.Event) {
		if ev.Trigger != cronguard.TriggerSchedule {
			return // the manual run is printed from its Report
		}
		switch ev.Kind {
		case cronguard.EventStarted:
			p.printf("tick %s: run started", clock(ev.Tick))
			firstRun.Do(func() {
				operator.Go(func() { operate(opCtx, s, p, o) })
			})
		case cronguard.EventSkipped:
			mu.Lock()
			sum.Skipped[ev.Skip]++
			mu.Unlock()
			p.printf("tick %s: skipped (%s)", clock(ev.Tick), ev.Skip)
		case cronguard.EventFinished:
			r := *ev.Report
			mu.Lock()
			sum.Runs = append(sum.Runs, r)
			mu.Unlock()
			p.printf("tick %s: %s", clock(ev.Tick), describe(r))
		}
	}

	metrics := cgprom.New() // Prometheus metrics, served at /metrics with the admin handler
	s, err = cronguard.New(
		cronguard.WithLogger(slog.New(slog.DiscardHandler)),
		cronguard.WithObserver(observe),
		cronguard.WithObserver(metrics.Observe),
	)
	if err != nil {
		return sum, err
	}
	metrics.Watch(s)
	// Stop even on an early return; the normal path stops below, with a
	// timeout, and a second Stop is a no-op.
	defer s.Stop(context.Background())

	job := cronguard.Batch[User]{
		Fetch: func(ctx context.Context, pg cronguard.Page) ([]User, error) {
			return unconfirmed(ctx, db, pg.Size)
		},
		Process: func(ctx context.Context, u User) error {
			return sendConfirmation(ctx, db, u)
		},
		Key:       func(u User) string { return strconv.FormatInt(u.ID, 10) },
		Size:      100,
		PerSecond: o.PerSecond,
	}
	if err := s.Register(jobName, o.Spec, job); err != nil {
		return sum, err
	}
	stopAdmin := func() {}
	if o.AdminAddr != "" {
		url, token, shutdown, err := serveAdmin(s, metrics, o.AdminAddr)
		if err != nil {
			return sum, err
		}
		// The API goes down before the scheduler stops, so no operator
		// call comes in during the stop; on an early return, at the end.
		stopAdmin = sync.OnceFunc(func() { shutdown(o.StopTimeout) })
		defer stopAdmin()
		p.printf("dashboard on %s/ (sign in with the token), metrics on %s/metrics", url, url)
		p.printf("admin API on %s, token %s; try:", url, token)
		p.printf("  CRONGUARD_URL=%s CRONGUARD_TOKEN=%s go run ./cmd/cronguard jobs", url, token)
		if o.onAdmin != nil {
			o.onAdmin(url, token)
		}
	}

	// 1. A manual run for one user, before the scheduler starts: a support
	// agent re-sends the e-mail to the user who asked for it.
	u, err := userByID(ctx, db, int64(min(42, o.Users)))
	if err != nil {
		return sum, err
	}
	sum.Manual, err = s.RunManually(ctx, jobName, u)
	if err != nil {
		return sum, fmt.Errorf("manual run: %w", err)
	}
	p.printf("manual run for user %d <%s>: %s", u.ID, u.Email, describe(sum.Manual))

	// 2. The schedule; the observer starts the operator at the first run.
	if err := s.Start(); err != nil {
		return sum, err
	}
	p.printf("scheduler started; stopping after %s or Ctrl-C", o.Duration)

	// 3. Run until the duration passes or Ctrl-C, then stop cleanly.
	wait, cancel := context.WithTimeout(ctx, o.Duration)
	<-wait.Done()
	cancel()
	if ctx.Err() != nil {
		p.printf("interrupted; stopping (waits up to %s for a run in flight)", o.StopTimeout)
	} else {
		p.printf("%s passed; stopping (waits up to %s for a run in flight)", o.Duration, o.StopTimeout)
	}
	stopOperator()
	operator.Wait()
	stopAdmin()
	stopCtx, cancelStop := context.WithTimeout(context.Background(), o.StopTimeout)
	defer cancelStop()
	if err := s.Stop(stopCtx); err != nil {
		p.printf("stop: %v", err)
	}

	// The summary, read from the database itself. The scenario's own
	// context may be done (Ctrl-C): these few queries still run.
	qctx := context.WithoutCancel(ctx)
	if err := tally(qctx, db, &sum); err != nil {
		return sum, err
	}
	p.printf("%s", outcome(sum))
	return sum, nil
}

// operate is the operator: off about o.FlipAfter into the first scheduled
// run, on again o.OffFor later. It gives up when ctx ends.
func operate(ctx context.Context, s *cronguard.Scheduler, p *printer, o options) {
	if !sleep(ctx, o.FlipAfter) {
		return
	}
	const off = "quickstart: operator saw a wrong template in the e-mails"
	if err := s.SetEnabled(ctx, jobName, false, off); err != nil {
		p.printf("kill switch: %v", err)
		return
	}
	p.printf("kill switch OFF (%q): the run stops before its next batch", off)
	if !sleep(ctx, o.OffFor) {
		return
	}
	const on = "quickstart: template fixed"
	if err := s.SetEnabled(ctx, jobName, true, on); err != nil {
		p.printf("kill switch: %v", err)
		return
	}
	p.printf("kill switch ON (%q): the next tick does the rest", on)
}

// sleep waits d or until ctx ends, and says whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// --- the database ---

func openDB(path string) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1) // one writer; SQLite serializes writes anyway
	return db, nil
}

func seed(ctx context.Context, db *sql.DB, users int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	for _, q := range []string{
		`CREATE TABLE users (
			id        INTEGER PRIMARY KEY,
			email     TEXT NOT NULL UNIQUE,
			confirmed INTEGER NOT NULL DEFAULT 0
		)`,
		`CREATE INDEX users_unconfirmed ON users (confirmed, id)`,
		// No UNIQUE on user_id: a second e-mail to one user would show.
		`CREATE TABLE outbox (
			id      INTEGER PRIMARY KEY,
			user_id INTEGER NOT NULL REFERENCES users (id),
			email   TEXT NOT NULL,
			subject TEXT NOT NULL,
			sent_at TEXT NOT NULL
		)`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO users (id, email) VALUES (?, ?)`)
	if err != nil {
		return err
	}
	defer ins.Close()
	for id := 1; id <= users; id++ {
		if _, err := ins.ExecContext(ctx, id, fmt.Sprintf("user%04d@example.com", id)); err != nil {
			return fmt.Errorf("seed user %d: %w", id, err)
		}
	}
	return tx.Commit()
}

// unconfirmed is the job's Fetch, in drain mode: the first users still to
// do. Each processed user leaves the query, so the next batch is new users.
func unconfirmed(ctx context.Context, db *sql.DB, limit int) ([]User, error) {
	rows, err := db.QueryContext(ctx,
		`SELECT id, email FROM users WHERE confirmed = 0 ORDER BY id LIMIT ?`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var users []User
	for rows.Next() {
		var u User
		if err := rows.Scan(&u.ID, &u.Email); err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	return users, rows.Err()
}

func userByID(ctx context.Context, db *sql.DB, id int64) (User, error) {
	u := User{ID: id}
	err := db.QueryRowContext(ctx, `SELECT email FROM users WHERE id = ?`, id).Scan(&u.Email)
	return u, err
}

// sendConfirmation is the job's Process: it "sends" the e-mail (an outbox
// row, which a mailer would deliver) and marks the user, in one transaction.
// It does not check whether the user was already e-mailed: keeping one user
// from being handled twice is cronguard's part here, and the summary checks
// it.
func sendConfirmation(ctx context.Context, db *sql.DB, u User) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() // a no-op after Commit
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO outbox (user_id, email, subject, sent_at) VALUES (?, ?, ?, ?)`,
		u.ID, u.Email, "Please confirm your e-mail address", time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
		return fmt.Errorf("user %d: outbox: %w", u.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE users SET confirmed = 1 WHERE id = ?`, u.ID); err != nil {
		return fmt.Errorf("user %d: mark confirmed: %w", u.ID, err)
	}
	return tx.Commit()
}

// tally reads the outcome from the database into sum.
func tally(ctx context.Context, db *sql.DB, sum *summary) error {
	for _, q := range []struct {
		sql string
		dst *int
	}{
		{`SELECT COUNT(*) FROM users WHERE confirmed = 1`, &sum.Confirmed},
		{`SELECT COUNT(*) FROM outbox`, &sum.Outbox},
		{`SELECT COUNT(*) FROM (SELECT user_id FROM outbox GROUP BY user_id HAVING COUNT(*) > 1)`, &sum.Doubles},
	} {
		if err := db.QueryRowContext(ctx, q.sql).Scan(q.dst); err != nil {
			return fmt.Errorf("summary: %w", err)
		}
	}
	return nil
}

// --- output ---

// printer writes timestamped lines, from several goroutines.
type printer struct {
	mu  sync.Mutex
	out io.Writer
	t0  time.Time
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, "[%5.1fs] %s\n", time.Since(p.t0).Seconds(), fmt.Sprintf(format, args...))
}

func clock(t time.Time) string { return t.Format("15:04:05") }

// describe tells in a few words how a run ended.
func describe(r cronguard.Report) string {
	took := r.Duration.Round(time.Millisecond)
	if r.Duration < time.Millisecond {
		took = r.Duration.Round(time.Microsecond)
	}
	sent := fmt.Sprintf("%s sent in %s", plural(r.Processed, "e-mail"), plural(r.Batches, "batch"))
	switch {
	case r.Outcome() == "done" && r.Processed == 0 && r.Failed == 0:
		return fmt.Sprintf("done, nothing left to do (%s)", took)
	case r.Outcome() == "done" && r.Failed == 0:
		return fmt.Sprintf("done: %s (%s)", sent, took)
	case r.Outcome() == "killed":
		return fmt.Sprintf("KILLED between batches: %s, then stopped (%s)", sent, took)
	}
	s := fmt.Sprintf("%s: %s, %d failed (%s)", r.Outcome(), sent, r.Failed, took)
	if r.Err != nil {
		s += ": " + r.Err.Error()
	}
	return s
}

// plural renders "1 batch", "4 batches".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	if strings.HasSuffix(noun, "ch") {
		return fmt.Sprintf("%d %ses", n, noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// outcome is the closing line.
func outcome(sum summary) string {
	killed := 0
	for _, r := range sum.Runs {
		if r.Outcome() == "killed" {
			killed++
		}
	}
	verdict := "no user got two e-mails"
	if sum.Doubles > 0 {
		verdict = fmt.Sprintf("%d USERS GOT TWO E-MAILS", sum.Doubles)
	}
	return fmt.Sprintf("summary: %d/%d users confirmed, %s, %s; 1 manual run, %s (%d killed), %s skipped while switched off",
		sum.Confirmed, sum.Users, plural(sum.Outbox, "outbox row"), verdict,
		plural(len(sum.Runs), "scheduled run"), killed, plural(sum.Skipped["killed"], "tick"))
}
