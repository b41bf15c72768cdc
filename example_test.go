package cronguard_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/cronguard/cronguard"
)

type User struct {
	ID    int64
	Email string
}

// users is a stand-in for a table: Fetch selects the users not yet e-mailed.
type users struct {
	all    []User
	mailed map[int64]bool
}

func newUsers(n int) *users {
	u := &users{mailed: map[int64]bool{}}
	for i := 1; i <= n; i++ {
		u.all = append(u.all, User{ID: int64(i), Email: fmt.Sprintf("user%d@example.com", i)})
	}
	return u
}

// pending is SELECT ... WHERE NOT mailed ORDER BY id LIMIT size.
func (u *users) pending(_ context.Context, p cronguard.Page) ([]User, error) {
	var out []User
	for _, x := range u.all {
		if !u.mailed[x.ID] && len(out) < p.Size {
			out = append(out, x)
		}
	}
	return out, nil
}

func (u *users) send(_ context.Context, x User) error {
	u.mailed[x.ID] = true // send the e-mail, then mark the user, in one transaction
	return nil
}

func userKey(x User) string { return strconv.FormatInt(x.ID, 10) }

func ExampleNew() {
	// Without options the scheduler runs on embedded in-memory backends: one
	// process, no Redis. cronguard.WithRedis(rdb) makes it safe for many.
	s, err := cronguard.New(
		cronguard.WithLocation(time.UTC),
		cronguard.WithLogger(slog.New(slog.DiscardHandler)),
		cronguard.WithObserver(func(e cronguard.Event) {
			if e.Kind == cronguard.EventFinished {
				fmt.Println(e.Report.Job, e.Report.Outcome())
			}
		}),
	)
	if err != nil {
		panic(err)
	}
	_ = s.Register("hello", "@every 1h", cronguard.JobFunc(func(ctx context.Context) error {
		return nil
	}))
	_ = s.Start()
	_, _ = s.RunManually(context.Background(), "hello")
	_ = s.Stop(context.Background())
	// Output: hello done
}

func ExampleScheduler_Register() {
	s, _ := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)))
	defer s.Stop(context.Background())

	report := cronguard.JobFunc(func(ctx context.Context) error {
		// The report's Tick is the tick this run is for, never time.Now().
		r, _ := cronguard.ReportFrom(ctx, nil)
		fmt.Println("report for", r.Tick)
		return nil
	})
	err := s.Register("nightly-report", "CRON_TZ=Europe/Paris 0 3 * * *", report,
		cronguard.LockTTL(time.Minute),
		cronguard.Timeout(20*time.Minute),
		cronguard.QueueOverlap()) // a tick that comes while a run goes waits for it
	fmt.Println(err)

	err = s.Register("nightly-report", "@daily", report)
	fmt.Println(errors.Is(err, cronguard.ErrDuplicateJob))

	err = s.Register("typo", "0 3 * *", report)
	fmt.Println(errors.Is(err, cronguard.ErrInvalidSpec))
	// Output:
	// <nil>
	// true
	// true
}

func ExampleBatch() {
	s, _ := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)))
	defer s.Stop(context.Background())

	table := newUsers(250)
	_ = s.Register("confirmation-emails", "*/30 * * * * *", cronguard.Batch[User]{
		Fetch:   table.pending,
		Process: table.send,
		Key:     userKey,
		Size:    100,
	})
	rep, err := s.RunManually(context.Background(), "confirmation-emails")
	fmt.Println(rep.Batches, rep.Processed, rep.Outcome(), err)
	// Output: 3 250 done <nil>
}

// The seed's bug: a Fetch that forgets to leave out the users already
// e-mailed. The runaway guard stops the run after one batch and switches the
// job off, so the next tick does not e-mail the same users again.
func ExampleBatch_runaway() {
	s, _ := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)))
	defer s.Stop(context.Background())

	table := newUsers(250)
	_ = s.Register("confirmation-emails", "*/30 * * * * *", cronguard.Batch[User]{
		Fetch: func(_ context.Context, p cronguard.Page) ([]User, error) {
			return table.all[:p.Size], nil // bug: no WHERE NOT mailed
		},
		Process: table.send,
		Key:     userKey,
	})
	rep, err := s.RunManually(context.Background(), "confirmation-emails")
	fmt.Println(rep.Processed, rep.Outcome(), errors.Is(err, cronguard.ErrRunaway))
	info, _ := s.Job("confirmation-emails")
	fmt.Println("enabled:", info.Enabled)
	// Output:
	// 100 runaway true
	// enabled: false
}

func ExampleScheduler_RunManually() {
	s, _ := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)))
	defer s.Stop(context.Background())

	table := newUsers(10)
	_ = s.Register("confirmation-emails", "@every 5m", cronguard.Batch[User]{
		Fetch: table.pending, Process: table.send, Key: userKey,
	})
	ctx := context.Background()

	// Chosen items: exactly these users, now, under the job's lock.
	rep, err := s.RunManually(ctx, "confirmation-emails", table.all[3], table.all[4])
	fmt.Println(rep.Trigger, rep.Processed, err)

	// A wrong item type is an error, before anything runs.
	_, err = s.RunManually(ctx, "confirmation-emails", "user4@example.com")
	fmt.Println(err)

	// One whole run, now.
	rep, _ = s.RunManually(ctx, "confirmation-emails")
	fmt.Println(rep.Processed)
	// Output:
	// manual 2 <nil>
	// cronguard: invalid items: job "confirmation-emails": item 0 is string, want cronguard_test.User (or []cronguard_test.User)
	// 8
}

// Middleware tells a run that did not start (a *SkipError: switched off,
// tick taken elsewhere, still running, locked, a store down, stopping) from
// a run that failed, and counts them apart.
func ExampleSkipError() {
	count := func(next cronguard.Job) cronguard.Job {
		return cronguard.JobFunc(func(ctx context.Context) error {
			err := next.Run(ctx)
			var skip *cronguard.SkipError
			switch {
			case errors.As(err, &skip):
				fmt.Printf("skipped %s: switched off: %t\n", skip.Job, errors.Is(skip.Reason, cronguard.ErrKilled))
			case err != nil:
				fmt.Println("failed:", err)
			default:
				fmt.Println("ran")
			}
			return err
		})
	}
	s, _ := cronguard.New(cronguard.WithLogger(slog.New(slog.DiscardHandler)), cronguard.WithMiddleware(count))
	defer s.Stop(context.Background())
	_ = s.Register("report", "@hourly", cronguard.JobFunc(func(context.Context) error { return errors.New("db down") }))

	ctx := context.Background()
	tick := time.Date(2030, 1, 1, 10, 0, 0, 0, time.UTC)
	_, _ = s.RunTick(ctx, "report", tick)
	_ = s.SetEnabled(ctx, "report", false, "maintenance")
	rep, _ := s.RunTick(ctx, "report", tick.Add(time.Hour))
	fmt.Println(rep.Outcome(), errors.Is(rep.Err, cronguard.ErrKilled))
	// Output:
	// failed: db down
	// skipped report: switched off: true
	// killed true
}
