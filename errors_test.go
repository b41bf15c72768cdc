package cronguard

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type nilPtrJob struct{}

func (*nilPtrJob) Run(context.Context) error { return nil }

// Every error a caller can get: errors.Is works, the message names the job
// and the offending value, and nothing panics.
func TestErrors(t *testing.T) {
	okJob := JobFunc(func(context.Context) error { return nil })
	okBatch := Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa}
	register := func(name, spec string, job Job, opts ...JobOption) func(*Scheduler) error {
		return func(s *Scheduler) error { return s.Register(name, spec, job, opts...) }
	}
	ctx := context.Background()
	cases := []struct {
		name  string
		call  func(*Scheduler) error
		want  error
		names []string // substrings the message must contain
	}{
		{"invalid spec", register("mail", "61 * * * *", okJob), ErrInvalidSpec, []string{`"mail"`, `"61 * * * *"`}},
		{"bad time zone", register("mail", "CRON_TZ=Mars/Olympus * * * * *", okJob), ErrInvalidSpec, []string{`"mail"`, "Mars/Olympus"}},
		{"duplicate job", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", okJob)
			return s.Register("mail", "@daily", okJob)
		}, ErrDuplicateJob, []string{`"mail"`}},
		{"empty name", register("", "@hourly", okJob), ErrInvalidJob, []string{`""`}},
		{"blank name", register("  ", "@hourly", okJob), ErrInvalidJob, []string{`"  "`}},
		{"nil job", register("mail", "@hourly", nil), ErrInvalidJob, []string{`"mail"`}},
		{"nil JobFunc", register("mail", "@hourly", JobFunc(nil)), ErrInvalidJob, []string{`"mail"`}},
		{"nil pointer job", register("mail", "@hourly", (*nilPtrJob)(nil)), ErrInvalidJob, []string{`"mail"`}},
		{"batch without Fetch", register("mail", "@hourly", Batch[int]{Process: noop, Key: itoa}), ErrInvalidJob, []string{`"mail"`, "Fetch"}},
		{"batch without Process", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Key: itoa}), ErrInvalidJob, []string{`"mail"`, "Process"}},
		{"batch without Key", register("mail", "@hourly", &Batch[int]{Fetch: pages(1, 1), Process: noop}), ErrInvalidJob, []string{`"mail"`, "Key", "Batch[int]"}},
		{"negative Size", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, Size: -1}), ErrInvalidJob, []string{`"mail"`, "Size", "-1"}},
		{"negative MaxBatches", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, MaxBatches: -3}), ErrInvalidJob, []string{`"mail"`, "MaxBatches", "-3"}},
		{"negative Concurrency", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, Concurrency: -2}), ErrInvalidJob, []string{"Concurrency", "-2"}},
		{"NaN PerSecond", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, PerSecond: math.NaN()}), ErrInvalidJob, []string{`"mail"`, "PerSecond", "NaN"}},
		{"+Inf PerSecond", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, PerSecond: math.Inf(1)}), ErrInvalidJob, []string{`"mail"`, "PerSecond", "+Inf"}},
		{"-Inf PerSecond", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, PerSecond: math.Inf(-1)}), ErrInvalidJob, []string{`"mail"`, "PerSecond", "-Inf"}},
		{"negative PerSecond", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, PerSecond: -0.5}), ErrInvalidJob, []string{`"mail"`, "PerSecond", "-0.5"}},
		{"negative MaxFailures", register("mail", "@hourly", Batch[int]{Fetch: pages(1, 1), Process: noop, Key: itoa, MaxFailures: -1}), ErrInvalidJob, []string{`"mail"`, "MaxFailures", "-1"}},
		{"zero LockTTL", register("mail", "@hourly", okJob, LockTTL(0)), ErrInvalidOption, []string{`"mail"`, "LockTTL", "0s"}},
		{"negative Timeout", register("mail", "@hourly", okJob, Timeout(-time.Second)), ErrInvalidOption, []string{`"mail"`, "-1s"}},
		{"empty Flag", register("mail", "@hourly", okJob, Flag("")), ErrInvalidOption, []string{`"mail"`, "Flag"}},
		{"QueueOverlap and AllowOverlap", register("mail", "@hourly", okJob, QueueOverlap(), AllowOverlap()), ErrInvalidOption, []string{`"mail"`, "AllowOverlap", "queue"}},
		{"nil JobOption", register("mail", "@hourly", okJob, nil), ErrInvalidOption, []string{`"mail"`}},
		{"unknown job (manual)", func(s *Scheduler) error { _, err := s.RunManually(ctx, "nope"); return err }, ErrUnknownJob, []string{`"nope"`}},
		{"unknown job (info)", func(s *Scheduler) error { _, err := s.Job("nope"); return err }, ErrUnknownJob, []string{`"nope"`}},
		{"unknown job (flip)", func(s *Scheduler) error { return s.SetEnabled(ctx, "nope", false, "") }, ErrUnknownJob, []string{`"nope"`}},
		{"locked", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", okJob)
			if _, err := s.cfg.locker.Acquire(ctx, "mail", time.Minute); err != nil {
				return err
			}
			_, err := s.RunManually(ctx, "mail")
			return err
		}, ErrLocked, []string{`"mail"`}},
		{"killed", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", okJob)
			_ = s.SetEnabled(ctx, "mail", false, "test")
			return tickAt(t, s, "mail", t0).Err
		}, ErrKilled, []string{`"mail"`}},
		{"item type", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", okBatch)
			_, err := s.RunManually(ctx, "mail", 1, "two")
			return err
		}, ErrInvalidItems, []string{`"mail"`, "item 1", "string", "int"}},
		{"items for a plain job", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", okJob)
			_, err := s.RunManually(ctx, "mail", 1)
			return err
		}, ErrInvalidItems, []string{`"mail"`, "JobFunc"}},
		{"panic", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", JobFunc(func(context.Context) error { panic("nil map") }))
			_, err := s.RunManually(ctx, "mail")
			return err
		}, ErrPanic, []string{`"mail"`, "nil map"}},
		{"stopped (register)", func(s *Scheduler) error {
			_ = s.Stop(ctx)
			return s.Register("mail", "@hourly", okJob)
		}, ErrStopped, []string{`"mail"`}},
		{"stopped (manual)", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", okJob)
			_ = s.Stop(ctx)
			_, err := s.RunManually(ctx, "mail")
			return err
		}, ErrStopped, []string{`"mail"`}},
		{"lock lost", func(s *Scheduler) error {
			locker := s.cfg.locker.(*memoryLocker)
			_ = s.Register("mail", "@hourly", JobFunc(func(ctx context.Context) error {
				locker.forget("mail")
				<-ctx.Done()
				return ctx.Err()
			}), LockTTL(30*time.Millisecond))
			_, err := s.RunManually(ctx, "mail")
			return err
		}, ErrLockLost, []string{`"mail"`}},
		{"runaway", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", Batch[int]{Fetch: func(context.Context, Page) ([]int, error) { return []int{7}, nil }, Process: noop, Key: itoa})
			_, err := s.RunManually(ctx, "mail")
			return err
		}, ErrRunaway, []string{`"mail"`, `"7"`}},
		{"error budget", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", Batch[int]{Fetch: pages(1, 3), Key: itoa, MaxFailures: 1,
				Process: func(context.Context, int) error { return errors.New("smtp") }})
			_, err := s.RunManually(ctx, "mail")
			return err
		}, ErrErrorBudget, []string{`"mail"`, "budget 1"}},
		{"timeout", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", JobFunc(func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }), Timeout(time.Millisecond))
			_, err := s.RunManually(ctx, "mail")
			return err
		}, ErrTimeout, []string{`"mail"`, "1ms"}},
		{"tick taken", func(s *Scheduler) error {
			_ = s.Register("mail", "@hourly", okJob)
			tickAt(t, s, "mail", t0)
			return tickAt(t, s, "mail", t0).Err
		}, ErrTickTaken, []string{`"mail"`, "2026-11-27T12:00:00Z"}},
		{"middleware panics while wrapping", func(s *Scheduler) error {
			s.cfg.middleware = []Middleware{func(Job) Job { panic("bad middleware") }}
			return s.Register("mail", "@hourly", okJob)
		}, ErrPanic, []string{`"mail"`, "bad middleware"}},
		{"tiny LockTTL", register("mail", "@hourly", okJob, LockTTL(time.Microsecond)), ErrInvalidOption, []string{`"mail"`, "1µs"}},
		{"stopped (start)", func(s *Scheduler) error { _ = s.Stop(ctx); return s.Start() }, ErrStopped, nil},
		{"started twice", func(s *Scheduler) error { _ = s.Start(); return s.Start() }, ErrStarted, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, _ := newTest(t)
			err := c.call(s)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want errors.Is %v", err, c.want)
			}
			for _, n := range c.names {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("message %q does not name %s", err, n)
				}
			}
		})
	}
}

