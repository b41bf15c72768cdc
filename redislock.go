package cronguard

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// redisLocker is the Locker on Redis that NewRedisLocker returns (its
// documentation is there).
type redisLocker struct {
	redisStore
	impl redisImpl // oneServer or quorum, chosen by NewRedisLocker
}

// redisImpl is what differs between one server and a Redlock quorum.
type redisImpl interface {
	claim(ctx context.Context, job string, tick time.Time, lockTTL time.Duration, instance string) (Claim, error)
	acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error)
	// extend and release do the Redis part of Lease.Extend and
	// Lease.Release, under l.mu, on a lease that is neither lost nor
	// released; extend returns whether the lock holds, or l.lose's error.
	extend(ctx context.Context, l *redisLease, ttl time.Duration) error
	release(ctx context.Context, l *redisLease) error
	// drain waits for the calls that returned early left running on slow
	// servers (each within the budget).
	drain()
}

// redisStore is what both implementations share: the servers, the key
// layout and this process's abandoned attempt values.
type redisStore struct {
	clients   []redis.UniversalClient
	names     []string // of the servers, for error messages
	pools     []redsyncredis.Pool
	quorum    int
	prefix    string
	keyPrefix string // prefix, with braces escaped
	budget    time.Duration
	owner     string
	shared    *sharedBudget // the budget of calls whose context can never end (see bound)
	abandoned abandonedValues
	keys      keyCache
}

