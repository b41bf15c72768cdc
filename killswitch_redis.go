package cronguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults of the Redis kill switch.
const (
	// DefaultKillSwitchResync bounds how stale a Redis kill switch's cache
	// may get when a pub/sub message is lost: the cache is reloaded from
	// Redis at least this often.
	DefaultKillSwitchResync = 10 * time.Second
)

// RedisKillSwitch is the distributed kill switch: flags live in Redis, every
// instance keeps them in a local cache, and flips reach every instance at
// once over pub/sub. Enabled never makes a round trip.
//
// # Layout
//
// With the default prefix "cronguard:", the flags are the fields of one hash,
//
//	cronguard:killswitch    field = flag name, value = JSON FlagState
//	                        {"enabled":false,"reason":"...","by":"...","at":"..."}
//
// and flips are announced on the pub/sub channel
//
//	cronguard:killswitch:flips
//
// A flag that is not in the hash is on (see RedisKillSwitchDefaultOff). The
// state is as durable as the Redis it lives in: it survives restarts of the
// instances and deploys, and restarts of Redis when Redis persists its data.
// An operator may edit the hash by hand (HSET cronguard:killswitch emails
// off): a value of on/off, true/false or 1/0 is understood too, and every
// instance picks such an edit up at its next re-sync, since no message
// announced it. A value that cannot be read makes Enabled fail for that
// flag.
//
// # Propagation and the cache
//
// SetEnabled writes the hash field and publishes the new state in one Lua
// script, so the order of the messages is the order of the writes. Each
// instance applies the messages to its cache as they come: a flip reaches
// every connected instance within a network round trip. The cache is
// reloaded from the hash (HGETALL) whenever the subscription is made or
// remade (after Redis restarted or the connection dropped) and at least
// every resync interval (RedisKillSwitchResync, default 10s), so a lost
// message is corrected within that bound. The periodic reload rides on a
// PING through the subscription's connection, which also detects a dead
// connection: one whose PING is not answered within 5s is replaced.
//
// # When Redis cannot be reached
//
// NewRedisKillSwitch does not wait for Redis: the cache loads in the
// background. Until it has loaded once, Enabled returns an error, so the
// Scheduler's fail policy applies (the job does not run unless WithFailOpen,
// and an EventFlag is raised). Once the subscription's connection fails,
// Enabled returns an error again until the switch has reloaded from Redis:
// the Scheduler's fail policy then decides — the last answer it had for the
// flag holds — and each such decision is an EventFlag, so an outage is never
// silent. State still shows the last known state. Connection losses and
// recoveries are logged (RedisKillSwitchLogger).
//
// Close stops the background goroutines; a Scheduler closes the switch that
// WithRedis made when it stops. The switch does not close the Redis client.
type RedisKillSwitch struct {
	rdb       redis.UniversalClient
	key       string
	channel   string
	resync    time.Duration
	defaultOn bool
	logger    *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu         sync.RWMutex
	flags      map[string]cachedFlag
	seq        uint64    // counts writes to flags by messages and SetEnabled
	loaded     bool      // the cache has been loaded from Redis at least once
	staleSince time.Time // zero while the cache follows Redis; else when it stopped
	lastErr    error     // why the cache does not follow Redis now
	closed     bool

	psMu     sync.Mutex
	ps       *redis.PubSub // nil until made, and after the health check dropped it
	pingSent time.Time     // zero when no PING is waiting for its PONG
}

// cachedFlag is one flag in a RedisKillSwitch's cache.
type cachedFlag struct {
	state FlagState
	err   error  // the value in Redis could not be read
	seq   uint64 // RedisKillSwitch.seq when a message or SetEnabled wrote it
}

// RedisKillSwitchOption configures NewRedisKillSwitch.
type RedisKillSwitchOption func(*RedisKillSwitch) error

// RedisKillSwitchPrefix sets the prefix of the hash and channel names
// (default "cronguard:", as WithKeyPrefix). Switches that share a Redis but
// not their flags need different prefixes.
func RedisKillSwitchPrefix(p string) RedisKillSwitchOption {
	return func(k *RedisKillSwitch) error {
		k.key = p + "killswitch"
		k.channel = p + "killswitch:flips"
		return nil
	}
}