func TestNewOptionErrors(t *testing.T) {
	for name, opt := range map[string]Option{
		"nil option":       nil,
		"nil locker":       WithLocker(nil),
		"nil kill switch":  WithKillSwitch(nil),
		"nil location":     WithLocation(nil),
		"nil logger":       WithLogger(nil),
		"nil middleware":   WithMiddleware(nil),
		"empty instance":   WithInstanceID(""),
		"zero kill poll":   WithKillPoll(0),
		"zero budget":      WithCallBudget(0),
		"nil checkpoints":  WithCheckpointStore(nil),
		"no redis clients": WithRedis(),
		"typed nil redis":  WithRedis((*redis.Client)(nil)),
		"typed nil locker": WithLocker((*memoryLocker)(nil)),
	} {
		if _, err := New(opt); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: err = %v, want ErrInvalidOption", name, err)
		}
	}
}

func TestSetEnabledOnReadOnlySwitch(t *testing.T) {
	s, _ := newTest(t, WithKillSwitch(readOnlySwitch{}))
	_ = s.Register("mail", "@hourly", JobFunc(func(context.Context) error { return nil }), Flag("mail-flag"))
	err := s.SetEnabled(context.Background(), "mail", false, "")
	if !errors.Is(err, ErrNotFlippable) || !strings.Contains(err.Error(), `"mail-flag"`) {
		t.Fatalf("err = %v", err)
	}
}