// NewRedisLocker returns the Locker for several instances: claim marks and
// run locks live in Redis, on github.com/redis/go-redis/v9, with the extension
// and release scripts of github.com/go-redsync/redsync/v4. WithRedis makes one. It holds no connection of its own
// (the clients are the caller's), so it needs no closing. It is safe for
// concurrent use.
//
// It picks one of two implementations once: one server (a single
// Redis, Sentinel or Cluster), where claim, lock and fencing token are one
// script; or a Redlock quorum over several independent masters
// (NewRedlock), see redlock.go.
//
// # Keys
//
// Per job, under the prefix (WithKeyPrefix, default "cronguard:"): the claim
// mark <prefix>claim:{job}, a hash that never expires; the run lock
// <prefix>lock:{job}, "owner/random" with a TTL of LockTTL; and the last
// fencing token, <prefix>fence:{job}. The table of every key, with each
// field of the claim mark, is in ARCHITECTURE.md ("Where state lives").
//
// The claim mark is one key per job that never expires: correctness does
// not rest on any TTL (a late instance, however late, finds its tick at or
// behind the mark), and Redis keeps one small hash per job name ever used;
// DEL it by hand for a job removed for good. The keys of versions before
// the claim mark (cronguard:tick:{job}:<tick>) are not read: during a
// rolling upgrade from such a version an old and a new instance may both
// run one tick.
//
// The braces are a Redis Cluster hash tag: a job's keys share one slot, so
// one script can use all three. A job name holding "{", "}" or "%" is
// escaped inside the tag (%7B, %7D, %25), as is a prefix holding braces, so
// that every name works on Cluster (an unescaped "}x" would scatter the
// keys over slots: CROSSSLOT).
//
// The locker builds a job's keys once and keeps them for up to 4,096 job
// names of at most 256 bytes (the cache is emptied when full), so a Locker
// called with ever new names holds about 13 MB of keys at most.
//
// # Round trips
//
// On one server, a scheduled run that wins its tick costs two round trips:
// the claim script, which moves the mark, takes the lock and issues the
// fencing token, and the release (redsync's compare-and-delete script);
// plus one per lease extension (every LockTTL/3). An instance that loses
// the tick costs one: the claim, whose reply names the holder. So does a
// won tick whose lock is held. With AllowOverlap the claim takes no lock
// and a run costs one round trip; a manual run costs two (lock, release).
// Three instances cost at most four round trips per tick. The first use of
// each script on a Redis that has not seen it (a fresh or restarted server)
// costs one more round trip (EVALSHA, NOSCRIPT, then EVAL).
//
// Those are the costs of a run alone. Claims and releases that overlap in
// time share round trips: a call that finds none in flight is sent at
// once; those that arrive meanwhile go together in one pipeline as soon as
// it returns (group commit, see scriptBatcher; on a Cluster, one pipeline
// per node). 1,000 jobs on one second cost about 0.02 round trips a run.
// Each call keeps its own attempt value, reply and deadline; a call whose
// context ends while it waits for the pipeline in flight is never sent.
// One stalled reply holds the calls queued behind it, each until its own
// deadline at most. With NewRedlock, calls are not batched.
//
// On Redis's one thread, a winning claim with the lock runs 7 commands
// (TIME, GET of the lock, HMGET of the mark, INCR of the fence, SET of the
// fence when the clock is ahead of it, HSET of the mark, SET of the lock),
// about 12 µs on Redis 7.0 (BenchmarkRedisClaimServerTime); a lost claim
// 3, a claim without the lock 2, a release 2 (about 2.3 µs).
//
// With NewRedlock see the quorum implementation: a claim asks the servers
// one after the other, then the lock goes to every server in parallel.
//
// # Budget
//
// A call whose context has a deadline keeps it; one without is bounded by
// the call budget (WithCallBudget, default 2s). The Scheduler gives each of
// its calls a deadline of WithCallBudget, so the budget is applied once,
// there. A context that can never be canceled and has no deadline
// (context.Background, or values over it) shares its deadline with the
// other such calls of the same slice of time, as the Scheduler's calls do
// (budget.go): it ends between the budget and the budget plus a sixteenth
// of it (at most 10ms more) after the call starts, and costs no runtime
// timer per call (a timer wakes another thread of the process each time,
// BenchmarkRedisGuardedRunVsPing). A context that can be canceled gets a
// deadline of exactly the budget, of its own. A call that takes the lock is bounded by a third of the lock TTL
// too, so that most of the TTL is left when it returns. go-redis
// applies context deadlines to connection set up and pool waits; for socket
// reads and writes to honour them too, set ContextTimeoutEnabled in the
// client's options, or keep ReadTimeout and WriteTimeout below the budget. A
// server that refuses connections costs go-redis's retries (0.1 to 2 seconds
// with the default MaxRetries and DialerRetries) before it fails: with
// Redlock, where a server may be down for long, lower those in the clients'
// options. A call whose reply is lost (a timeout) is followed by a clean-up
// of at most a quarter of the budget (see Lost replies).
//
// # Lost replies
//
// A claim or lock call that times out on the client may still run on Redis
// (a Redis stalled past the budget that then wakes; go-redis re-sending a
// command after a read timeout). Each call therefore carries a value of its
// own, "owner/random": the scripts recognise their own attempt, so a
// re-sent claim is answered as won, not as "claimed by" its own instance,
// and a re-sent lock as granted. When a call fails without an answer, the
// locker deletes the lock if it holds that call's value, synchronously and
// within a quarter of the budget, and remembers the value (the last 4 per
// job, for up to 1,024 jobs): the next claim or lock of this locker for the
// job frees a lock holding a remembered value, so an orphan of this process
// never blocks it for a whole TTL. Another instance finds such an orphan
// held until its TTL passes or this process claims the job again. A tick
// whose claim reply was lost is neither run nor reported missed. A claim
// that waited behind a pipeline in flight and whose context ended before
// it was sent was never sent: it has nothing to clean up.
//
// # What it promises, and what it cannot
//
// One run per tick: the claim mark moves only forward, atomically, to a
// tick newer than itself. As long as Redis keeps its data, a late,
// clock-skewed or paused instance finds its tick at or behind the mark and
// skips it. If Redis loses the mark (a restart without persistence, a
// failover to a replica that had not received it), a tick claimed just
// before the loss can be claimed again by an instance that is late for it.
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
// without persistence, forgets the lock, and a second run can start.
// Redlock (several independent masters, see NewRedlock) survives a
// minority of servers failing, but its safety rests on bounded clock drift
// and bounded pauses, not on consensus (see Martin Kleppmann, "How to do
// distributed locking", 2016). Where a second concurrent run would corrupt
// data, not just waste work, the data store itself must refuse stale
// writers: that is what the fencing token is for.
//
// # Fencing token
//
// Lease.Token (Report.Token in job code: ReportFrom(ctx, nil)) is issued
// in the same round trip as the lock, by the same server-side script: INCR of the
// job's fence key, exact in 64 bits (Lua numbers are doubles: the script
// uses INCR's reply only below 2^53, where a double is exact, and returns
// the counter's own text above), raised to the Redis server's clock in
// microseconds when that is larger. On one
// Redis it therefore grows with every acquisition of the job's lock, never
// repeats, and keeps growing after Redis lost its data (a restart without
// persistence, a failover), unless the server's clock went back. At
// 2^63-1 the counter cannot grow: the lock is then refused with the
// server's error, and left untaken. With Redlock the token is the largest
// one issued by the servers that granted the lock; it grows only as long
// as those servers' clocks agree to within the time between two
// acquisitions. A token helps only if the store that the job writes to
// checks it: record the highest token seen with each write (a column, a
// conditional UPDATE ... WHERE token <= $1) and reject writes carrying a
// lower one. cronguard cannot do that check for you.
//
// The scripts do everything that can fail (reading the keys, INCR of the
// fence) before they write the mark or the lock: Redis does not roll back a
// script that fails halfway, and a failed claim or lock leaves neither.
//
// # Construction
//
// client may be a single Redis, a Sentinel (failover) client or a Cluster
// client; NewRedlock takes several independent masters for a Redlock
// quorum. Both take WithKeyPrefix, WithCallBudget and WithInstanceID (the
// owner named in lock values). They do not talk to Redis: a Redis that is
// down shows up as errors from Claim and Acquire, which the Scheduler
// reports as skipped ticks (ErrBackend).
//
// A nil client or option, or an option that does not concern the locker,
// is an error wrapping ErrInvalidOption that names it.
func NewRedisLocker(client redis.UniversalClient, opts ...Option) (Locker, error) {
	cfg, err := backendConfig(forLocker, client, opts)
	if err != nil {
		return nil, err
	}
	return newRedisLocker([]redis.UniversalClient{client}, cfg), nil
}

