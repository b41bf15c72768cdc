package cronguard

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// RedisLocker is the Locker for several instances: tick claims and run locks
// live in Redis, on github.com/redis/go-redis/v9 and
// github.com/go-redsync/redsync/v4. Create it with NewRedisLocker, or let
// WithRedis do it. It holds no goroutine and no connection of its own (the
// clients are the caller's), so it needs no closing. It is safe for
// concurrent use.
//
// With several independent servers (RedlockWith) the run lock is a redsync
// Mutex: Redlock, with redsync's quorum and validity rules. With one server
// (a single Redis, Sentinel or Cluster) it runs redsync's extension and
// release scripts through redsync's pool for that server, from the calling
// goroutine. Either way the lock is taken by one script of cronguard's own,
// which also issues the fencing token (see below).
//
// # Keys
//
// Every key starts with the prefix (default "cronguard:", see
// RedisLockPrefix) and names its purpose and the job, so redis-cli shows
// what is going on:
//
//	cronguard:tick:{billing}:2026-11-27T12:00:00Z  = "web-1"   the tick claim: the instance that runs it
//	cronguard:lock:{billing}                       = "web-1/Q3M…"  the run lock: holder and random part
//	cronguard:fence:{billing}                      = 1795780800000123  the last fencing token issued
//
// The braces are a Redis Cluster hash tag: a job's keys share one slot, so
// the script that takes the lock and issues the fencing token may touch two
// of them. (A job name that itself holds "{" or "}" still works on a single
// Redis; on Cluster its keys may land in different slots.)
//
// # Round trips
//
// A scheduled run that wins its tick costs three round trips per Redis
// server: the claim (SET NX GET), the lock (one script that sets the lock
// and issues the token) and the release (redsync's compare-and-delete
// script); plus one per lease extension (every LockTTL/3). An instance
// that loses the tick costs one: the claim, whose reply names the winner. A
// run that finds the lock taken costs one as well. The first use of each
// script on a Redis that has not seen it yet (a fresh or restarted server)
// costs one more round trip (EVALSHA, NOSCRIPT, then EVAL); on Redis older
// than 7.0, which cannot combine SET NX with GET, the claim is a script too.
// With RedlockWith the counts are per server, and at most these: a claim
// asks the servers one after the other and stops once decided (see Claim),
// so a loser usually talks to the first server only; lock, extension and
// release go to every server in parallel.
//
// # Budget
//
// Every call is bounded by the call budget (default 2s, see RedisLockBudget;
// WithRedis uses the scheduler's WithCallBudget), or by the caller's context
// when it ends sooner. go-redis applies context deadlines to connection set
// up and pool waits; for socket reads and writes to honour them too, set
// ContextTimeoutEnabled in the client's options, or keep ReadTimeout and
// WriteTimeout below the budget. A server that refuses connections costs
// go-redis's retries (0.1 to 2 seconds with the default MaxRetries and
// DialerRetries) before it fails: with Redlock, where a server may be down
// for long, lower those in the clients' options.
//
// # What it promises, and what it cannot
//
// One run per tick: the claim key is set only if absent and never deleted
// early; it lives for the tick's interval, at least the lock TTL. As long as
// Redis keeps its data, a late or clock-skewed instance finds it taken.
//
// No two runs at once: the run lock is a lease. It holds while the holder
// keeps extending it; if the holder stops (crash, kill -9) the lock frees
// itself after the TTL. If the holder pauses longer than the TTL (a long GC
// pause, a frozen VM, a network partition), the lock expires and another run
// may start while the first still runs: the Scheduler cancels the first
// run's context as soon as an extension fails, at most TTL/3 plus one round
// trip after the loss, but cancellation is cooperative and code already
// past its last check of ctx goes on. Redis replication is asynchronous: a
// failover to a replica that had not yet received the lock, or a restart
// without persistence, forgets the lock and the claim, and a second run can
// start. Redlock (several independent masters, see RedlockWith) survives a
// minority of servers failing, but its safety rests on bounded clock drift
// and bounded pauses, not on consensus (see Martin Kleppmann, "How to do
// distributed locking", 2016). Where a second concurrent run would corrupt
// data, not just waste work, the data store itself must refuse stale
// writers: that is what the fencing token is for.
//
// # Fencing token
//
// Lease.Token (LeaseFrom(ctx).Token() in job code) is issued in the same
// round trip as the lock, by the same server-side script: it is the larger
// of the job's counter plus one and the Redis server's clock in
// microseconds. On one Redis it therefore grows with every acquisition of
// the job's lock, and keeps growing after Redis lost its data (a restart
// without persistence, a failover), unless the server's clock went back. With
// Redlock the token is the largest one issued by the servers that granted
// the lock; it grows only as long as those servers' clocks agree to within
// the time between two acquisitions. A token helps only if the store that
// the job writes to checks it: record the highest token seen with each
// write (a column, a conditional UPDATE ... WHERE token <= $1) and reject
// writes carrying a lower one. cronguard cannot do that check for you.
type RedisLocker struct {
	clients []redis.UniversalClient
	names   []string // of the servers, for error messages
	pools   []*fencePool
	rs      *redsync.Redsync
	quorum  int
	prefix  string
	budget  time.Duration
	owner   string
	// noSetGet[i] is set once server i refused SET NX GET (Redis < 7.0):
	// its claims then go through claimScript.
	noSetGet []atomic.Bool
}

