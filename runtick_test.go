package cronguard

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RunTick runs a tick the spec names through the scheduled chain (the
// claim mark moves: the same tick again is taken), with tickFrom the tick
// as given; a time the spec does not name is ErrNotATick, naming
// the job, the time and the ticks around it, and runs nothing; an unknown
// job is ErrUnknownJob.
func TestRunTick(t *testing.T) {
	s, _ := newTest(t)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Skip(err)
	}
	job := &tickRecorder{}
	for name, spec := range map[string]string{"half": "*/30 * * * * *", "every": "@every 90s", "paris": "CRON_TZ=Europe/Paris 30 9 * * *"} {
		if err := s.Register(name, spec, job); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	for _, c := range []struct {
		job  string
		tick time.Time
	}{
		{"half", t0.Add(30 * time.Second).In(paris)},
		{"every", time.Unix(0, 0).Add(90 * time.Second * time.Duration(t0.Unix()/90+1))},
		{"paris", time.Date(2026, 11, 27, 8, 30, 0, 0, time.UTC)},
	} {
		rep, err := s.RunTick(ctx, c.job, c.tick)
		if err != nil || rep.Outcome() != "done" || !rep.Tick.Equal(c.tick) || rep.Trigger != TriggerSchedule {
			t.Fatalf("%s at %s: %v, %v", c.job, c.tick, rep, err)
		}
		if rep, err := s.RunTick(ctx, c.job, c.tick); skipOf(rep) != "tick_taken" || !errors.Is(err, ErrTickTaken) {
			t.Fatalf("%s at %s again: %v, %v", c.job, c.tick, rep, err)
		}
	}
	if got := job.all(); len(got) != 3 || got[0].Location() != paris || got[0].Second() != 30 {
		t.Fatalf("ticks run %v, want 3, as given", got)
	}

	for _, c := range []struct {
		job  string
		tick time.Time
		want []string
	}{
		{"half", t0.Add(10 * time.Second), []string{`job "half"`, "12:00:10Z", "before it is 2026-11-27T12:00:00Z", "after it is 2026-11-27T12:00:30Z"}},
		{"half", t0.Add(time.Nanosecond), []string{"12:00:00.000000001Z"}},
		{"paris", time.Date(2026, 11, 27, 9, 30, 0, 0, time.UTC), []string{"after it is 2026-11-28T08:30:00Z"}},
		{"half", time.Time{}, []string{"0001-01-01T00:00:00Z"}},
	} {
		rep, err := s.RunTick(ctx, c.job, c.tick)
		if !errors.Is(err, ErrNotATick) || !errors.Is(rep.Err, ErrNotATick) || !rep.Start.IsZero() || skipOf(rep) != "" || rep.Instance != "" {
			t.Fatalf("%s at %s: %v, %v; want ErrNotATick", c.job, c.tick, rep, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not say %q", err, w)
			}
		}
	}
	if _, err := s.RunTick(ctx, "nope", t0); !errors.Is(err, ErrUnknownJob) {
		t.Fatalf("unknown job: %v", err)
	}
	if n := len(job.all()); n != 3 {
		t.Fatalf("%d runs after refused calls, want 3", n)
	}
}

// tzChildEnv re-runs TestRunTickInTheSchedulersZone in a process whose
// time.Local is Asia/Tokyo (TZ is read once, at start).
const tzChildEnv = "CRONGUARD_TZ_CHILD"

// A spec without a zone on a Scheduler in time.Local (the default) names
// its ticks in the local zone, whatever the location of the time given to
// RunTick: 09:00 in Tokyo given as 00:00 UTC is a tick; 09:00 UTC (18:00
// in Tokyo) is not. (robfig/cron reads such a spec in the time's own
// location, so RunTick reads the time in the Scheduler's first.)
func TestRunTickInTheSchedulersZone(t *testing.T) {
	if os.Getenv(tzChildEnv) == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRunTickInTheSchedulersZone$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), tzChildEnv+"=1", "TZ=Asia/Tokyo")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child in TZ=Asia/Tokyo: %v\n%s", err, clipN(string(out), 4000))
		}
		if strings.Contains(string(out), "--- SKIP") {
			t.Skipf("child skipped: %s", clipN(string(out), 400))
		}
		return
	}
	if _, off := time.Now().Zone(); off != 9*3600 {
		t.Skip("no tzdata for Asia/Tokyo")
	}
	s, err := New(WithLogger(slog.New(slog.DiscardHandler)), WithInstanceID("tz"))
	if err != nil {
		t.Fatal(err)
	}
	defer stopSched(t, s)
	if err := s.Register("j", "0 0 9 * * *", JobFunc(func(context.Context) error { return nil })); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.RunTick(ctx, "j", time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Errorf("09:00 in Tokyo, given in UTC: %v, want a run", err)
	}
	if _, err := s.RunTick(ctx, "j", time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)); !errors.Is(err, ErrNotATick) {
		t.Errorf("09:00 UTC (18:00 in Tokyo): %v, want ErrNotATick", err)
	}
}