// NewRedlock returns a Locker over several independent Redis masters: with
// N servers, a claim or a lock needs a majority (N/2+1) of them, so the
// locker works while a minority is down. Use an odd number of servers,
// three or five, each a separate master (not replicas of one another);
// with one client it is NewRedisLocker. Round-trip counts are per server.
// It takes the options NewRedisLocker takes; no client, a nil client or a
// nil option is an error wrapping ErrInvalidOption. WithRedis with several
// clients uses it.
//
// A claim asks the servers in turn, so a server that is down delays every
// claim by what its client spends on it, at most budget/N. go-redis's
// default retries spend most of that on a refused connection; clients with
// MaxRetries -1 and DialerRetries 1 fail it at once.
func NewRedlock(clients []redis.UniversalClient, opts ...Option) (Locker, error) {
	if len(clients) == 0 {
		return nil, fmt.Errorf("%w: %s: no client", ErrInvalidOption, forRedlock.ctor)
	}
	for i, c := range clients {
		if isNil(c) {
			return nil, fmt.Errorf("%w: %s: client %d is nil", ErrInvalidOption, forRedlock.ctor, i)
		}
	}
	cfg, err := backendConfig(forRedlock, clients[0], opts)
	if err != nil {
		return nil, err
	}
	return newRedisLocker(slices.Clone(clients), cfg), nil
}

// newRedisLocker builds the locker over clients, one server or a quorum.
func newRedisLocker(clients []redis.UniversalClient, cfg config) *redisLocker {
	l := &redisLocker{redisStore: redisStore{
		clients:   clients,
		names:     make([]string, len(clients)),
		pools:     make([]redsyncredis.Pool, len(clients)),
		quorum:    len(clients)/2 + 1,
		prefix:    cfg.prefix,
		keyPrefix: escapePrefix(cfg.prefix),
		budget:    cfg.budget,
		owner:     cfg.instance,
		shared:    newSharedBudget(context.Background(), cfg.budget),
	}}
	for i, c := range clients {
		l.names[i] = serverName(i, c)
		l.pools[i] = goredis.NewPool(c)
	}
	// The one choice between one server and a quorum: no method asks again.
	if len(clients) == 1 {
		l.impl = &oneServer{redisStore: &l.redisStore, batch: &scriptBatcher{client: clients[0]}}
	} else {
		l.impl = &quorum{redisStore: &l.redisStore}
	}
	return l
}

// Claim implements Locker: it moves <prefix>claim:{job} to tick if tick is
// newer and, when lockTTL > 0, takes <prefix>lock:{job} and a fencing token
// in the same step (one script, one round trip on one server). A lost
// claim names the instance and tick that hold the mark; a held lock is
// Claim.LockErr wrapping ErrLocked. Redis errors are returned as they are.
func (l *redisLocker) Claim(ctx context.Context, job string, tick time.Time, lockTTL time.Duration, instance string) (Claim, error) {
	if err := checkLockTTL(job, lockTTL); err != nil {
		return Claim{}, err
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	return l.impl.claim(ctx, job, tick, lockTTL, instance)
}

// Acquire implements Locker. It takes <prefix>lock:{job} in one try,
// without touching the claim mark: a held lock is an error wrapping
// ErrLocked at once, naming the holder and how long it still holds. Redis
// errors, and a quorum that could not be reached because servers failed,
// are returned as they are, never wrapping ErrLocked.
func (l *redisLocker) Acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error) {
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("%w: job %q: lock TTL %s: must be at least 1ms", ErrInvalidOption, job, ttl)
	}
	ctx, cancel := l.bound(ctx)
	defer cancel()
	return l.impl.acquire(ctx, job, ttl)
}