// RedisLockerOption configures NewRedisLocker.
type RedisLockerOption func(*redisLockerConfig) error

type redisLockerConfig struct {
	more   []redis.UniversalClient
	prefix string
	budget time.Duration
	owner  string
}

// RedlockWith adds independent Redis masters to the one given to
// NewRedisLocker: with N servers in all, a claim or a lock needs a majority
// (N/2+1) of them, so the locker works while a minority is down. Use an odd
// number of servers, three or five, each a separate master (not replicas of
// one another). Round-trip counts are per server.
func RedlockWith(more ...redis.UniversalClient) RedisLockerOption {
	return func(c *redisLockerConfig) error {
		for i, cl := range more {
			if isNil(cl) {
				return fmt.Errorf("%w: RedlockWith: client %d is nil", ErrInvalidOption, i)
			}
		}
		c.more = append(c.more, more...)
		return nil
	}
}

// RedisLockPrefix sets the prefix of every key the locker writes (default
// "cronguard:"). Services that share a Redis but not their jobs need
// different prefixes. WithRedis uses the scheduler's WithKeyPrefix.
func RedisLockPrefix(p string) RedisLockerOption {
	return func(c *redisLockerConfig) error {
		c.prefix = p
		return nil
	}
}

// RedisLockBudget bounds every call the locker makes (default 2s), when the
// caller's context does not end sooner. WithRedis uses the scheduler's
// WithCallBudget.
func RedisLockBudget(d time.Duration) RedisLockerOption {
	return func(c *redisLockerConfig) error {
		if d <= 0 {
			return fmt.Errorf("%w: RedisLockBudget %s: must be positive", ErrInvalidOption, d)
		}
		c.budget = d
		return nil
	}
}

// RedisLockOwner names this process in the value of the run locks it takes
// ("owner/random"), so that a run that finds a lock taken can say who holds
// it. The default is hostname-pid; WithRedis uses the scheduler's
// WithInstanceID.
func RedisLockOwner(name string) RedisLockerOption {
	return func(c *redisLockerConfig) error {
		c.owner = name
		return nil
	}
}

// NewRedisLocker returns a Locker on Redis. client may be a single Redis, a
// Sentinel (failover) client or a Cluster client; RedlockWith adds more
// independent masters for a Redlock quorum. It does not talk to Redis: a
// Redis that is down shows up as errors from Claim and Acquire, which the
// Scheduler reports as skipped ticks (SkipBackend).
//
// A nil client is an error wrapping ErrInvalidOption.
func NewRedisLocker(client redis.UniversalClient, opts ...RedisLockerOption) (*RedisLocker, error) {
	if isNil(client) {
		return nil, fmt.Errorf("%w: NewRedisLocker: nil client", ErrInvalidOption)
	}
	cfg := redisLockerConfig{prefix: "cronguard:", budget: 2 * time.Second}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: NewRedisLocker: nil option", ErrInvalidOption)
		}
		if err := opt(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.owner == "" {
		host, _ := os.Hostname()
		cfg.owner = host + "-" + strconv.Itoa(os.Getpid())
	}
	return newRedisLocker(append([]redis.UniversalClient{client}, cfg.more...), cfg), nil
}

