package cronguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// defaultResync bounds how stale a Redis kill switch's cache may get when
// a pub/sub message is lost on a subscription that is otherwise live, or
// when the hash is edited by hand: the cache is reloaded from Redis at
// least this often.
const defaultResync = 10 * time.Second

// RedisKillSwitch is the distributed kill switch: flags live in a Redis
// hash, every instance keeps them in a local cache, and flips reach every
// instance at once over pub/sub. Enabled never makes a round trip.
//
// # Layout
//
// The flags are the fields of one hash, <prefix>killswitch (field = flag
// name, value = JSON flagState {"enabled":false,"reason":"...","by":"...",
// "at":"..."}), and flips are announced on the pub/sub channel of the
// prefix and of the client's database, <prefix>killswitch:flips:db<N>
// (Redis pub/sub ignores SELECT, so services on different databases of one
// server must not share a channel). A Cluster client uses db0 (Cluster has
// database 0 only), as does a client whose type does not tell its database
// (give it its own WithKeyPrefix there). The table of every key is in
// ARCHITECTURE.md ("Where state lives").
//
// A flag that is not in the hash is on. The
// state is as durable as the Redis it lives in: it survives restarts of the
// instances and deploys, and restarts of Redis when Redis persists its data.
// An operator may edit the hash by hand (HSET cronguard:killswitch emails
// off): a value of on/off, true/false or 1/0 is understood too, and every
// instance picks such an edit up at its next re-sync, since no message
// announced it. A value that cannot be read ("disabled", {"enabled":"no"})
// makes Enabled fail for that flag, so the Scheduler's fail policy applies:
// the last known value holds, an EventFlag is raised for each decision, and
// JobInfo.EnabledErr shows the error.
//
// # Propagation: the hash is the only truth
//
// SetEnabled writes the hash field and publishes the flag's name in one Lua
// script. A message only says "re-read flag X": on each message every
// instance reads the field from the hash (HMGET) and caches what it reads,
// so a forged PUBLISH can at most cause re-reads, never a state change.
// Messages are read and acted on one at a time; re-reads of flags that wait
// are merged, at most 256 flags per HMGET, and a message over 64 KiB or
// without a flag name is not parsed: these, and flags beyond the 256, make
// a full reload, at most one every 250ms. The cache is also reloaded from the hash
// (HGETALL) whenever the subscription is made or remade and at least every
// resync interval (10s). All reads of the
// hash run one at a time, in order; a read never overwrites a flip that
// SetEnabled of this instance made while the read was under way.
//
// # Health, and what Enabled answers
//
// A PING goes through a confirmed subscription's connection every 500ms;
// one whose PONG has not come within 1s means the subscription is silent
// (a dead or black-holed connection): within 1.5s of going silent, plus
// scheduling delays (2s stated and tested), the switch notices it, drops
// the connection, subscribes again, and until a new subscription is
// confirmed it re-reads the whole hash at once and then every 500ms. A
// subscription being made (new, or its connection lost) is not PINGed: it
// has 5s to be confirmed, then another is tried, so a link slow to set up
// a connection still subscribes. Another is tried only once the dial of
// the one given up has returned (go-redis dials inside Receive): a
// handshake that hangs delays it up to the client's dial or read timeout,
// without bound with ReadTimeout -1, the hash re-read every 500ms
// meanwhile.
//
// While the subscription is not live, Enabled answers from that re-read cache with an error (the
// switch is degraded): the Scheduler acts on the answer and raises an
// EventFlag for it, so a flip whose message was lost is honoured within
// 2.5s at worst and the degradation shows. That holds while a new
// subscription's connection hangs as it is made: go-redis holds the
// subscription's lock for the whole dial (up to the client's dial or read
// timeout), so the PINGs and the close of a dropped subscription are sent
// apart from the health check, which never waits on it.
//
// Each read of the hash is bounded by the call budget (WithCallBudget; WithRedis
// passes WithCallBudget). SetEnabled keeps its caller's deadline, or is
// bounded by the budget when its context has none.
//
// When a read of the hash fails (Redis down, the call timed out, or the key
// holds another type: WRONGTYPE), Enabled returns an error for every flag
// and Err is non-nil until a full reload succeeds (retried every 500ms): the
// Scheduler's fail policy decides (the last answer it had for the flag
// holds) and each such decision is an EventFlag, so an outage or a broken
// key is never silent. SetEnabled returns the store's error then. Until the
// cache has loaded once, Enabled fails too (NewRedisKillSwitch does not wait
// for Redis). Connection losses and recoveries are logged
// (WithLogger). Everything read from Redis that goes into an
// error or a log line is cut to 200 bytes.
//
// Close stops the background goroutines; a Scheduler closes the switch that
// WithRedis made when it stops. The switch does not close the Redis client.
type RedisKillSwitch struct {
	rdb       redis.UniversalClient
	key       string
	channel   string
	resync    time.Duration
	budget    time.Duration // bounds each read of the hash, and SetEnabled without a deadline
	defaultOn bool
	logger    *slog.Logger

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu           sync.RWMutex
	flags        map[string]cachedFlag
	ticket       uint64    // orders the reads of the hash and the writes of SetEnabled
	loaded       bool      // a full reload has succeeded once
	readErr      error     // the last read of the hash failed; nil after a full reload
	readSince    time.Time // when reads began to fail
	subErr       error     // why the subscription is not live; nil while it is
	subSince     time.Time // when it stopped being live
	subGen       uint64    // counts subscription losses
	confirmedGen uint64    // subGen when the subscription was last confirmed
	confirmedAt  uint64    // ticket then: a reload started later clears subErr
	lastReload   time.Time // when the last full reload started
	closed       bool

	watchers flagWatchers

	wmu            sync.Mutex
	work           ksWork        // reads waiting for the reader
	garbage        bool          // a message named no flag: reload at the next check
	lastGarbageLog time.Time     // such messages are logged once a second at most
	wake           chan struct{} // tells the reader there is work

	pings    chan *redis.PubSub // to the pinger: the subscription to PING
	psMu     sync.Mutex
	ps       *redis.PubSub // nil until made, and after the health check dropped it
	live     bool          // ps is confirmed and has not lost its connection since
	notSince time.Time     // when ps was made or lost its connection (live false)
	pingSent time.Time     // zero when no PING is waiting for its PONG
	lastPing time.Time     // when the last PING was sent (or the subscription confirmed)
}

