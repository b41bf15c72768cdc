package cronguard

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// WithRedis is the one-line setup for several instances: run locks, tick
// claims, the kill switch, Batch checkpoints and the run history live in
// Redis, under the WithKeyPrefix prefix (the keys: ARCHITECTURE.md, "Where
// state lives"). One client may be a single Redis, Sentinel or Cluster
// client; several independent clients make a Redlock quorum for the locks
// (the other backends use the first). WithLocker, WithKillSwitch,
// WithCheckpointStore and WithHistoryStore, given too, win. The scheduler
// closes what WithRedis made when it stops, not the clients.
//
// WithRedis builds each backend with its public constructor, passing the
// scheduler's settings as RedisOptions: WithKeyPrefix as RedisPrefix,
// WithCallBudget as RedisBudget, WithInstanceID as RedisOwner, WithLogger
// as RedisLogger and WithHistorySize as RedisHistorySize.
func WithRedis(clients ...redis.UniversalClient) Option {
	return func(c *config) error {
		if len(clients) == 0 {
			return fmt.Errorf("%w: WithRedis: no client", ErrInvalidOption)
		}
		for i, cl := range clients {
			if isNil(cl) {
				return fmt.Errorf("%w: WithRedis: client %d is nil", ErrInvalidOption, i)
			}
		}
		c.redis = clients
		return nil
	}
}

// useRedis makes the Redis backends WithRedis asked for, after every option
// is known (so WithKeyPrefix may come in any order), unless an option gave
// the store already.
func (c *config) useRedis() error {
	if len(c.redis) == 0 {
		return nil
	}
	rdb := c.redis[0]
	shared := []RedisOption{RedisPrefix(c.prefix), RedisBudget(c.budget)}
	if c.locker == nil {
		l, err := NewRedisLocker(rdb, slices.Concat(shared, []RedisOption{RedisOwner(c.instance), RedlockWith(c.redis[1:]...)})...)
		if err != nil {
			return err
		}
		c.locker = l
	}
	if c.checkpoints == nil {
		cs, err := NewRedisCheckpoints(rdb, shared...)
		if err != nil {
			return err
		}
		c.checkpoints = cs
	}
	if c.history.store == nil {
		opts := shared
		if c.history.size > 0 {
			opts = slices.Concat(shared, []RedisOption{RedisHistorySize(c.history.size)})
		}
		hs, err := NewRedisHistory(rdb, opts...)
		if err != nil {
			return err
		}
		c.history.store = hs
	}
	if c.killSwitch == nil { // last: it starts goroutines, and nothing after it can fail
		k, err := NewRedisKillSwitch(rdb, slices.Concat(shared, []RedisOption{RedisLogger(c.logger)})...)
		if err != nil {
			return err
		}
		c.killSwitch = k
		c.owned = append(c.owned, k)
	}
	return nil
}

// RedisOption configures a Redis backend: NewRedisLocker, NewRedisKillSwitch,
// NewRedisCheckpoints and NewRedisHistory share this one vocabulary.
// RedisPrefix and RedisBudget apply to every backend; the others to the
// backends their documentation names, and given to another backend they are
// refused with ErrInvalidOption (never ignored). A nil option is refused too.
type RedisOption func(*redisConfig) error

// redisBackend names the backend a redisConfig is for.
type redisBackend string

const (
	forLocker      redisBackend = "NewRedisLocker"
	forKillSwitch  redisBackend = "NewRedisKillSwitch"
	forCheckpoints redisBackend = "NewRedisCheckpoints"
	forHistory     redisBackend = "NewRedisHistory"
)

// redisConfig is what the RedisOptions set, with the defaults filled in by
// newRedisConfig.
type redisConfig struct {
	backend     redisBackend
	prefix      string
	budget      time.Duration
	owner       string                  // locker
	more        []redis.UniversalClient // locker: RedlockWith
	logger      *slog.Logger            // kill switch
	resync      time.Duration
	defaultOff  bool
	historySize int // history
}

// newRedisConfig checks the client and applies opts for backend.
func newRedisConfig(backend redisBackend, rdb redis.UniversalClient, opts []RedisOption) (redisConfig, error) {
	if isNil(rdb) {
		return redisConfig{}, fmt.Errorf("%w: %s: nil client", ErrInvalidOption, backend)
	}
	c := redisConfig{
		backend:     backend,
		prefix:      defaultKeyPrefix,
		budget:      defaultCallBudget,
		logger:      slog.Default(),
		resync:      defaultResync,
		historySize: defaultHistorySize,
	}
	for i, opt := range opts {
		if opt == nil {
			return redisConfig{}, fmt.Errorf("%w: %s: option %d is nil", ErrInvalidOption, backend, i)
		}
		if err := opt(&c); err != nil {
			return redisConfig{}, err
		}
	}
	if c.owner == "" {
		c.owner = defaultInstanceID()
	}
	return c, nil
}