// drain waits for calls still on their way to slow Redlock servers;
// Scheduler.Stop calls it so that no goroutine outlives it.
func (l *redisLocker) drain() { l.impl.drain() }

// drainLocker waits for the calls l left running, if it is a Redis locker.
func drainLocker(l Locker) {
	if d, ok := l.(interface{ drain() }); ok {
		d.drain()
	}
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

var braceEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// hashTag returns job as a Cluster hash tag that holds no brace, so every
// key of the job lands in one slot. An empty name gets "{%}", which no
// escaped name can be.
func hashTag(job string) string {
	switch {
	case job == "":
		return "{%}"
	case strings.ContainsAny(job, "{}%"):
		return "{" + braceEscaper.Replace(job) + "}"
	}
	return "{" + job + "}"
}

// escapePrefix escapes a prefix with braces, which would make the hash
// tag; "%" too, so that an escaped prefix never equals another one.
func escapePrefix(p string) string {
	if strings.ContainsAny(p, "{}%") {
		return braceEscaper.Replace(p)
	}
	return p
}

// bound gives a call its deadline: the caller's, or the budget (see
// bounded). A context that can never end (Done is nil: no cancellation
// anywhere above it, no deadline) takes the shared budget's slice, with
// the caller's values (see NewRedisLocker, Budget): no timer per call.
func (l *redisStore) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); !ok && ctx.Done() == nil {
		return l.shared.valuesCtx(ctx), noCancel
	}
	return bounded(ctx, l.budget)
}

// within bounds ctx by d unless it ends sooner. It is not the call budget
// (see bounded) but a bound of its own: the third of the lock TTL a call
// that takes a lock may use, and a Redlock server's share of the budget.
func within(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, d)
}

// newValue makes the value of one claim or lock attempt: the owner, for
// messages, and 128 random bits, as crypto/rand.Text writes them (26
// characters of the RFC 4648 base32 alphabet), in one allocation.
func (l *redisStore) newValue() string {
	var r [26]byte
	_, _ = rand.Read(r[:]) // it never fails (crypto/rand)
	for i, b := range r {
		r[i] = base32Alphabet[b%32]
	}
	return l.owner + "/" + string(r[:])
}

const base32Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

// fenceLua issues a fencing token (see NewRedisLocker, Fencing token):
// fence(key, now) with now the server's clock in microseconds; clock()
// reads TIME once per script, and only when it is needed. INCR comes first: it fails on a key of the wrong type or at
// 2^63-1, before anything is written. Lua numbers are doubles: INCR's
// integer reply is exact below 2^53, where the script compares it with
// the clock (below 2^53 until 2255) and formats it; at or past 2^53 (where
// the clock cannot be larger) the counter goes back as GET's exact string.
// The key is SET only when the clock is ahead of the counter.
const fenceLua = `
local function fence(key, now)
	local c = redis.call('INCR', key)
	if c >= 9007199254740992 then
		return redis.call('GET', key)
	end
	if c < now then
		c = string.format('%d', now)
		redis.call('SET', key, c)
		return c
	end
	return string.format('%d', c)
end
local sec, usec
local function clock()
	if not sec then
		local t = redis.call('TIME')
		sec = tonumber(t[1])
		usec = sec * 1000000 + tonumber(t[2])
	end
	return sec, usec
end
local function abandoned(cur, from)
	for i = from, #ARGV do
		if cur == ARGV[i] then return true end
	end
	return false
end
`

// maxMarkAhead bounds how far ahead of a Redis server's clock a claim mark
// is trusted. A mark further ahead (set by an instance whose clock jumped
// forward, or by hand) would make every instance skip every tick as taken
// until real time caught up with it; instead a claim of a tick that is not
// itself that far ahead replaces it, reporting no missed ticks. Ticks in
// the future are still claimed against the mark as usual, so they never run
// twice.
const maxMarkAhead = time.Hour