// cachedFlag is one flag in a RedisKillSwitch's cache.
type cachedFlag struct {
	state  flagState
	err    error  // the value in Redis could not be read
	ticket uint64 // RedisKillSwitch.ticket of the read or write that set it
}

// Causes of Enabled's error before anything failed.
var (
	errNotLoaded     = errors.New("not loaded from Redis yet")
	errNotSubscribed = errors.New("not subscribed yet")
)

// NewRedisKillSwitch returns a kill switch on rdb (a single, Sentinel or
// Cluster client) and starts following Redis in the background. It takes
// WithKeyPrefix, WithCallBudget and WithLogger (where it logs losing and
// regaining Redis); a nil client or option, or an option that does not
// concern the kill switch, is an error wrapping ErrInvalidOption that
// names it. It does not wait for Redis. Close it when
// done; it does not close rdb.
func NewRedisKillSwitch(rdb redis.UniversalClient, opts ...Option) (*RedisKillSwitch, error) {
	cfg, err := backendConfig(forKillSwitch, rdb, opts)
	if err != nil {
		return nil, err
	}
	k := &RedisKillSwitch{
		rdb:       rdb,
		key:       cfg.prefix + "killswitch",
		channel:   cfg.prefix + "killswitch:flips:db" + strconv.Itoa(clientDB(rdb)),
		resync:    cfg.resync,
		budget:    cfg.budget,
		defaultOn: !cfg.defaultOff,
		logger:    cfg.logger,
		flags:     map[string]cachedFlag{},
		subErr:    errNotSubscribed,
		subGen:    1,
	}
	k.start()
	return k, nil
}

