package cronguard

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cronguard/cronguard/internal/redistest"
)

// Tests of redis.go: the one option vocabulary of the Redis backends, the
// backends WithRedis builds, and the one layer of the call budget.

// redisBackends builds each Redis backend by its public constructor, by
// constructor name; a kill switch it builds is closed when the test ends.
func redisBackends(t *testing.T) map[string]func(redis.UniversalClient, ...Option) (any, error) {
	return map[string]func(redis.UniversalClient, ...Option) (any, error){
		forLocker.ctor: func(c redis.UniversalClient, o ...Option) (any, error) { return NewRedisLocker(c, o...) },
		forRedlock.ctor: func(c redis.UniversalClient, o ...Option) (any, error) {
			return NewRedlock([]redis.UniversalClient{c, c, c}, o...)
		},
		forKillSwitch.ctor: func(c redis.UniversalClient, o ...Option) (any, error) {
			k, err := NewRedisKillSwitch(c, append([]Option{WithLogger(ksQuiet)}, o...)...)
			if err == nil {
				t.Cleanup(func() { _ = k.Close() })
			}
			return k, err
		},
		forCheckpoints.ctor: func(c redis.UniversalClient, o ...Option) (any, error) { return NewRedisCheckpoints(c, o...) },
		forHistory.ctor:     func(c redis.UniversalClient, o ...Option) (any, error) { return NewRedisHistory(c, o...) },
	}
}

// Every constructor takes the scheduler's Options: the shared ones
// everywhere, each other only where it means something (refused, naming
// option and constructor, elsewhere — a scheduler-only option too), and
// refuses nil clients, nil options and bad values with ErrInvalidOption.
func TestRedisOptionsOneVocabulary(t *testing.T) {
	c := redistest.Start(t).Client(t)
	var typedNil *redis.Client
	own := map[string]struct {
		opt      Option
		backends []string
		bad      Option
	}{
		"WithInstanceID":  {WithInstanceID("me"), []string{"NewRedisLocker", "NewRedlock"}, WithInstanceID("")},
		"WithLogger":      {WithLogger(ksQuiet), []string{"NewRedisKillSwitch"}, WithLogger(nil)},
		"redisResync":     {redisResync(time.Second), []string{"NewRedisKillSwitch"}, redisResync(0)},
		"redisDefaultOff": {redisDefaultOff(), []string{"NewRedisKillSwitch"}, nil},
		"WithHistorySize": {WithHistorySize(5), []string{"NewRedisHistory"}, WithHistorySize(0)},
		"WithRedis":       {WithRedis(c), nil, nil},
		"WithFailOpen":    {WithFailOpen(), nil, nil},
		"WithLocation":    {WithLocation(time.UTC), nil, nil},
	}
	for backend, build := range redisBackends(t) {
		refused := func(what string, want string, rdb redis.UniversalClient, opts ...Option) {
			t.Helper()
			if _, err := build(rdb, opts...); !errors.Is(err, ErrInvalidOption) ||
				!strings.Contains(err.Error(), backend) || !strings.Contains(err.Error(), want) {
				t.Errorf("%s(%s) = %v; want ErrInvalidOption naming %s and %q", backend, what, err, backend, want)
			}
		}
		if backend != forRedlock.ctor {
			refused("nil client", "nil client", nil)
			refused("typed nil client", "nil client", typedNil)
		}
		refused("nil option", "is nil", c, WithKeyPrefix("a:"), nil)
		refused("WithCallBudget(0)", "WithCallBudget 0s", c, WithCallBudget(0))
		if _, err := build(c, WithKeyPrefix("svc:"), WithCallBudget(time.Second)); err != nil {
			t.Errorf("%s(WithKeyPrefix, WithCallBudget) = %v", backend, err)
		}
		for name, o := range own {
			if !slices.Contains(o.backends, backend) {
				refused(name, name+" is not an option of "+backend, c, o.opt)
				continue
			}
			if _, err := build(c, o.opt); err != nil {
				t.Errorf("%s(%s) = %v", backend, name, err)
			}
			if o.bad != nil {
				refused(name+" with a bad value", name, c, o.bad)
			}
		}
	}
}