// claimScript moves the claim mark and, when the lock TTL is not 0, takes
// the run lock and issues a fencing token, in one step.
//
//	KEYS: claim mark, lock, fence
//	ARGV: tick seconds, tick nanoseconds, instance, attempt value, lock TTL ms (0: no lock), tick text,
//	      wild-mark bound in seconds (see maxMarkAhead), abandoned values...
//
// It answers {state, a, b, c[, d]}: {"won", prev s, prev n, token}, {"taken",
// holder, mark s, mark n} or {"locked", prev s, prev n, lock value, PTTL}.
// A mark or lock that holds the attempt value is this attempt's own, re-run:
// won, and the lock granted again. A lock holding an abandoned value of
// this process is deleted first.
var claimScript = redis.NewScript(fenceLua + `
local function int(x)
	return type(x) == 'string' and string.match(x, '^%-?%d+$') ~= nil and #x <= 19
end
-- A mark far ahead of this server's clock (an instance with a wild clock, a
-- hand edit) does not hold back a tick of the present. Only a tick behind
-- the mark can meet a wild mark, so only a claim about to lose reads TIME.
local function wild(ms, ts)
	local now = clock() + tonumber(ARGV[7])
	return ms > now and ts <= now
end
local ts, tn = tonumber(ARGV[1]), tonumber(ARGV[2])
local att, ttl = ARGV[4], tonumber(ARGV[5])
local cur = false
if ttl > 0 or #ARGV >= 8 then
	cur = redis.call('GET', KEYS[2])
	if cur and abandoned(cur, 8) then
		redis.call('DEL', KEYS[2])
		cur = false
	end
end
local m = redis.call('HMGET', KEYS[1], 's', 'n', 'by', 'att')
local ps, pn = '', ''
if m[1] then
	if not int(m[1]) or not int(m[2]) then
		return redis.error_reply('cronguard: unreadable claim mark in ' .. KEYS[1])
	end
	local ms, mn = tonumber(m[1]), tonumber(m[2])
	if m[4] == att and ms == ts and mn == tn then
		local p = redis.call('HMGET', KEYS[1], 'ps', 'pn')
		if int(p[1]) and int(p[2]) then ps, pn = p[1], p[2] end
	elseif ts > ms or (ts == ms and tn > mn) then
		ps, pn = m[1], m[2]
	elseif wild(ms, ts) then
		ps, pn = '', ''
	else
		return {'taken', m[3] or '', m[1], m[2]}
	end
end
local token = ''
if ttl > 0 then
	if cur and cur ~= att then
		redis.call('HSET', KEYS[1], 's', ARGV[1], 'n', ARGV[2], 'by', ARGV[3], 'att', att, 'ps', ps, 'pn', pn, 'tick', ARGV[6])
		return {'locked', ps, pn, cur, redis.call('PTTL', KEYS[2])}
	end
	local _, now = clock()
	token = fence(KEYS[3], now)
end
redis.call('HSET', KEYS[1], 's', ARGV[1], 'n', ARGV[2], 'by', ARGV[3], 'att', att, 'ps', ps, 'pn', pn, 'tick', ARGV[6])
if ttl > 0 then
	redis.call('SET', KEYS[2], att, 'PX', ARGV[5])
end
return {'won', ps, pn, token}
`)

// acquireScript takes the run lock and issues a fencing token, for manual
// runs and Redlock servers; it answers as claimScript does.
//
//	KEYS: lock, fence
//	ARGV: attempt value, lock TTL ms, abandoned values...
var acquireScript = redis.NewScript(fenceLua + `
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] and not abandoned(cur, 3) then
	return {'locked', '', '', cur, redis.call('PTTL', KEYS[1])}
end
local _, now = clock()
local token = fence(KEYS[2], now)
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'won', '', '', token}
`)

// scriptReply is a parsed answer of claimScript or acquireScript.
type scriptReply struct {
	state      string // "won", "taken" or "locked"
	holder     string // taken: the mark's instance; locked: the lock's value
	holderTick time.Time
	prev       time.Time
	token      int64
	left       time.Duration // locked: the lock's remaining TTL
}