func newRedisLocker(clients []redis.UniversalClient, cfg redisLockerConfig) *RedisLocker {
	l := &RedisLocker{
		clients:  clients,
		names:    make([]string, len(clients)),
		quorum:   len(clients)/2 + 1,
		prefix:   cfg.prefix,
		budget:   cfg.budget,
		owner:    cfg.owner,
		noSetGet: make([]atomic.Bool, len(clients)),
	}
	pools := make([]redsyncredis.Pool, len(clients))
	for i, c := range clients {
		l.names[i] = serverName(i, c)
		p := &fencePool{node: i, client: c, Pool: goredis.NewPool(c)}
		l.pools, pools[i] = append(l.pools, p), p
	}
	l.rs = redsync.New(pools...)
	return l
}

// useRedisLocker makes the RedisLocker WithRedis asked for, unless
// WithLocker chose another Locker.
func (c *config) useRedisLocker() {
	if c.locker != nil {
		return
	}
	c.locker = newRedisLocker(slices.Clone(c.redis), redisLockerConfig{
		prefix: c.prefix, budget: c.budget, owner: c.instance,
	})
}

// serverName names client i in error messages: its address when it has one.
func serverName(i int, c redis.UniversalClient) string {
	switch c := c.(type) {
	case *redis.Client:
		return "redis " + c.Options().Addr
	case *redis.ClusterClient:
		return "redis cluster " + strings.Join(c.Options().Addrs, ",")
	}
	return fmt.Sprintf("redis #%d (%T)", i, c)
}

func (l *RedisLocker) tickKey(job string, tick time.Time) string {
	return l.prefix + "tick:{" + job + "}:" + fmtTick(tick)
}

func (l *RedisLocker) lockKey(job string) string  { return l.prefix + "lock:{" + job + "}" }
func (l *RedisLocker) fenceKey(job string) string { return l.prefix + "fence:{" + job + "}" }

func noCancel() {}

// bound applies the call budget to ctx unless ctx ends sooner.
func (l *RedisLocker) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= l.budget {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, l.budget)
}

