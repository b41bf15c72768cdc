package cronguard

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// At least one test fires through robfig/cron on a real seconds spec.
func TestFiresThroughCron(t *testing.T) {
	s, _ := newTest(t)
	var mu sync.Mutex
	var ticks []time.Time
	var started []time.Time
	fired := make(chan struct{}, 10)
	_ = s.Register("sec", "* * * * * *", JobFunc(func(ctx context.Context) error {
		mu.Lock()
		ticks = append(ticks, tickFrom(ctx))
		started = append(started, time.Now())
		mu.Unlock()
		fired <- struct{}{}
		return nil
	}))
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case <-fired:
		case <-time.After(5 * time.Second):
			t.Fatal("a seconds spec did not fire twice within 5s")
		}
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, tick := range ticks {
		if tick.IsZero() || tick.Nanosecond() != 0 || started[i].Before(tick) {
			t.Fatalf("run %d: tick %v (started %v): want the whole second it was scheduled for", i, tick, started[i])
		}
	}
	if !ticks[1].After(ticks[0]) {
		t.Fatalf("ticks %v do not advance", ticks)
	}
	info, _ := s.Job("sec")
	if !info.Prev.Equal(ticks[len(ticks)-1]) || info.Last == nil || info.Last.Outcome() != "done" {
		t.Fatalf("JobInfo = %+v", info)
	}
}

func TestRegisterAfterStart(t *testing.T) {
	s, _ := newTest(t)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	fired := make(chan struct{}, 4)
	if err := s.Register("late", "* * * * * *", JobFunc(func(context.Context) error {
		fired <- struct{}{}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	case <-time.After(3 * time.Second):
		t.Fatal("a job registered after Start did not fire")
	}
}

func TestStopWaitsForRunningJob(t *testing.T) {
	s, _ := newTest(t)
	_ = s.Start()
	b := newBlocker()
	_ = s.Register("slow", "@every 1m", b)
	run := goAsync(func() Report { return tickAt(t, s, "slow", t0) })
	b.waitStarted(t)
	stopped := goAsync(func() error { return s.Stop(context.Background()) })
	select {
	case <-stopped:
		t.Fatal("Stop returned while a job was running and its ctx had not ended")
	case <-time.After(50 * time.Millisecond):
	}
	close(b.release)
	if err := recv(t, stopped); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if r := recv(t, run); r.Outcome() != "done" {
		t.Fatalf("the waited-for run: %+v", r)
	}
}

func TestStopCancelsSlowJobAtDeadline(t *testing.T) {
	s, _ := newTest(t)
	_ = s.Start()
	var cause error
	started := make(chan struct{})
	_ = s.Register("slow", "@every 1m", JobFunc(func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		cause = context.Cause(ctx)
		return ctx.Err()
	}))
	run := goAsync(func() Report { return tickAt(t, s, "slow", t0) })
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "slow") {
		t.Fatalf("Stop = %v, want the deadline and the job still running named", err)
	}
	rep := recv(t, run)
	if !errors.Is(cause, ErrStopped) || rep.Outcome() != "canceled" || !errors.Is(rep.Err, ErrStopped) {
		t.Fatalf("cause=%v report=%+v, want the job canceled with ErrStopped", cause, rep)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestStopCancelsManualRun(t *testing.T) {
	s, _ := newTest(t)
	b := newBlocker()
	_ = s.Register("j", "@every 1m", b)
	run := goAsync(func() error { _, err := s.RunManually(context.Background(), "j"); return err })
	b.waitStarted(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Stop(ctx); err == nil || !strings.Contains(err.Error(), "j") {
		t.Fatalf("Stop = %v", err)
	}
	if err := recv(t, run); !errors.Is(err, ErrStopped) {
		t.Fatalf("manual run err = %v, want ErrStopped", err)
	}
}

func TestJobsInfo(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithKillSwitch(ks))
	_ = s.Register("b", "*/5 * * * *", JobFunc(func(context.Context) error { return nil }), Flag("b-flag"), QueueOverlap())
	_ = s.Register("a", "@every 1h", JobFunc(func(context.Context) error { return nil }))
	_ = ks.SetEnabled(WithActor(context.Background(), "alice"), "b-flag", false, "maintenance")
	tickAt(t, s, "a", t0)
	jobs := s.Jobs()
	if len(jobs) != 2 || jobs[0].Name != "a" || jobs[1].Name != "b" {
		t.Fatalf("Jobs = %+v", jobs)
	}
	a, b := jobs[0], jobs[1]
	if !a.Enabled || b.Enabled || b.Flag != "b-flag" || b.Spec != "*/5 * * * *" || a.Overlap != "skip" || b.Overlap != "queue" {
		t.Fatalf("a=%+v b=%+v", a, b)
	}
	if a.Last == nil || a.Last.Outcome() != "done" || !a.Last.Tick.Equal(t0) || b.Last != nil {
		t.Fatalf("last reports: a=%+v b=%+v", a.Last, b.Last)
	}
	if !a.Next.After(time.Now()) || a.Next.Unix()%3600 != 0 || b.Next.Minute()%5 != 0 {
		t.Fatalf("next ticks: a=%v b=%v", a.Next, b.Next)
	}
	// The switch's record of the flip: who, why, when; none for a flag never flipped.
	if b.EnabledBy != "alice" || b.EnabledReason != "maintenance" || b.EnabledAt.IsZero() ||
		a.EnabledBy != "" || a.EnabledReason != "" || !a.EnabledAt.IsZero() {
		t.Fatalf("flip record: a=%+v b=%+v", a, b)
	}
}

func TestRunManuallyItems(t *testing.T) {
	ks := NewMemoryKillSwitch()
	s, _ := newTest(t, WithKillSwitch(ks))
	var got []int
	fetched := false
	_ = s.Register("mail", "@every 1m", Batch[int]{
		Fetch:   func(context.Context, Page) ([]int, error) { fetched = true; return nil, nil },
		Process: func(_ context.Context, u int) error { got = append(got, u); return nil },
		Key:     itoa,
	})
	_ = ks.SetEnabled(context.Background(), "mail", false, "off, yet an operator may run it")
	rep, err := s.RunManually(context.Background(), "mail", 7, []int{8, 9})
	if err != nil || fetched || len(got) != 3 || got[0] != 7 || got[2] != 9 {
		t.Fatalf("err=%v fetched=%v got=%v", err, fetched, got)
	}
	if rep.Trigger != TriggerManual || rep.Processed != 3 || rep.Batches != 1 || rep.Outcome() != "done" || !rep.Tick.IsZero() {
		t.Fatalf("report = %+v", rep)
	}
}

// Stop's deadline holds for runs robfig/cron started, too.
func TestStopDeadlineWithCronFiredJob(t *testing.T) {
	s, _ := newTest(t)
	started := make(chan struct{}, 1)
	_ = s.Register("stuck", "* * * * * *", JobFunc(func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}))
	_ = s.Start()
	select {
	case <-started:
	case <-time.After(3 * time.Second):
		t.Fatal("did not fire")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	stopped := goAsync(func() error { return s.Stop(ctx) })
	if err := recv(t, stopped); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("Stop = %v", err)
	}
}
