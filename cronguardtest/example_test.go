package cronguardtest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cronguard/cronguard"
	"github.com/cronguard/cronguard/cronguardtest"
)

// mailbox stands in for the service's table of users to remind, and its
// mailer.
type mailbox struct {
	pending []string // users not reminded yet, in key order
	bounce  string   // a user whose address bounces
}

// due is SELECT user WHERE NOT reminded ORDER BY user LIMIT p.Size.
func (m *mailbox) due(_ context.Context, p cronguard.Page) ([]string, error) {
	return m.pending[:min(p.Size, len(m.pending))], nil
}

func (m *mailbox) remind(_ context.Context, user string) error {
	if user == m.bounce {
		m.pending = m.pending[1:] // marked as tried: it is not fetched again
		return errors.New("address bounced")
	}
	m.pending = m.pending[1:]
	return nil
}

// registerReminders is the service's own code under test: it registers the
// daily reminder job.
func registerReminders(s *cronguard.Scheduler, m *mailbox) error {
	return s.Register("reminders", "0 9 * * *", cronguard.Batch[string]{
		Fetch:   m.due,
		Process: m.remind,
		Key:     func(user string) string { return user },
		Size:    2,
	})
}

// testReminders is the test: in a _test.go file it is
// func TestReminders(t *testing.T). It runs the 9:00 tick through the
// job's guards, without Redis and without waiting for cron, and asserts on
// the Report and the events.
func testReminders(t testing.TB) {
	s, rec := cronguardtest.New(t)
	m := &mailbox{pending: []string{"ann", "bob", "cid"}, bounce: "bob"}
	if err := registerReminders(s, m); err != nil {
		t.Fatalf("register: %v", err)
	}
	tick := time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)
	rep := cronguardtest.RunTick(t, s, "reminders", tick)
	if rep.Outcome() != "done" || rep.Processed != 2 || rep.Failed != 1 {
		t.Errorf("report: %v", rep)
	}
	failed := rec.Find(cronguard.EventItemFailed, "reminders")
	if len(failed) != 1 || failed[0].Item != "bob" {
		t.Errorf("item failures: %+v", failed)
	}
	fmt.Println(rep.Trigger, rep.Tick.Format(time.Kitchen), rep.Outcome())
	fmt.Println("batches:", rep.Batches, "processed:", rep.Processed, "failed:", rep.Failed)
	fmt.Println("failed item:", failed[0].Item, "-", failed[0].Err)
}

// A test of a Batch job: run one tick, assert on its Report and events.
func ExampleRunTick() {
	t := &exampleT{}
	defer t.cleanup()
	testReminders(t)
	// Output:
	// schedule 9:00AM done
	// batches: 2 processed: 2 failed: 1
	// failed item: bob - address bounced
}

// A tick the spec does not name fails the test at once, naming the ticks
// around it.
func ExampleRunTick_notATick() {
	t := &exampleT{}
	defer t.cleanup()
	s, _ := cronguardtest.New(t)
	_ = registerReminders(s, &mailbox{})
	t.run(func() { cronguardtest.RunTick(t, s, "reminders", time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC)) })
	// Output:
	// FAIL: cronguardtest.RunTick: cronguard: not a tick of the job's spec: job "reminders": 2026-11-27T09:30:00Z is not a tick of "0 9 * * *"; the tick before it is 2026-11-27T09:00:00Z; the tick after it is 2026-11-28T09:00:00Z
}

// exampleT stands in for the *testing.T a test gets (Example functions
// have none): it prints failures and runs cleanups when told.
type exampleT struct {
	testing.TB // only the methods below are called
	cleanups   []func()
}

func (t *exampleT) Helper()                        {}
func (t *exampleT) Context() context.Context       { return context.Background() }
func (t *exampleT) Cleanup(fn func())              { t.cleanups = append(t.cleanups, fn) }
func (t *exampleT) Errorf(format string, a ...any) { fmt.Printf("FAIL: "+format+"\n", a...) }
func (t *exampleT) Fatalf(format string, a ...any) {
	fmt.Printf("FAIL: "+format+"\n", a...)
	panic(exampleFatal{})
}

type exampleFatal struct{}

// run calls fn, stopping where it fails the test, as testing does.
func (t *exampleT) run(fn func()) {
	defer func() {
		if r := recover(); r != nil && r != (exampleFatal{}) {
			panic(r)
		}
	}()
	fn()
}

func (t *exampleT) cleanup() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}