// claimScript is the claim on Redis < 7.0, where SET cannot take NX and GET
// together: nil when this call set the key, else the instance that did.
var claimScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	return false
end
return redis.call('GET', KEYS[1])
`)

type claimResult struct {
	won    bool
	holder string // when !won and err == nil
	err    error
}

// Claim implements Locker: SET <prefix>tick:{job}:<tick> instance NX PX ttl
// GET, one round trip per server, whose reply names the winner when this
// instance lost.
//
// With several servers (RedlockWith) the claim is won on a majority of
// them. The servers are asked one after the other, always in the order
// given, and a claimant stops at the first server that names another
// claimant: so claimants arriving at once cannot split the servers between
// them (the first server that answers them both decides), a loser costs one
// round trip, and a winner one per server up to the majority. A server that
// does not answer within its share of the budget (budget/N) is skipped. A
// claim never returns won without a majority, so no tick runs twice; a
// tick can be missed if the servers are partitioned so that two claimants
// see different first servers, or a winner dies halfway.
func (l *RedisLocker) Claim(ctx context.Context, job string, tick time.Time, ttl time.Duration, instance string) (bool, string, error) {
	ctx, cancel := l.bound(ctx)
	defer cancel()
	key := l.tickKey(job, tick)
	ttl = max(ttl, time.Millisecond)
	if len(l.clients) == 1 {
		r := l.claimOn(ctx, 0, key, instance, ttl)
		switch {
		case r.err != nil:
			return false, "", fmt.Errorf("%s: key %s: %w", l.names[0], key, r.err)
		case r.won:
			return true, instance, nil
		}
		return false, r.holder, nil
	}
	share := l.budget / time.Duration(len(l.clients))
	won := 0
	var errs []error
	for i := range l.clients {
		sctx, cancel := within(ctx, share)
		r := l.claimOn(sctx, i, key, instance, ttl)
		cancel()
		switch {
		case r.err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", l.names[i], r.err))
		case r.won:
			if won++; won >= l.quorum {
				return true, instance, nil
			}
		default:
			return false, r.holder, nil
		}
	}
	return false, "", fmt.Errorf("claim %s: no majority: %d of %d servers claimed, %d needed: %w",
		key, won, len(l.clients), l.quorum, errors.Join(errs...))
}

func (l *RedisLocker) claimOn(ctx context.Context, i int, key, instance string, ttl time.Duration) claimResult {
	c := l.clients[i]
	if !l.noSetGet[i].Load() {
		old, err := c.SetArgs(ctx, key, instance, redis.SetArgs{Mode: "NX", TTL: ttl, Get: true}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			return claimResult{won: true}
		case err == nil:
			return claimResult{holder: old}
		case !isSyntaxError(err):
			return claimResult{err: err}
		}
		l.noSetGet[i].Store(true) // Redis < 7.0
	}
	old, err := claimScript.Run(ctx, c, []string{key}, instance, ttl.Milliseconds()).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return claimResult{won: true}
	case err != nil:
		return claimResult{err: err}
	}
	return claimResult{holder: old}
}

func isSyntaxError(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.Contains(strings.ToLower(err.Error()), "syntax error")
}

// acquireScript takes the run lock and issues the fencing token in one
// round trip. It replaces the SET NX that redsync sends (see fencePool).
// On success it returns the token: the job's counter plus one, or the
// server's clock in microseconds when that is larger, so tokens keep growing
// after Redis lost the counter. When the lock is taken it returns the
// holder's value and the lock's remaining time in milliseconds.
var acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
	local token = redis.call('INCR', KEYS[2])
	if token < now then
		token = now
		redis.call('SET', KEYS[2], string.format('%d', now))
	end
	return token
end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
`)

// Acquire implements Locker. It takes <prefix>lock:{job} in one try: a
// held lock is an error wrapping ErrLocked at once, naming the holder and
// how long it still holds. Redis errors, and a quorum that could not be
// reached because servers failed, are returned as they are, never wrapping
// ErrLocked.
//
// With several servers the lock is a redsync Mutex (Redlock). With one,
// the same three scripts go through redsync's pool for that server
// directly, from the calling goroutine: redsync asks every server from a
// goroutine of its own, which cost a third to a half of a round trip per
// call on a two-core machine (BenchmarkRedisGuardedRunVsPing) and buys
// nothing when there is one server to ask.
func (l *RedisLocker) Acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error) {
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: job %q: lock TTL %s: must be at least 1ms", ErrInvalidOption, job, ttl)
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	key := l.lockKey(job)
	a := &lockAttempt{fence: l.fenceKey(job), nodes: make([]nodeAttempt, len(l.clients))}
	if len(l.clients) > 1 {
		a.ctx = detached(ctx) // the lock is set on every server that answers in time
		m := l.mutex(key, ttl, true, redsync.WithGenValueFunc(l.genValue))
		if err := m.TryLockContext(context.WithValue(ctx, attemptKey{}, a)); err != nil {
			return nil, l.acquireError(job, key, a, err)
		}
		m = l.mutex(key, ttl, false, redsync.WithValue(m.Value())) // for Extend
		return &redisLease{l: l, job: job, key: key, token: a.token(), value: m.Value(), ttl: ttl, m: m}, nil
	}
	value, _ := l.genValue()
	start := time.Now()
	actx, cancel := within(ctx, ttl/3) // as redsync: leave most of the TTL valid
	defer cancel()
	c := &fenceConn{ctx: actx, p: l.pools[0], a: a}
	ok, err := c.SetNX(key, value, ttl)
	if err != nil || !ok {
		return nil, l.acquireError(job, key, a, err)
	}
	lease := &redisLease{l: l, job: job, key: key, token: a.token(), value: value, ttl: ttl}
	if elapsed := time.Since(start); elapsed >= ttl-ttl/100 { // redsync's drift factor
		_ = lease.Release(ctx)
		return nil, fmt.Errorf("lock %s: granted after %s, too late to be valid for its TTL %s", key, elapsed, ttl)
	}
	return lease, nil
}