type readOnlySwitch struct{}

func (readOnlySwitch) Enabled(context.Context, string) (bool, error) { return true, nil }

// User code that panics where the library calls it never takes the process
// down: Key and Process on worker goroutines, the observer, middleware.
func TestUserPanicsAreContained(t *testing.T) {
	ctx := context.Background()
	t.Run("Key", func(t *testing.T) {
		s, _ := newTest(t)
		_ = s.Register("j", "@hourly", Batch[int]{Fetch: pages(1, 4), Process: noop, Concurrency: 4,
			Key: func(i int) string {
				if i == 3 {
					panic("bad key")
				}
				return itoa(i)
			}})
		if _, err := s.RunManually(ctx, "j"); !errors.Is(err, ErrPanic) {
			t.Fatalf("err = %v, want ErrPanic", err)
		}
		if _, err := s.RunManually(ctx, "j", 1, 3); !errors.Is(err, ErrPanic) {
			t.Fatalf("manual items: err = %v, want ErrPanic", err)
		}
	})
	t.Run("observer", func(t *testing.T) {
		s, _ := newTest(t, WithObserver(func(Event) { panic("observer") }))
		_ = s.Register("j", "@hourly", Batch[int]{Fetch: pages(1, 4), Key: itoa, Concurrency: 4,
			Process: func(context.Context, int) error { return errors.New("fail") }})
		rep, _ := s.RunManually(ctx, "j")
		if rep.Failed != 4 {
			t.Fatalf("report = %+v", rep)
		}
	})
	t.Run("nil from middleware", func(t *testing.T) {
		s, _ := newTest(t, WithMiddleware(func(Job) Job { return nil }))
		err := s.Register("j", "@hourly", JobFunc(func(context.Context) error { return nil }))
		if !errors.Is(err, ErrInvalidOption) || !strings.Contains(err.Error(), `"j"`) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestTypedNilRedisClients(t *testing.T) {
	var rdb *redis.Client
	if _, err := NewRedisLocker(rdb); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("NewRedisLocker(typed nil) = %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	defer c.Close()
	if _, err := NewRedlock([]redis.UniversalClient{c, rdb}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("NewRedlock(typed nil) = %v", err)
	}
	if _, err := NewRedisKillSwitch(rdb); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("NewRedisKillSwitch(typed nil) = %v", err)
	}
	if _, err := NewRedisCheckpoints(rdb, WithKeyPrefix("cronguard:")); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("NewRedisCheckpoints(typed nil) = %v", err)
	}
}

// Stop with a context that has already ended, and nothing running, is a
// clean stop: the usual shutdown after <-signalCtx.Done().
func TestStopWithEndedContextAndNothingRunning(t *testing.T) {
	for range 50 {
		s, err := New(WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Start()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := s.Stop(ctx); err != nil {
			t.Fatalf("Stop = %v, want nil: nothing was running", err)
		}
	}
}

// Silly but valid settings do not break a run: math.MaxInt as Size,
// MaxBatches, Concurrency and MaxFailures, a huge PerSecond, for a whole run
// and for RunManually's items (batched by Size without overflowing).
func TestBatchHugeSettings(t *testing.T) {
	s, _ := newTest(t)
	var n atomic.Int32
	drained := false
	_ = s.Register("j", "@hourly", Batch[int]{
		Fetch: func(context.Context, Page) ([]int, error) {
			if drained {
				return nil, nil
			}
			drained = true
			return []int{1, 2, 3, 4, 5}, nil
		},
		Process: func(context.Context, int) error { n.Add(1); return nil },
		Key:     itoa,
		Size:    math.MaxInt, MaxBatches: math.MaxInt, Concurrency: math.MaxInt, MaxFailures: math.MaxInt,
		PerSecond: math.MaxFloat64,
	})
	if rep := tickAt(t, s, "j", t0); rep.Err != nil || rep.Processed != 5 || rep.Outcome() != "done" {
		t.Fatalf("whole run: %+v", rep)
	}
	rep, err := s.RunManually(context.Background(), "j", []int{6, 7, 8})
	if err != nil || rep.Processed != 3 || rep.Batches != 1 || n.Load() != 8 {
		t.Fatalf("manual items: %+v, err %v, processed %d in all", rep, err, n.Load())
	}
}

// Item keys come from the user's data: a 1 MiB key reaches errors clipped
// (the runaway error, a panic's item failure).
func TestBatchErrorsClipItemKeys(t *testing.T) {
	huge := strings.Repeat("k", 1<<20)
	s, rec := newTest(t)
	batch := func(process func(context.Context, string) error) Batch[string] {
		return Batch[string]{
			Fetch:   func(context.Context, Page) ([]string, error) { return []string{huge}, nil }, // always the same
			Process: process,
			Key:     func(s string) string { return s },
		}
	}
	_ = s.Register("runaway", "@hourly", batch(func(context.Context, string) error { return nil }))
	_ = s.Register("panics", "@hourly", batch(func(context.Context, string) error { panic("bad item") }))
	bounded := func(what string, err error) {
		t.Helper()
		if err == nil || len(err.Error()) > 1000 || !strings.Contains(err.Error(), "(1048576 bytes)") {
			t.Fatalf("%s: error of %d bytes, want the key clipped: %.300s", what, len(errString(err)), errString(err))
		}
	}
	rep, _ := s.RunManually(context.Background(), "runaway")
	if !errors.Is(rep.Err, ErrRunaway) {
		t.Fatalf("report = %v", rep)
	}
	bounded("runaway", rep.Err)
	_, _ = s.RunManually(context.Background(), "panics")
	ev, ok := rec.find(EventItemFailed)
	if !ok || !errors.Is(ev.Err, ErrPanic) || ev.Item != huge {
		t.Fatalf("item_failed = %v, %v; want the panic, with the whole key in Item", ok, ev.Err)
	}
	bounded("panic", ev.Err)
}