// Enabled implements KillSwitch from the local cache, without a round trip.
// It fails before the cache has loaded once, while reads of the hash fail
// (Redis unreachable, WRONGTYPE), when the flag's value in Redis cannot be
// read, and after Close. While the subscription is not live it answers
// from the hash re-read every 500ms, with an error that says so (see the
// type's documentation). It never blocks, so a Scheduler asks it without
// the call budget (askBounded): no timer per run.
func (k *RedisKillSwitch) Enabled(_ context.Context, flag string) (bool, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if err := k.unusableLocked(); err != nil {
		return false, err
	}
	on, err := k.valueLocked(flag)
	if err != nil {
		return false, err
	}
	if k.subErr != nil {
		return on, &degradedError{on: on, err: fmt.Errorf(
			"redis kill switch %s: subscription not live since %s (%w); answering from the hash, re-read every %s",
			k.key, k.subSince.Format(time.RFC3339), k.subErr, ksPollEvery)}
	}
	return on, nil
}

// unusableLocked says why the cache cannot answer at all, or nil.
func (k *RedisKillSwitch) unusableLocked() error {
	switch {
	case k.closed:
		return fmt.Errorf("redis kill switch %s: closed", k.key)
	case !k.loaded:
		cause := errNotLoaded
		if k.readErr != nil {
			cause = k.readErr
		}
		return fmt.Errorf("redis kill switch %s: %w", k.key, cause)
	case k.readErr != nil:
		return fmt.Errorf("redis kill switch %s: cannot read the hash since %s: %w",
			k.key, k.readSince.Format(time.RFC3339), k.readErr)
	}
	return nil
}

// valueLocked returns the flag's value in the cache.
func (k *RedisKillSwitch) valueLocked(flag string) (bool, error) {
	f, ok := k.flags[flag]
	switch {
	case !ok:
		return k.defaultOn, nil
	case f.err != nil:
		return false, f.err
	}
	return f.state.Enabled, nil
}

// Flipped implements flagRecorder: who flipped the flag, why and when, as
// the cache knows it. It reads no store.
func (k *RedisKillSwitch) Flipped(flag string) (by, reason string, at time.Time) {
	st := k.state(flag)
	return st.By, st.Reason, st.At
}

// state returns the flag's state as the cache knows it, with who flipped
// it, why and when. A flag not in Redis has the default state (on); one
// whose value cannot be read is off, with the reason.
func (k *RedisKillSwitch) state(flag string) flagState {
	k.mu.RLock()
	defer k.mu.RUnlock()
	f, ok := k.flags[flag]
	switch {
	case !ok:
		return flagState{Enabled: k.defaultOn}
	case f.err != nil:
		return flagState{Enabled: false, Reason: f.err.Error()}
	}
	return f.state
}

// Err returns why the cache does not follow Redis now (not loaded yet,
// reads failing, subscription not live), or nil when it does: for health
// checks and dashboards. A single flag whose value cannot be read does not
// make Err fail; Enabled of that flag does.
func (k *RedisKillSwitch) Err() error {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if err := k.unusableLocked(); err != nil {
		return err
	}
	if k.subErr != nil {
		return fmt.Errorf("redis kill switch %s: subscription not live since %s: %w",
			k.key, k.subSince.Format(time.RFC3339), k.subErr)
	}
	return nil
}