// only refuses option name unless the config is for one of backends.
func (c *redisConfig) only(name string, backends ...redisBackend) error {
	if slices.Contains(backends, c.backend) {
		return nil
	}
	return fmt.Errorf("%w: %s is not an option of %s", ErrInvalidOption, name, c.backend)
}

// RedisPrefix sets the prefix of every key and channel the backend uses
// (default "cronguard:", as WithKeyPrefix). Services that share a Redis
// but not their jobs need different prefixes. Every backend takes it.
func RedisPrefix(p string) RedisOption {
	return func(c *redisConfig) error {
		c.prefix = p
		return nil
	}
}

// RedisBudget bounds each call the backend makes (default 2s, as
// WithCallBudget) when the caller's context has no deadline; a caller's
// deadline is kept as it is, longer or shorter. The Scheduler gives every
// call a deadline of WithCallBudget, so on the scheduler's calls the
// budget is applied once, by the Scheduler; RedisBudget bounds direct calls
// and the kill switch's background reads of its hash. Every backend takes
// it.
func RedisBudget(d time.Duration) RedisOption {
	return func(c *redisConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: %s: RedisBudget %s: must be positive", ErrInvalidOption, c.backend, d)
		}
		c.budget = d
		return nil
	}
}

// RedisOwner names this process in the value of the run locks
// NewRedisLocker takes ("owner/random"), so that a run that finds a lock
// taken can say who holds it (default hostname-pid, as WithInstanceID).
// NewRedisLocker only.
func RedisOwner(id string) RedisOption {
	return func(c *redisConfig) error {
		if err := c.only("RedisOwner", forLocker); err != nil {
			return err
		}
		if id == "" {
			return fmt.Errorf("%w: %s: RedisOwner(\"\")", ErrInvalidOption, c.backend)
		}
		c.owner = id
		return nil
	}
}

// RedlockWith adds independent Redis masters to the one given to
// NewRedisLocker: with N servers in all, a claim or a lock needs a majority
// (N/2+1) of them, so the locker works while a minority is down. Use an odd
// number of servers, three or five, each a separate master (not replicas of
// one another). Round-trip counts are per server. NewRedisLocker only.
func RedlockWith(more ...redis.UniversalClient) RedisOption {
	return func(c *redisConfig) error {
		if err := c.only("RedlockWith", forLocker); err != nil {
			return err
		}
		for i, cl := range more {
			if isNil(cl) {
				return fmt.Errorf("%w: %s: RedlockWith: client %d is nil", ErrInvalidOption, c.backend, i)
			}
		}
		c.more = append(c.more, more...)
		return nil
	}
}

// RedisLogger sets where the kill switch logs losing and regaining Redis
// (default slog.Default(); WithRedis passes WithLogger's).
// NewRedisKillSwitch only: the other backends do not log.
func RedisLogger(l *slog.Logger) RedisOption {
	return func(c *redisConfig) error {
		if err := c.only("RedisLogger", forKillSwitch); err != nil {
			return err
		}
		if l == nil {
			return fmt.Errorf("%w: %s: RedisLogger(nil)", ErrInvalidOption, c.backend)
		}
		c.logger = l
		return nil
	}
}

// RedisResync sets how often the kill switch reloads its cache from Redis
// while its subscription is live, in case a pub/sub message was lost or
// the hash was edited by hand (default 10s). Each reload is one HGETALL per
// instance. NewRedisKillSwitch only.
func RedisResync(d time.Duration) RedisOption {
	return func(c *redisConfig) error {
		if err := c.only("RedisResync", forKillSwitch); err != nil {
			return err
		}
		if d <= 0 {
			return fmt.Errorf("%w: %s: RedisResync %s: must be positive", ErrInvalidOption, c.backend, d)
		}
		c.resync = d
		return nil
	}
}

// RedisDefaultOff makes a flag that is not in Redis off: every job must
// then be switched on explicitly before it runs. By default such a flag is
// on. NewRedisKillSwitch only.
func RedisDefaultOff() RedisOption {
	return func(c *redisConfig) error {
		if err := c.only("RedisDefaultOff", forKillSwitch); err != nil {
			return err
		}
		c.defaultOff = true
		return nil
	}
}

// RedisHistorySize sets about how many entries the history keeps per job,
// the MAXLEN of each job's stream (default 100, as WithHistorySize).
// NewRedisHistory only.
func RedisHistorySize(n int) RedisOption {
	return func(c *redisConfig) error {
		if err := c.only("RedisHistorySize", forHistory); err != nil {
			return err
		}
		if n < 1 {
			return fmt.Errorf("%w: %s: RedisHistorySize %d: must be at least 1", ErrInvalidOption, c.backend, n)
		}
		c.historySize = n
		return nil
	}
}

// bounded gives one call of a Redis backend its deadline: the caller's
// when it set one, otherwise budget. It never adds a second bound to a
// caller's deadline, so the call budget is applied in one layer: the
// Scheduler's (WithCallBudget) on every call the Scheduler makes, the
// backend's (RedisBudget) on direct calls without a deadline.
func bounded(ctx context.Context, budget time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, budget)
}

func noCancel() {}