// detached returns a context with ctx's values and deadline but not its
// cancellation: calls that redsync leaves running once a majority answered
// go on until they end or the deadline passes, instead of being cut off
// when the call that started them returns.
func detached(ctx context.Context) context.Context {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithoutCancel(ctx)
	}
	d, stop := context.WithDeadline(context.WithoutCancel(ctx), dl)
	time.AfterFunc(time.Until(dl), stop)
	return d
}

// within bounds ctx by d unless it ends sooner.
func within(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, d)
}

// mutex returns a redsync mutex on key: one try, since a loser must skip,
// not wait; and each server gets at most a third of the TTL to answer.
//
// With fast, redsync answers as soon as a majority has (WithFailFast): that
// suits taking and releasing the lock, which a server that is down must not
// delay (go-redis retries a server that refuses connections for 0.1 to 2
// seconds with its default options). The calls still on their way to the
// other servers go on in redsync's goroutines, within the budget (see
// detached), so that the lock is set and removed on every server that
// answers. Extensions, done off the run's path by the watchdog, wait for
// every server.
func (l *RedisLocker) mutex(key string, ttl time.Duration, fast bool, opt redsync.Option) *redsync.Mutex {
	return l.rs.NewMutex(key, redsync.WithExpiry(ttl), redsync.WithTries(1),
		redsync.WithTimeoutFactor(1.0/3), redsync.WithFailFast(fast), opt)
}

// genValue makes a lock value: the owner, for messages, and 128 random bits.
func (l *RedisLocker) genValue() (string, error) {
	return l.owner + "/" + rand.Text(), nil
}

// acquireError explains a failed TryLock from what each server answered.
func (l *RedisLocker) acquireError(job, key string, a *lockAttempt, err error) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	granted, taken := 0, 0
	var holder string
	var left time.Duration
	var errs []error
	for i, n := range a.nodes {
		switch n.state {
		case nodeGranted:
			granted++
		case nodeTaken:
			taken++
			if holder == "" {
				holder, left = n.holder, n.left
			}
		case nodeFailed:
			errs = append(errs, fmt.Errorf("%s: %w", l.names[i], n.err))
		}
	}
	if taken >= l.quorum || taken > 0 && len(errs) == 0 {
		who := "another run"
		if i := strings.LastIndexByte(holder, '/'); i >= 0 {
			who = strconv.Quote(holder[:i])
		}
		more := ""
		if left > 0 {
			more = " for " + left.String() + " more"
		}
		return fmt.Errorf("%w: job %q: %s holds %s%s", ErrLocked, job, who, key, more)
	}
	if len(errs) == 0 { // every server granted it, too slowly to leave any validity
		return fmt.Errorf("lock %s: granted too late to be valid: %w", key, err)
	}
	if len(l.clients) == 1 {
		return fmt.Errorf("lock %s: %w", key, errs[0])
	}
	return fmt.Errorf("lock %s: no majority: %d of %d servers granted it, %d needed: %w",
		key, granted, len(l.clients), l.quorum, errors.Join(errs...))
}

type attemptKey struct{}

// lockAttempt records what each server answered to one Acquire.
type lockAttempt struct {
	fence string
	// ctx, when set, is the context of the lock scripts instead of the one
	// redsync gives, which it cancels once a majority answered.
	ctx   context.Context
	mu    sync.Mutex
	nodes []nodeAttempt
}

type nodeState int

const (
	nodeUnknown nodeState = iota
	nodeGranted
	nodeTaken
	nodeFailed
)

type nodeAttempt struct {
	state  nodeState
	token  int64
	holder string        // value of the lock, when taken
	left   time.Duration // its remaining TTL, when taken
	err    error
}

func (a *lockAttempt) set(node int, n nodeAttempt) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nodes[node] = n
}

func (a *lockAttempt) state(node int) nodeState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.nodes[node].state
}

// token is the largest token the granting servers issued.
func (a *lockAttempt) token() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	var t int64
	for _, n := range a.nodes {
		if n.state == nodeGranted {
			t = max(t, n.token)
		}
	}
	return t
}