// setScript writes a flag and announces it in one step.
var setScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
`)

// flipMessage is what SetEnabled publishes: only the name of the flag to
// re-read. Any other field of a message is ignored.
type flipMessage struct {
	Flag string `json:"flag"`
}

// SetEnabled implements FlippableKillSwitch: it records the flag's new state
// in Redis with the actor (WithActor), reason and time, and tells every
// instance to re-read it. The local cache has it when SetEnabled returns. A
// flag name that is not valid UTF-8 is refused with ErrInvalidFlag (JSON
// would turn it into another name).
func (k *RedisKillSwitch) SetEnabled(ctx context.Context, flag string, on bool, reason string) error {
	switch {
	case flag == "":
		return fmt.Errorf("%w: redis kill switch: empty flag name", ErrInvalidOption)
	case !utf8.ValidString(flag):
		return fmt.Errorf("%w: redis kill switch %s: flag %q is not valid UTF-8", ErrInvalidFlag, k.key, flag)
	}
	st := flagState{Enabled: on, Reason: reason, By: ActorFrom(ctx), At: time.Now().UTC()}
	value, err := json.Marshal(st)
	if err != nil {
		return err
	}
	msg, err := json.Marshal(flipMessage{Flag: flag})
	if err != nil {
		return err
	}
	k.mu.RLock()
	closed := k.closed
	k.mu.RUnlock()
	if closed {
		return fmt.Errorf("redis kill switch %s: closed", k.key)
	}
	ctx, cancel := bounded(ctx, k.budget)
	defer cancel()
	if err := setScript.Run(ctx, k.rdb, []string{k.key}, flag, value, k.channel, msg).Err(); err != nil {
		return fmt.Errorf("redis kill switch %s: set %q: %w", k.key, flag, err)
	}
	// Read your writes: the flip is in Redis now, so a read that started
	// before it (a smaller ticket) must not overwrite it; one that starts
	// after sees it or a newer write.
	k.mu.Lock()
	k.ticket++
	k.flags[flag] = cachedFlag{state: st, ticket: k.ticket}
	k.mu.Unlock()
	k.watchers.notify(flag)
	return nil
}

// watch implements flagWatcher: fn is called after each read or write that
// changes flag's value in the cache.
func (k *RedisKillSwitch) watch(flag string, fn func()) (stop func()) {
	return k.watchers.add(flag, fn)
}

// Close stops following Redis and waits for the background goroutines to
// end. Enabled fails afterwards. It does not close the Redis client. Close
// may be called more than once.
//
// Close waits for a subscription connection being made: go-redis holds the
// subscription's lock for the whole dial and does not end it when the
// switch's context is canceled, so Close takes up to the client's dial or
// read timeout (5s and 3s by default; TestRedisKillSwitchCloseWhileDialHangs), and
// with ReadTimeout -1 (no timeout) until the handshake is answered or the
// connection fails. Scheduler.Stop closes the switch WithRedis made after
// its runs, so it waits for this too, beyond its context and grace.
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

// parseFlagValue reads a flag's value in the hash: JSON flagState as
// SetEnabled writes it, or on/off, true/false, 1/0 as an operator may. Its
// errors quote the flag and the value cut to 200 bytes.
func parseFlagValue(key, flag, v string) (flagState, error) {
	s := strings.TrimSpace(v)
	if strings.HasPrefix(s, "{") {
		var st struct {
			Enabled *bool `json:"enabled"`
			flagState
		}
		err := json.Unmarshal([]byte(s), &st)
		if err == nil && st.Enabled == nil {
			err = errors.New(`no "enabled" field`)
		}
		if err != nil {
			return flagState{}, fmt.Errorf("redis kill switch %s: flag %q: cannot read value %q: %s",
				key, clip(flag), clip(v), clip(err.Error()))
		}
		st.flagState.Enabled = *st.Enabled
		return st.flagState, nil
	}
	switch strings.ToLower(s) {
	case "1", "true", "on":
		return flagState{Enabled: true}, nil
	case "0", "false", "off":
		return flagState{Enabled: false}, nil
	}
	return flagState{}, fmt.Errorf("redis kill switch %s: flag %q: cannot read value %q: want JSON, on/off, true/false or 1/0",
		key, clip(flag), clip(v))
}
