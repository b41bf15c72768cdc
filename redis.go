package cronguard

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// WithRedis is the one-line setup for several instances: run locks, tick
// claims, the kill switch and Batch checkpoints live in Redis, under the
// WithKeyPrefix prefix. One client may be a single Redis, Sentinel or
// Cluster client; several independent clients make a Redlock quorum for the
// locks (the kill switch and checkpoints use the first). WithLocker,
// WithKillSwitch and WithCheckpointStore, given too, win. The scheduler
// closes what WithRedis made when it stops, not the clients.
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
// is known (so WithKeyPrefix may come in any order).
func (c *config) useRedis() {
	if len(c.redis) == 0 {
		return
	}
	c.useRedisLocker()     // redislock.go
	c.useRedisKillSwitch() // killswitch_redis.go
	if c.checkpoints == nil {
		c.checkpoints, _ = NewRedisCheckpoints(c.redis[0], c.prefix) // never fails: WithRedis refused nil clients
	}
}