// fencePool is redsync's go-redis pool for one server, adapted so that the
// lock and its fencing token come in one round trip: within an Acquire (its
// context carries a lockAttempt), the SET NX that redsync sends to take the
// lock is acquireScript instead, and the release that redsync sends after a
// failed try is skipped on the servers where the lock was found taken.
// Everything else (quorum, validity, extension, release) is redsync's.
type fencePool struct {
	redsyncredis.Pool
	node   int
	client redis.UniversalClient
}

// Get implements redsyncredis.Pool.
func (p *fencePool) Get(ctx context.Context) (redsyncredis.Conn, error) {
	c, err := p.Pool.Get(ctx)
	if err != nil || ctx == nil {
		return c, err
	}
	a, _ := ctx.Value(attemptKey{}).(*lockAttempt)
	if a == nil {
		return c, nil
	}
	return &fenceConn{Conn: c, ctx: ctx, p: p, a: a}, nil
}

type fenceConn struct {
	redsyncredis.Conn // nil when used outside redsync (one server)
	ctx               context.Context
	p                 *fencePool
	a                 *lockAttempt
}

// SetNX takes the lock with acquireScript and records the token, or the
// holder when the lock is taken.
func (c *fenceConn) SetNX(name, value string, expiry time.Duration) (bool, error) {
	ctx := c.ctx
	if c.a.ctx != nil {
		ctx = c.a.ctx
	}
	res, err := acquireScript.Run(ctx, c.p.client, []string{name, c.a.fence}, value, expiry.Milliseconds()).Result()
	if err != nil {
		c.a.set(c.p.node, nodeAttempt{state: nodeFailed, err: err})
		return false, err
	}
	switch v := res.(type) {
	case int64:
		c.a.set(c.p.node, nodeAttempt{state: nodeGranted, token: v})
		return true, nil
	case []any:
		n := nodeAttempt{state: nodeTaken}
		if len(v) == 2 {
			n.holder, _ = v[0].(string)
			if ms, ok := v[1].(int64); ok && ms > 0 {
				n.left = time.Duration(ms) * time.Millisecond
			}
		}
		c.a.set(c.p.node, n)
		return false, nil
	}
	err = fmt.Errorf("unexpected reply %T %v from the lock script", res, res)
	c.a.set(c.p.node, nodeAttempt{state: nodeFailed, err: err})
	return false, err
}

// Eval runs redsync's scripts; within an Acquire that is only the release
// after a failed try, needless where the lock was found taken (our value was
// never set there).
func (c *fenceConn) Eval(script *redsyncredis.Script, keysAndArgs ...any) (any, error) {
	if c.a.state(c.p.node) == nodeTaken {
		return int64(0), nil // what the release script answers for a value not ours
	}
	return c.Conn.Eval(script, keysAndArgs...)
}

// touchScript and deleteScript are redsync's extension and release scripts
// (redsync v4 scripts.go, same text, so Redis caches them once), used
// directly on a single server. touch answers 1 when it extended the lock,
// 0 when the lock is gone or another's; delete answers 1 when it released
// it, 0 when it is another's, -1 when it is gone.
var (
	touchScript = newRedsyncScript(`
	if redis.call("GET", KEYS[1]) == ARGV[1] then
		return redis.call("PEXPIRE", KEYS[1], ARGV[2])
	else
		return 0
	end
`)
	deleteScript = newRedsyncScript(`
	local val = redis.call("GET", KEYS[1])
	if val == ARGV[1] then
		return redis.call("DEL", KEYS[1])
	elseif val == false then
		return -1
	else
		return 0
	end
`)
)

func newRedsyncScript(src string) *redsyncredis.Script {
	sum := sha1.Sum([]byte(src))
	return redsyncredis.NewScript(1, src, hex.EncodeToString(sum[:]))
}

// redisLease is a run lock held in Redis. Its redsync mutex (Redlock) is
// used under mu only: a redsync Mutex must not be shared between goroutines.
type redisLease struct {
	l     *RedisLocker
	job   string
	key   string
	token int64
	value string

	mu       sync.Mutex
	ttl      time.Duration
	m        *redsync.Mutex // with several servers; nil with one
	lost     error          // set once an extension or a release found the lock gone
	released bool
}