// RedisKillSwitchResync sets how often the cache is reloaded from Redis in
// case a pub/sub message was lost (default 10s), and how often the
// subscription's connection is checked with a PING. Each reload is one
// HGETALL per instance.
func RedisKillSwitchResync(d time.Duration) RedisKillSwitchOption {
	return func(k *RedisKillSwitch) error {
		if d <= 0 {
			return fmt.Errorf("%w: RedisKillSwitchResync %s: must be positive", ErrInvalidOption, d)
		}
		k.resync = d
		return nil
	}
}

// RedisKillSwitchDefaultOff makes a flag that is not in Redis off: every
// job must then be switched on explicitly before it runs. By default such a
// flag is on.
func RedisKillSwitchDefaultOff() RedisKillSwitchOption {
	return func(k *RedisKillSwitch) error {
		k.defaultOn = false
		return nil
	}
}

// RedisKillSwitchLogger sets where the switch logs losing and regaining
// Redis (default slog.Default()). WithRedis passes the Scheduler's logger.
func RedisKillSwitchLogger(l *slog.Logger) RedisKillSwitchOption {
	return func(k *RedisKillSwitch) error {
		if l == nil {
			return fmt.Errorf("%w: RedisKillSwitchLogger(nil)", ErrInvalidOption)
		}
		k.logger = l
		return nil
	}
}

// errNotLoaded is the cause of Enabled's error before the first load, when
// no attempt has failed yet.
var errNotLoaded = errors.New("not loaded from Redis yet")

// NewRedisKillSwitch returns a kill switch on rdb (a single, Sentinel or
// Cluster client) and starts following Redis in the background. It does not
// wait for Redis. Close it when done; it does not close rdb.
func NewRedisKillSwitch(rdb redis.UniversalClient, opts ...RedisKillSwitchOption) (*RedisKillSwitch, error) {
	if isNil(rdb) {
		return nil, fmt.Errorf("%w: NewRedisKillSwitch: nil client", ErrInvalidOption)
	}
	k := newRedisKillSwitch(rdb)
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: NewRedisKillSwitch: nil option", ErrInvalidOption)
		}
		if err := opt(k); err != nil {
			return nil, err
		}
	}
	k.start()
	return k, nil
}

// newRedisKillSwitch returns a switch with the default settings, not
// started.
func newRedisKillSwitch(rdb redis.UniversalClient) *RedisKillSwitch {
	k := &RedisKillSwitch{
		rdb:       rdb,
		resync:    DefaultKillSwitchResync,
		defaultOn: true,
		logger:    slog.Default(),
		flags:     map[string]cachedFlag{},
		lastErr:   errNotLoaded,
	}
	_ = RedisKillSwitchPrefix("cronguard:")(k)
	return k
}

// start starts following Redis in the background.
func (k *RedisKillSwitch) start() {
	k.staleSince = time.Now()
	k.ctx, k.cancel = context.WithCancel(context.Background())
	k.wg.Add(2)
	go k.receive()
	go k.healthCheck()
}

// Key returns the name of the Redis hash that holds the flags.
func (k *RedisKillSwitch) Key() string { return k.key }

// Channel returns the name of the pub/sub channel flips are published on.
func (k *RedisKillSwitch) Channel() string { return k.channel }

// Enabled implements KillSwitch from the local cache, without a round trip.
// It fails before the cache has loaded once, while Redis cannot be reached
// (from the failed connection until the next reload), when the flag's value
// in Redis cannot be read, and after Close.
func (k *RedisKillSwitch) Enabled(_ context.Context, flag string) (bool, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	switch {
	case k.closed:
		return false, fmt.Errorf("redis kill switch %s: closed", k.key)
	case !k.loaded:
		return false, fmt.Errorf("redis kill switch %s: %w", k.key, k.lastErr)
	case !k.staleSince.IsZero() && k.lastErr != nil:
		// Redis is unreachable: say so, so that the Scheduler's fail policy
		// decides (the last known value holds) and raises an event for it.
		return false, fmt.Errorf("redis kill switch %s: Redis unreachable since %s: %w",
			k.key, k.staleSince.Format(time.RFC3339), k.lastErr)
	}
	f, ok := k.flags[flag]
	if !ok {
		return k.defaultOn, nil
	}
	if f.err != nil {
		return false, f.err
	}
	return f.state.Enabled, nil
}