func parseReply(res any, loc *time.Location) (scriptReply, error) {
	v, ok := res.([]any)
	if !ok || len(v) < 4 {
		return scriptReply{}, fmt.Errorf("unexpected reply %T from the lock script", res)
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	r := scriptReply{state: str(0)}
	var err error
	switch r.state {
	case "taken":
		r.holder = clip(str(1))
		r.holderTick, err = parseTick(str(2), str(3), loc)
	case "won", "locked":
		if str(1) != "" {
			r.prev, err = parseTick(str(1), str(2), loc)
		}
		if r.state == "locked" {
			r.holder = clip(str(3))
			if ms, ok := v[len(v)-1].(int64); ok && ms > 0 {
				r.left = time.Duration(ms) * time.Millisecond
			}
		} else if tok := str(3); tok != "" && err == nil {
			if r.token, err = strconv.ParseInt(tok, 10, 64); err != nil {
				err = fmt.Errorf("fencing token %q: %w", clip(tok), err)
			}
		}
	default:
		err = fmt.Errorf("unexpected reply %q from the lock script", clip(r.state))
	}
	return r, err
}

func parseTick(s, n string, loc *time.Location) (time.Time, error) {
	sec, err1 := strconv.ParseInt(s, 10, 64)
	nsec, err2 := strconv.ParseInt(n, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return time.Time{}, fmt.Errorf("claim mark %q %q: %w", clip(s), clip(n), err)
	}
	return time.Unix(sec, nsec).In(loc), nil
}

// claimOn runs claimScript on server i.
func (l *redisStore) claimOn(ctx context.Context, i int, job string, tick time.Time, lockTTL time.Duration, instance, value string) (scriptReply, error) {
	res, err := claimScript.Run(ctx, l.clients[i], l.claimKeys(job), l.claimArgs(job, tick, lockTTL, instance, value)...).Result()
	if err != nil {
		return scriptReply{}, err
	}
	return parseReply(res, tick.Location())
}

// claimArgs is the ARGV of claimScript (claimKeys its KEYS).
func (l *redisStore) claimArgs(job string, tick time.Time, lockTTL time.Duration, instance, value string) []any {
	abandoned := l.abandoned.list(job)
	return appendClaimArgs(make([]any, 0, claimArgc+len(abandoned)), abandoned, tick, lockTTL, instance, value)
}

// claimArgc is the number of claimScript's arguments before the abandoned
// values.
const claimArgc = 7

// markAheadArg is claimScript's wild-mark bound, boxed once.
var markAheadArg any = int64(maxMarkAhead / time.Second)

// appendClaimArgs appends claimScript's ARGV to dst.
func appendClaimArgs(dst []any, abandoned []string, tick time.Time, lockTTL time.Duration, instance, value string) []any {
	dst = append(dst, tick.Unix(), tick.Nanosecond(), instance, value, lockTTL.Milliseconds(), fmtTick(tick), markAheadArg)
	for _, v := range abandoned {
		dst = append(dst, v)
	}
	return dst
}

// acquireOn runs acquireScript on server i.
func (l *redisStore) acquireOn(ctx context.Context, i int, job string, ttl time.Duration, value string) (scriptReply, error) {
	args := []any{value, ttl.Milliseconds()}
	for _, v := range l.abandoned.list(job) {
		args = append(args, v)
	}
	res, err := acquireScript.Run(ctx, l.clients[i], l.acquireKeys(job), args...).Result()
	if err != nil {
		return scriptReply{}, err
	}
	return parseReply(res, time.UTC)
}

// replyLost reports whether a call that failed with err may still have run
// on the server: not when the server answered with an error, nor when the
// command was never sent (no connection).
func replyLost(err error) bool {
	var re redis.Error
	var op *net.OpError
	switch {
	case errors.Is(err, errNeverSent):
		return false
	case errors.As(err, &re):
		// A server error is the script's own answer, unless go-redis
		// retried after a lost reply and the retry met a server that is
		// loading or failing over: the first try may have run.
		return retriedServerError(err)
	case errors.As(err, &op) && op.Op == "dial":
		return false
	}
	return true
}

// retriedServerError reports whether err is one of the server errors that
// go-redis retries on (LOADING, READONLY, MASTERDOWN, TRYAGAIN,
// CLUSTERDOWN): the call may have been sent before and run.
func retriedServerError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"LOADING ", "READONLY ", "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN "} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

// lockedError words a held lock: who holds it (the owner part of its
// value, which parseReply clipped) and for how long still.
func lockedError(job, key, holder string, left time.Duration) error {
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

// validFor is what is left of a lock of ttl taken by a call that started at
// start, after redsync's drift allowance (1% of the TTL plus 2ms).
func validFor(ttl time.Duration, start time.Time) time.Duration {
	return ttl - time.Since(start) - ttl/100 - 2*time.Millisecond
}

// maxAbandoned and maxAbandonedJobs bound abandonedValues.
const (
	maxAbandoned     = 4
	maxAbandonedJobs = 1024
)

// abandonedValues remembers, per job, the values of this process's lock
// attempts whose replies were lost: a lock holding one is this process's
// orphan, which its next claim or lock frees.
type abandonedValues struct {
	mu    sync.Mutex
	byJob map[string][]string
}

func (a *abandonedValues) add(job, value string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.byJob == nil {
		a.byJob = map[string][]string{}
	}
	vs, ok := a.byJob[job]
	if !ok && len(a.byJob) >= maxAbandonedJobs {
		for j := range a.byJob { // forget one job's values: a bound, not a policy
			delete(a.byJob, j)
			break
		}
	}
	if len(vs) == maxAbandoned {
		vs = vs[1:]
	}
	a.byJob[job] = append(slices.Clone(vs), value)
}

func (a *abandonedValues) list(job string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byJob[job]
}

// abandon is called after a lock attempt failed with err on server i: when
// the reply may have been lost, it deletes the lock if it holds value,
// within a quarter of the budget, and remembers value for the job.
func (l *redisStore) abandon(ctx context.Context, i int, job, value string, err error) {
	if !replyLost(err) {
		return
	}
	l.abandoned.add(job, value)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.budget/4)
	defer cancel()
	_, _ = l.eval(cctx, i, deleteScript, l.lockKey(job), value)
}