// Token implements Lease.
func (r *redisLease) Token() int64 { return r.token }

// Extend implements Lease with redsync's compare-and-PEXPIRE script. The
// lease is lost (ErrLockLost) when the key is gone or holds another value,
// and also when Redis cannot be reached: the lock can then no longer be
// shown to be held. A lost lease is never extended or released again.
func (r *redisLease) Extend(ctx context.Context, ttl time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost != nil {
		return r.lost
	}
	if r.released {
		return fmt.Errorf("%w: job %q: lease %d was released", ErrLockLost, r.job, r.token)
	}
	ctx, cancel := r.l.bound(ctx)
	defer cancel()
	if ttl < time.Millisecond {
		ttl = r.ttl
	}
	var ok bool
	var err error
	if r.m == nil {
		var st any
		if st, err = r.l.eval(ctx, 0, touchScript, r.key, r.value, ttl.Milliseconds()); err != nil {
			err = &redsync.RedisError{Node: 0, Err: err}
		}
		ok = err == nil && st == int64(1)
	} else {
		if ttl != r.ttl {
			r.m = r.l.mutex(r.key, ttl, false, redsync.WithValue(r.value))
		}
		ok, err = r.m.ExtendContext(ctx)
	}
	if ok && err == nil {
		r.ttl = ttl
		return nil
	}
	r.lost = fmt.Errorf("%w: job %q: lease %d on %s: extend: %w", ErrLockLost, r.job, r.token, r.key, r.l.why(err))
	return r.lost
}

// Release implements Lease with redsync's compare-and-delete script: only
// a lock still holding this lease's value is deleted. Releasing a lost
// lease does nothing and returns the loss; releasing twice does nothing.
func (r *redisLease) Release(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost != nil {
		return r.lost
	}
	if r.released {
		return nil
	}
	ctx, cancel := r.l.bound(ctx)
	defer cancel()
	var ok bool
	var err error
	if r.m == nil {
		var st any
		st, err = r.l.eval(ctx, 0, deleteScript, r.key, r.value)
		switch {
		case err != nil:
			err = &redsync.RedisError{Node: 0, Err: err}
		case st == int64(-1):
			err = redsync.ErrLockAlreadyExpired
		}
		ok = err == nil && st == int64(1)
	} else {
		// Answer once a majority released it; let the calls still on
		// their way to the other servers finish (within the budget)
		// rather than cancel them, which would leave the lock there
		// until its TTL.
		ok, err = r.l.mutex(r.key, r.ttl, true, redsync.WithValue(r.value)).UnlockContext(detached(ctx))
	}
	if ok {
		r.released = true
		return nil
	}
	if hasRedisError(err) {
		// Not released: a server could not be reached. The lock frees
		// itself after its TTL.
		return fmt.Errorf("lock %s: release: %w", r.key, err)
	}
	r.lost = fmt.Errorf("%w: job %q: lease %d on %s: release: %w", ErrLockLost, r.job, r.token, r.key, r.l.why(err))
	return r.lost
}

// eval runs a redsync script on server i, through redsync's pool.
func (l *RedisLocker) eval(ctx context.Context, i int, script *redsyncredis.Script, keysAndArgs ...any) (any, error) {
	conn, err := l.pools[i].Pool.Get(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.Eval(script, keysAndArgs...)
}

// why words a failed extension or release: the lock gone or taken, or the
// errors of the servers that could not answer.
func (l *RedisLocker) why(err error) error {
	switch {
	case hasRedisError(err):
		return err
	case errors.Is(err, redsync.ErrLockAlreadyExpired):
		return errors.New("the lock had expired")
	case errors.Is(err, redsync.ErrExtendFailed):
		return errors.New("extended too late to be valid")
	}
	return errors.New("the lock expired, was deleted or is held by another run")
}

// hasRedisError reports whether a redsync error holds a server's error, as
// opposed to only answers (taken, expired).
func hasRedisError(err error) bool {
	var re *redsync.RedisError
	return errors.As(err, &re)
}
