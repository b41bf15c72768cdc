package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
)

// claimFloorScript is the least an at-most-once-per-tick claim across
// instances must do: atomically read the job's mark and, if it is behind
// this tick, move it to the tick. KEYS[1]: the job's key; ARGV[1]: the
// tick, in Unix seconds. It returns 1 when the claim is won, 0 when the mark
// is at or past the tick already (another instance ran it).
var claimFloorScript = redis.NewScript(`
local m = redis.call('HGET', KEYS[1], 'tick')
if m and tonumber(m) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'tick', ARGV[1])
return 1
`)

// claimLoadTimeout bounds SCRIPT LOAD when the claim floor is built.
const claimLoadTimeout = 5 * time.Second

// newClaimFloor is robfig/cron whose every job, at each fire, makes one
// EVALSHA of claimFloorScript on its own key before it counts as started:
// its lateness is taken when the script returns with the claim won, as a
// guarded job's body cannot start before its claim is back. The script is
// loaded here, so no run pays a NOSCRIPT and a second round trip. A failed
// or refused claim counts in the floor's errors, not as a run.
func newClaimFloor(env *phaseEnv) (sched, error) {
	c, p := env.client, env.probe
	ctx, cancel := context.WithTimeout(context.Background(), claimLoadTimeout)
	defer cancel()
	if err := claimFloorScript.Load(ctx, c).Err(); err != nil {
		return nil, fmt.Errorf("claim-floor: SCRIPT LOAD: %w", err)
	}
	sha := claimFloorScript.Hash()
	bodyOf := func(name, _ string) func() {
		keys := []string{env.prefix + "claim:" + name}
		return func() {
			now := time.Now()
			tick := tickOf(now)
			won, err := c.EvalSha(context.Background(), sha, keys, tick.Unix()).Int()
			end := time.Now()
			if err != nil || won != 1 {
				p.errs.Add(1)
				return
			}
			p.lat.add(tick, end.Sub(tick))
			p.done.add(tick, end.Sub(tick))
			p.run.add(tick, end.Sub(now))
		}
	}
	return &robfigSched{c: cron.New(cron.WithSeconds()), bodyOf: bodyOf}, nil
}