// oneServer is the Redis locker of one Redis (single, Sentinel or Cluster).
// Its claims and releases go through batch, which coalesces concurrent
// ones into pipelines (redisclaim_batch.go).
type oneServer struct {
	*redisStore
	batch *scriptBatcher
}

// drain waits for the pipeline in flight, if any (see scriptBatcher.drain).
func (o *oneServer) drain() { o.batch.drain() }

func (o *oneServer) claim(ctx context.Context, job string, tick time.Time, lockTTL time.Duration, instance string) (Claim, error) {
	value := o.newValue()
	start := time.Now()
	if lockTTL > 0 {
		var cancel context.CancelFunc
		ctx, cancel = within(ctx, lockTTL/3) // as redsync: leave most of the TTL valid
		defer cancel()
	}
	r, err := o.claimBatched(ctx, job, tick, lockTTL, instance, value)
	if err != nil {
		if lockTTL > 0 {
			o.abandon(ctx, 0, job, value, err)
		}
		return Claim{}, fmt.Errorf("%s: claim %s: %w", o.names[0], o.claimKey(job), err)
	}
	switch r.state {
	case "taken":
		return Claim{Holder: r.holder, HolderTick: r.holderTick}, nil
	case "locked":
		return Claim{Won: true, Holder: instance, Prev: r.prev, LockErr: lockedError(job, o.lockKey(job), r.holder, r.left)}, nil
	}
	c := Claim{Won: true, Holder: instance, Prev: r.prev}
	if lockTTL > 0 {
		c.Lease, c.LockErr = o.lease(ctx, job, lockTTL, value, r.token, start)
	}
	return c, nil
}

func (o *oneServer) acquire(ctx context.Context, job string, ttl time.Duration) (Lease, error) {
	value := o.newValue()
	start := time.Now()
	ctx, cancel := within(ctx, ttl/3)
	defer cancel()
	r, err := o.acquireOn(ctx, 0, job, ttl, value)
	if err != nil {
		o.abandon(ctx, 0, job, value, err)
		return nil, fmt.Errorf("%s: lock %s: %w", o.names[0], o.lockKey(job), err)
	}
	if r.state == "locked" {
		return nil, lockedError(job, o.lockKey(job), r.holder, r.left)
	}
	return o.lease(ctx, job, ttl, value, r.token, start)
}

// claimBatched runs claimScript through the batcher: the same script,
// keys and arguments as claimOn, in a pipeline shared with the claims and
// releases of other jobs that are in flight at the same time.
func (o *oneServer) claimBatched(ctx context.Context, job string, tick time.Time, lockTTL time.Duration, instance, value string) (scriptReply, error) {
	abandoned := o.abandoned.list(job)
	args := evalShaArgs(claimScript, 3, 3+claimArgc+len(abandoned))
	args = append(args, o.jobKeys(job).boxed[:]...)
	args = appendClaimArgs(args, abandoned, tick, lockTTL, instance, value)
	res, err := o.batch.callArgs(ctx, claimScript, args)
	if err != nil {
		return scriptReply{}, err
	}
	return parseReply(res, tick.Location())
}