// State returns the flag's state as the cache knows it, with who flipped
// it, why and when. A flag not in Redis has the default state (on, unless
// RedisKillSwitchDefaultOff); one whose value cannot be read is off, with
// the reason.
func (k *RedisKillSwitch) State(flag string) FlagState {
	k.mu.RLock()
	defer k.mu.RUnlock()
	f, ok := k.flags[flag]
	switch {
	case !ok:
		return FlagState{Enabled: k.defaultOn}
	case f.err != nil:
		return FlagState{Enabled: false, Reason: f.err.Error()}
	}
	return f.state
}

// Err returns why the cache does not follow Redis now, or nil when it does:
// for health checks and dashboards.
func (k *RedisKillSwitch) Err() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return fmt.Errorf("redis kill switch %s: closed", k.key)
	}
	if k.staleSince.IsZero() {
		return nil
	}
	return fmt.Errorf("redis kill switch %s: out of sync since %s: %w",
		k.key, k.staleSince.Format(time.RFC3339), k.lastErr)
}

// setScript writes a flag and announces it in one step, so that messages
// come in the order of the writes.
var setScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`)

// flipMessage is what SetEnabled publishes.
type flipMessage struct {
	Flag  string    `json:"flag"`
	State FlagState `json:"state"`
}

// SetEnabled implements FlippableKillSwitch: it records the flag's new state
// in Redis with the actor (WithActor), reason and time, and publishes it to
// every instance. The local cache has it when SetEnabled returns.
func (k *RedisKillSwitch) SetEnabled(ctx context.Context, flag string, on bool, reason string) error {
	if flag == "" {
		return fmt.Errorf("%w: redis kill switch: empty flag name", ErrInvalidOption)
	}
	st := FlagState{Enabled: on, Reason: reason, By: ActorFrom(ctx), At: time.Now().UTC()}
	value, err := json.Marshal(st)
	if err != nil {
		return err
	}
	msg, err := json.Marshal(flipMessage{Flag: flag, State: st})
	if err != nil {
		return err
	}
	k.mu.RLock()
	closed, seq0 := k.closed, k.seq
	k.mu.RUnlock()
	if closed {
		return fmt.Errorf("redis kill switch %s: closed", k.key)
	}
	if err := setScript.Run(ctx, k.rdb, []string{k.key}, flag, value, k.channel, msg).Err(); err != nil {
		return fmt.Errorf("redis kill switch %s: set %q: %w", k.key, flag, err)
	}
	// Read your writes: put the flip in the cache now, unless a message
	// about this flag came meanwhile (it may be newer; messages are ordered).
	k.mu.Lock()
	if f, ok := k.flags[flag]; !ok || f.seq <= seq0 {
		k.seq++
		k.flags[flag] = cachedFlag{state: st, seq: k.seq}
	}
	k.mu.Unlock()
	return nil
}

// Close stops following Redis and waits for the background goroutines to
// end. Enabled fails afterwards. It does not close the Redis client. Close
// may be called more than once.
func (k *RedisKillSwitch) Close() error {
	k.once.Do(func() {
		k.mu.Lock()
		k.closed = true
		k.mu.Unlock()
		k.cancel()
		k.psMu.Lock()
		if k.ps != nil {
			_ = k.ps.Close()
			k.ps = nil
		}
		k.psMu.Unlock()
		k.wg.Wait()
	})
	return nil
}

// Backoff between attempts to reach Redis from the receive loop.
const (
	ksMinBackoff  = 50 * time.Millisecond
	ksMaxBackoff  = time.Second
	ksPongTimeout = 5 * time.Second // a PING unanswered this long drops the connection
	ksCallTimeout = 5 * time.Second // bounds HGETALL and PING from the background
)

// pubsub returns the current subscription, making one when there is none
// (fresh is then true). It returns nil once the switch is closed.
func (k *RedisKillSwitch) pubsub() (ps *redis.PubSub, fresh bool) {
	k.psMu.Lock()
	defer k.psMu.Unlock()
	if k.ctx.Err() != nil {
		return nil, false
	}
	if k.ps == nil {
		// Without a channel, Subscribe does not dial: nothing blocks here.
		k.ps = k.rdb.Subscribe(k.ctx)
		k.pingSent = time.Time{}
		fresh = true
	}
	return k.ps, fresh
}

// current reports whether ps is still the subscription in use.
func (k *RedisKillSwitch) current(ps *redis.PubSub) bool {
	k.psMu.Lock()
	defer k.psMu.Unlock()
	return k.ps == ps
}

// drop closes ps and forgets it, so that the next pubsub call makes a new
// one.
func (k *RedisKillSwitch) drop(ps *redis.PubSub) {
	k.psMu.Lock()
	defer k.psMu.Unlock()
	if k.ps == ps {
		k.ps = nil
		k.pingSent = time.Time{}
	}
	_ = ps.Close()
}

// receive is the loop that follows Redis: it applies flip messages in order
// and reloads the cache on (re)subscription and on each health-check PONG.
// Reloads run on this goroutine, between messages, so a message about a
// write that a reload missed is always applied after that reload.
func (k *RedisKillSwitch) receive() {
	defer k.wg.Done()
	backoff := ksMinBackoff
	for {
		ps, fresh := k.pubsub()
		if ps == nil {
			return
		}
		if fresh {
			// Dials and subscribes. Its error is not lost: the channel is
			// recorded, and Receive dials again and reports it.
			_ = ps.Subscribe(k.ctx, k.channel)
		}
		msg, err := ps.Receive(k.ctx)
		if err != nil {
			if k.ctx.Err() != nil {
				return
			}
			k.lost(err)
			if !k.current(ps) {
				continue // the health check dropped it; a new one is made now
			}
			if errors.Is(err, redis.ErrClosed) {
				k.drop(ps)
				continue
			}
			select {
			case <-k.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, ksMaxBackoff)
			continue
		}
		backoff = ksMinBackoff
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				k.markStale(nil) // messages may have been missed until now
				k.reload("subscribed")
			}
		case *redis.Pong:
			k.psMu.Lock()
			k.pingSent = time.Time{}
			k.psMu.Unlock()
			k.reload("periodic")
		case *redis.Message:
			k.apply(m.Payload)
		}
	}
}

// markStale records that the cache may have stopped following Redis.
func (k *RedisKillSwitch) markStale(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.staleSince.IsZero() {
		k.staleSince = time.Now()
	}
	if err != nil {
		k.lastErr = err
	}
}

// lost records that the subscription's connection failed.
func (k *RedisKillSwitch) lost(err error) {
	k.mu.Lock()
	was := k.staleSince.IsZero()
	if was {
		k.staleSince = time.Now()
	}
	k.lastErr = err
	k.mu.Unlock()
	if was && k.isLoaded() {
		k.logger.Warn("cronguard: redis kill switch lost Redis; the cache holds the last known flags",
			slog.String("key", k.key), slog.String("err", err.Error()))
	}
}

func (k *RedisKillSwitch) isLoaded() bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return k.loaded
}

// reload replaces the cache with the hash in Redis, except for the flags a
// SetEnabled of this instance wrote while HGETALL was under way.
func (k *RedisKillSwitch) reload(why string) {
	k.mu.RLock()
	seq0 := k.seq
	k.mu.RUnlock()
	ctx, cancel := context.WithTimeout(k.ctx, ksCallTimeout)
	vals, err := k.rdb.HGetAll(ctx, k.key).Result()
	cancel()
	if err != nil {
		if k.ctx.Err() != nil {
			return
		}
		k.mu.Lock()
		k.lastErr = fmt.Errorf("reload (%s): %w", why, err)
		k.mu.Unlock()
		k.logger.Warn("cronguard: redis kill switch could not reload its cache",
			slog.String("key", k.key), slog.String("why", why), slog.String("err", err.Error()))
		return
	}
	k.mu.Lock()
	for name, f := range k.flags {
		if _, ok := vals[name]; !ok && f.seq <= seq0 {
			delete(k.flags, name)
		}
	}
	for name, v := range vals {
		f := k.flags[name]
		if f.seq > seq0 {
			continue
		}
		f.state, f.err = parseFlagValue(k.key, name, v)
		k.flags[name] = f
	}
	recovered := k.loaded && !k.staleSince.IsZero()
	k.loaded, k.staleSince, k.lastErr = true, time.Time{}, nil
	k.mu.Unlock()
	if recovered {
		k.logger.Info("cronguard: redis kill switch follows Redis again",
			slog.String("key", k.key), slog.String("why", why))
	}
}

// apply puts a flip message in the cache.
func (k *RedisKillSwitch) apply(payload string) {
	var m flipMessage
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.Flag == "" {
		k.logger.Warn("cronguard: redis kill switch got an unreadable message; reloading",
			slog.String("channel", k.channel), slog.String("payload", payload))
		k.reload("unreadable message")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.seq++
	k.flags[m.Flag] = cachedFlag{state: m.State, seq: k.seq}
}

// healthCheck sends a PING through the subscription every resync interval
// (every second at most while the cache does not follow Redis); receive
// reloads the cache when the PONG comes. A PING left unanswered for
// ksPongTimeout drops the connection, and receive makes a new one.
func (k *RedisKillSwitch) healthCheck() {
	defer k.wg.Done()
	t := time.NewTimer(k.nextCheck())
	defer t.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-t.C:
		}
		k.check()
		t.Reset(k.nextCheck())
	}
}

func (k *RedisKillSwitch) nextCheck() time.Duration {
	k.mu.RLock()
	stale := !k.staleSince.IsZero()
	k.mu.RUnlock()
	if stale {
		return min(k.resync, time.Second)
	}
	return k.resync
}

func (k *RedisKillSwitch) check() {
	k.psMu.Lock()
	ps, sent := k.ps, k.pingSent
	if ps != nil && sent.IsZero() {
		k.pingSent = time.Now() // before the PING: its PONG may come at once
	}
	k.psMu.Unlock()
	if ps == nil {
		return
	}
	if !sent.IsZero() {
		if time.Since(sent) > ksPongTimeout {
			err := fmt.Errorf("no PONG on the subscription within %s", ksPongTimeout)
			k.markStale(err)
			k.logger.Warn("cronguard: redis kill switch drops a silent connection",
				slog.String("key", k.key), slog.String("err", err.Error()))
			k.drop(ps)
		}
		return
	}
	ctx, cancel := context.WithTimeout(k.ctx, ksCallTimeout)
	err := ps.Ping(ctx)
	cancel()
	if err != nil {
		k.psMu.Lock()
		if k.ps == ps {
			k.pingSent = time.Time{}
		}
		k.psMu.Unlock()
	}
}

// parseFlagValue reads a flag's value in the hash: JSON FlagState as
// SetEnabled writes it, or on/off, true/false, 1/0 as an operator may.
func parseFlagValue(key, flag, v string) (FlagState, error) {
	s := strings.TrimSpace(v)
	if strings.HasPrefix(s, "{") {
		var st struct {
			Enabled *bool `json:"enabled"`
			FlagState
		}
		err := json.Unmarshal([]byte(s), &st)
		if err == nil && st.Enabled == nil {
			err = errors.New(`no "enabled" field`)
		}
		if err != nil {
			return FlagState{}, fmt.Errorf("redis kill switch %s: flag %q: cannot read value %q: %w", key, flag, v, err)
		}
		st.FlagState.Enabled = *st.Enabled
		return st.FlagState, nil
	}
	switch strings.ToLower(s) {
	case "1", "true", "on":
		return FlagState{Enabled: true}, nil
	case "0", "false", "off":
		return FlagState{Enabled: false}, nil
	}
	return FlagState{}, fmt.Errorf("redis kill switch %s: flag %q: cannot read value %q: want JSON, on/off, true/false or 1/0", key, flag, v)
}

// useRedisKillSwitch makes the kill switch WithRedis asks for, on the first
// client and under the key prefix, unless WithKillSwitch gave one. The
// Scheduler closes it in Stop.
func (c *config) useRedisKillSwitch() {
	if c.killSwitch != nil {
		return
	}
	k := newRedisKillSwitch(c.redis[0])
	_ = RedisKillSwitchPrefix(c.prefix)(k)
	k.logger = c.logger
	k.start()
	c.killSwitch = k
	c.owned = append(c.owned, k)
}