// A backend built by hand without options has the scheduler's defaults;
// WithRedis builds every backend with the scheduler's settings.
func TestWithRedisPassesSchedulerSettings(t *testing.T) {
	c := redistest.Start(t).Client(t)
	logger := slog.New(slog.DiscardHandler)

	l := rlLocker(t, c)
	plain, _ := newTest(t)
	if l.prefix != defaultKeyPrefix || l.budget != defaultCallBudget || l.owner != defaultInstanceID() {
		t.Errorf("NewRedisLocker defaults: prefix %q, budget %s, owner %q", l.prefix, l.budget, l.owner)
	}
	if plain.cfg.prefix != defaultKeyPrefix || plain.cfg.budget != defaultCallBudget {
		t.Errorf("New defaults: prefix %q, budget %s", plain.cfg.prefix, plain.cfg.budget)
	}

	s, _ := newTest(t, WithRedis(c), WithKeyPrefix("svc:"), WithCallBudget(700*time.Millisecond),
		WithInstanceID("web-9"), WithHistorySize(5), WithLogger(logger))
	rl, ok := s.cfg.locker.(*redisLocker)
	if !ok || rl.prefix != "svc:" || rl.budget != 700*time.Millisecond || rl.owner != "web-9" || len(rl.clients) != 1 {
		t.Errorf("locker = %T %+v", s.cfg.locker, rl)
	}
	ks, ok := s.cfg.killSwitch.(*RedisKillSwitch)
	if !ok || ks.key != "svc:killswitch" || ks.channel != "svc:killswitch:flips:db0" ||
		ks.budget != 700*time.Millisecond || ks.logger != logger || ks.resync != defaultResync || !ks.defaultOn {
		t.Errorf("kill switch = %T key %q channel %q budget %s logger %v", s.cfg.killSwitch, ks.key, ks.channel, ks.budget, ks.logger == logger)
	}
	cs, ok := s.cfg.checkpoints.(*redisCheckpoints)
	if !ok || cs.key != "svc:checkpoint" || cs.budget != 700*time.Millisecond {
		t.Errorf("checkpoints = %T %+v", s.cfg.checkpoints, cs)
	}
	hs, ok := s.history.storeOf(s).(*redisHistory)
	if !ok || hs.key("j") != "svc:history:{j}" || hs.size != 5 || hs.budget != 700*time.Millisecond {
		t.Errorf("history = %T %+v", s.history.storeOf(s), hs)
	}

	q, _ := newTest(t, WithRedis(c, c, c))
	if rl := q.cfg.locker.(*redisLocker); len(rl.clients) != 3 || rl.quorum != 2 {
		t.Errorf("WithRedis(3 clients): locker over %d servers, quorum %d", len(rl.clients), rl.quorum)
	}
}

// The call budget is applied in one layer. A call whose context has a
// deadline keeps it, even one longer than the backend's WithCallBudget (the
// Scheduler set it, from its own); a call without one ends within the
// backend's budget.
// Against a frozen Redis (SIGSTOP), for each backend.
func TestRedisBudgetOneLayer(t *testing.T) {
	srv := redistest.Start(t)
	opts := srv.Options()
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	const budget = 100 * time.Millisecond
	const callerDeadline = 1200 * time.Millisecond
	ks, err := NewRedisKillSwitch(c, WithLogger(ksQuiet), WithCallBudget(budget))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ks.Close() })
	ksLoaded(t, ks)
	l := rlLocker(t, c, WithCallBudget(budget))
	cs, _ := NewRedisCheckpoints(c, WithCallBudget(budget))
	hs, _ := NewRedisHistory(c, WithCallBudget(budget))
	calls := map[string]func(context.Context) error{
		"NewRedisLocker Claim": func(ctx context.Context) error {
			_, err := l.Claim(ctx, "j", t0, 0, "me")
			return err
		},
		"RedisKillSwitch.SetEnabled": func(ctx context.Context) error { return ks.SetEnabled(ctx, "j", false, "") },
		"NewRedisCheckpoints Save":   func(ctx context.Context) error { return cs.Save(ctx, "j", "1") },
		"NewRedisCheckpoints Load": func(ctx context.Context) error {
			_, err := cs.Load(ctx, "j")
			return err
		},
		"NewRedisHistory Append": func(ctx context.Context) error {
			return hs.Append(ctx, HistoryEntry{Kind: EventFlag, Job: "j", Time: t0})
		},
		"NewRedisHistory History": func(ctx context.Context) error {
			_, err := hs.History(ctx, "j", 1)
			return err
		},
	}
	srv.Pause(t)
	defer srv.Continue(t)
	for name, call := range calls {
		start := time.Now()
		err := call(context.Background())
		if d := time.Since(start); err == nil || d > callerDeadline-budget {
			t.Errorf("%s without a deadline: %v after %s; want an error within the %s budget", name, err, d, budget)
		}
		ctx, cancel := context.WithTimeout(context.Background(), callerDeadline)
		start = time.Now()
		err = call(ctx)
		cancel()
		if d := time.Since(start); err == nil || d < callerDeadline-budget {
			t.Errorf("%s with a %s deadline: %v after %s; the backend cut the caller's deadline with its own budget", name, callerDeadline, err, d)
		}
	}
}