// lease wraps a granted lock, unless it was granted too late to be valid.
func (o *oneServer) lease(ctx context.Context, job string, ttl time.Duration, value string, token int64, start time.Time) (Lease, error) {
	lease := o.newLease(o, job, o.lockKey(job), value, token, ttl)
	if validFor(ttl, start) <= 0 {
		_ = lease.Release(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("lock %s: granted after %s, too late to be valid for its TTL %s", lease.key, time.Since(start), ttl)
	}
	return lease, nil
}

// touchScript and deleteScript are redsync's extension and release scripts
// (redsync v4 scripts.go, same text, so Redis caches them once). touch
// answers 1 when it extended the lock, 0 when the lock is gone or another's;
// delete answers 1 when it released it, 0 when it is another's, -1 when it
// is gone.
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

// releaseScript is deleteScript (same text, same hash) for the batcher.
var releaseScript = redis.NewScript(deleteScript.Src)

func newRedsyncScript(src string) *redsyncredis.Script {
	sum := sha1.Sum([]byte(src))
	return redsyncredis.NewScript(1, src, hex.EncodeToString(sum[:]))
}

// eval runs a redsync script on server i, through redsync's pool.
func (l *redisStore) eval(ctx context.Context, i int, script *redsyncredis.Script, keysAndArgs ...any) (any, error) {
	conn, err := l.pools[i].Get(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.Eval(script, keysAndArgs...)
}

// redisLease is a run lock held on Redis: on one server or on a majority
// of a Redlock quorum (impl). mu guards the mutable part.
type redisLease struct {
	job   string
	key   string
	token int64
	value string
	impl  redisImpl
	store *redisStore

	mu       sync.Mutex
	ttl      time.Duration
	lost     error // set once an extension or a release found the lock gone
	released bool
}

// newLease returns the lease of a lock granted to value.
func (l *redisStore) newLease(impl redisImpl, job, key, value string, token int64, ttl time.Duration) *redisLease {
	return &redisLease{job: job, key: key, token: token, value: value, impl: impl, store: l, ttl: ttl}
}

// Token implements Lease.
func (r *redisLease) Token() int64 { return r.token }

// Extend implements Lease with redsync's compare-and-PEXPIRE script (on
// every server of a quorum, in parallel, holding when a majority extended
// it in time to be valid). The lease is lost (ErrLockLost) when the key is
// gone or holds another value, and also when Redis cannot be reached: the
// lock can then no longer be shown to be held. A lost lease is never
// extended or released again. A ttl under 1ms keeps the lease's TTL.
func (r *redisLease) Extend(ctx context.Context, ttl time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.check(); err != nil {
		return err
	}
	if ttl < time.Millisecond {
		ttl = r.ttl
	}
	ctx, cancel := r.store.bound(ctx)
	defer cancel()
	if err := r.impl.extend(ctx, r, ttl); err != nil {
		return err
	}
	r.ttl = ttl
	return nil
}

// Release implements Lease with redsync's compare-and-delete script: only
// a lock still holding this lease's value is deleted (on a quorum: it is
// released once a majority deleted it). Releasing a lost lease does
// nothing and returns the loss; releasing twice does nothing. When Redis
// cannot be reached the lock is not released (it frees itself after its
// TTL) and the error says so.
func (r *redisLease) Release(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost != nil {
		return r.lost
	}
	if r.released {
		return nil
	}
	ctx, cancel := r.store.bound(ctx)
	defer cancel()
	return r.impl.release(ctx, r)
}

// check returns why the lease cannot be extended: lost or released.
func (r *redisLease) check() error {
	if r.lost != nil {
		return r.lost
	}
	if r.released {
		return fmt.Errorf("%w: job %q: lease %d was released", ErrLockLost, r.job, r.token)
	}
	return nil
}

// lose records why the lease is lost, and returns it.
func (r *redisLease) lose(op string, why error) error {
	r.lost = fmt.Errorf("%w: job %q: lease %d on %s: %s: %w", ErrLockLost, r.job, r.token, r.key, op, why)
	return r.lost
}

var (
	errGone    = errors.New("the lock expired, was deleted or is held by another run")
	errExpired = errors.New("the lock had expired")
	errTaken   = errors.New("the lock is held by another run")
)

// extend implements redisImpl on one server.
func (o *oneServer) extend(ctx context.Context, r *redisLease, ttl time.Duration) error {
	st, err := o.eval(ctx, 0, touchScript, r.key, r.value, ttl.Milliseconds())
	switch {
	case err != nil:
		return r.lose("extend", fmt.Errorf("%s: %w", o.names[0], err))
	case st != int64(1):
		return r.lose("extend", errGone)
	}
	return nil
}

// release implements redisImpl on one server, through the batcher.
func (o *oneServer) release(ctx context.Context, r *redisLease) error {
	args := append(evalShaArgs(releaseScript, 1, 2), o.jobKeys(r.job).boxed[1], r.value)
	st, err := o.batch.callArgs(ctx, releaseScript, args)
	switch {
	case err != nil:
		return fmt.Errorf("lock %s: release: %s: %w", r.key, o.names[0], err)
	case st == int64(1):
		r.released = true
		return nil
	case st == int64(-1):
		return r.lose("release", errExpired)
	}
	return r.lose("release", errTaken)
}
