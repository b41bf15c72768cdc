package cronguard

import (
	"fmt"
	"time"
)

// Test hooks of the Redis kill switch, settings no user needs: how often it
// reloads its cache while subscribed (default 10s), and flags absent from
// Redis read as off. NewRedisKillSwitch takes them.

func redisResync(d time.Duration) Option {
	return func(c *config) error {
		c.saw("redisResync")
		if d <= 0 {
			return fmt.Errorf("%w: redisResync %s: must be positive", ErrInvalidOption, d)
		}
		c.resync = d
		return nil
	}
}

func redisDefaultOff() Option {
	return func(c *config) error {
		c.saw("redisDefaultOff")
		c.defaultOff = true
		return nil
	}
}
