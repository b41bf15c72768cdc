package cronguard

import (
	"cmp"
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
// (NewRedlock; the other backends use the first). WithLocker,
// WithKillSwitch, WithCheckpointStore and WithHistoryStore, given too, win.
// The scheduler closes what WithRedis made when it stops, not the clients.
//
// WithRedis builds each backend with its public constructor, passing on the
// scheduler's WithKeyPrefix, WithCallBudget, WithInstanceID, WithLogger and
// WithHistorySize to the backends they concern.
func WithRedis(clients ...redis.UniversalClient) Option {
	return func(c *config) error {
		c.saw("WithRedis")
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
	shared := []Option{WithKeyPrefix(c.prefix), WithCallBudget(c.budget)}
	if c.locker == nil {
		l, err := NewRedlock(c.redis, append(shared, WithInstanceID(c.instance))...)
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
			opts = append(slices.Clip(shared), WithHistorySize(c.history.size))
		}
		hs, err := NewRedisHistory(rdb, opts...)
		if err != nil {
			return err
		}
		c.history.store = hs
	}
	if c.killSwitch == nil { // last: it starts goroutines, and nothing after it can fail
		k, err := NewRedisKillSwitch(rdb, append(slices.Clip(shared), WithLogger(c.logger))...)
		if err != nil {
			return err
		}
		c.killSwitch = k
		c.owned = append(c.owned, k)
	}
	return nil
}

// The Redis backends' constructors take the scheduler's Options, one
// vocabulary: WithKeyPrefix and WithCallBudget concern every backend;
// WithInstanceID the locker (NewRedisLocker, NewRedlock), naming this
// process in its lock values; WithLogger the kill switch, which logs losing
// and regaining Redis; WithHistorySize the history (the stream's MAXLEN).
// Any other option, given to a constructor, is refused with
// ErrInvalidOption naming the option and the constructor (never ignored),
// as is a nil option or client.
var (
	forLocker      = redisBackend{"NewRedisLocker", []string{"WithInstanceID"}}
	forRedlock     = redisBackend{"NewRedlock", []string{"WithInstanceID"}}
	forKillSwitch  = redisBackend{"NewRedisKillSwitch", []string{"WithLogger", "redisResync", "redisDefaultOff"}}
	forCheckpoints = redisBackend{"NewRedisCheckpoints", nil}
	forHistory     = redisBackend{"NewRedisHistory", []string{"WithHistorySize"}}
)

// redisBackend names a Redis backend's constructor and the options it takes
// besides WithKeyPrefix and WithCallBudget.
type redisBackend struct {
	ctor string
	own  []string
}

// saw records that the option named name was given (see backendConfig).
func (c *config) saw(name string) { c.given = append(c.given, name) }

// backendConfig checks the client and applies opts for backend, with the
// scheduler's defaults, refusing an option that does not concern it.
func backendConfig(b redisBackend, rdb redis.UniversalClient, opts []Option) (config, error) {
	if isNil(rdb) {
		return config{}, fmt.Errorf("%w: %s: nil client", ErrInvalidOption, b.ctor)
	}
	c := config{
		prefix: defaultKeyPrefix,
		budget: defaultCallBudget,
		logger: slog.Default(),
		resync: defaultResync,
	}
	for i, opt := range opts {
		if opt == nil {
			return config{}, fmt.Errorf("%w: %s: option %d is nil", ErrInvalidOption, b.ctor, i)
		}
		seen := len(c.given)
		if err := opt(&c); err != nil {
			return config{}, fmt.Errorf("%s: %w", b.ctor, err)
		}
		name := fmt.Sprintf("option %d", i) // an Option that does not record its name
		if len(c.given) > seen {
			name = c.given[seen]
		}
		if name != "WithKeyPrefix" && name != "WithCallBudget" && !slices.Contains(b.own, name) {
			return config{}, fmt.Errorf("%w: %s is not an option of %s", ErrInvalidOption, name, b.ctor)
		}
	}
	c.instance = cmp.Or(c.instance, defaultInstanceID())
	c.history.size = cmp.Or(c.history.size, defaultHistorySize)
	return c, nil
}

// bounded gives one call of a Redis backend its deadline: the caller's
// when it set one, otherwise budget. It never adds a second bound to a
// caller's deadline, so the call budget is applied in one layer: the
// Scheduler's (WithCallBudget) on every call the Scheduler makes, the
// backend's (its own WithCallBudget) on direct calls without a deadline.
func bounded(ctx context.Context, budget time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, budget)
}

func noCancel() {}
