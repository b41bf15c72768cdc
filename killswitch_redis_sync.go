package cronguard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bounds of the Redis kill switch's background work.
const (
	ksMinBackoff  = 50 * time.Millisecond  // first wait after the subscription failed
	ksMaxBackoff  = time.Second            // longest wait between attempts to subscribe
	ksCheckEvery  = 250 * time.Millisecond // the health check's tick
	ksPingEvery   = 500 * time.Millisecond // a PING through the subscription this often
	ksPongTimeout = time.Second            // a PING unanswered this long: the subscription is silent
	ksPollEvery   = 500 * time.Millisecond // full reload period while not live or reads fail
	ksMaxMessage  = 64 << 10               // a longer message is not parsed
	ksMaxPending  = 256                    // more flags waiting for a re-read wait for a full reload
	// ksSubscribeWithin is how long a subscription being made (dialed,
	// its handshake, SUBSCRIBE) has to be confirmed before it is dropped
	// and another tried: longer than a slow link's setup, and short of
	// what a hung dial can take with the client's timeouts.
	ksSubscribeWithin = 5 * time.Second
)

// ksWork is the reads waiting for the reader goroutine.
type ksWork struct {
	all   bool   // reload the whole hash
	why   string // of the reload, for the log
	flags map[string]struct{}
}

// clientDB returns the database rdb selects: 0 for a Cluster client and for
// client types that do not tell.
func clientDB(rdb redis.UniversalClient) int {
	switch c := rdb.(type) {
	case interface{ Options() *redis.Options }:
		return c.Options().DB
	case interface{ Options() *redis.RingOptions }:
		return c.Options().DB
	}
	return 0
}

// start starts following Redis in the background: the receive loop, the
// health check, its pinger and the reader of the hash.
func (k *RedisKillSwitch) start() {
	k.subSince = time.Now()
	k.wake = make(chan struct{}, 1)
	k.pings = make(chan *redis.PubSub, 1)
	k.ctx, k.cancel = context.WithCancel(context.Background())
	k.wg.Add(4)
	go k.receive()
	go k.healthCheck()
	go k.pinger()
	go k.readLoop()
}

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
		k.live, k.notSince, k.pingSent = false, time.Now(), time.Time{}
		fresh = true
	}
	return k.ps, fresh
}

// drop closes ps and forgets it, so that the next pubsub call makes a new
// one.
func (k *RedisKillSwitch) drop(ps *redis.PubSub) {
	k.forget(ps)
	_ = ps.Close()
}

// lose is the health check's and the pinger's drop of ps: if ps is still
// the subscription in use, it forgets it and records the loss in one step
// under psMu (so a confirmation, subscribed, falls wholly before or after
// it, and a loss already recorded for ps by the other is not recorded
// again over its successor), then closes ps on a goroutine of its own,
// which Close waits for: closing a go-redis PubSub takes its lock, which
// it holds while it dials, until the client's dial or read timeout when a
// new connection hangs, and the caller must not wait that long. It reports
// whether ps was in use.
func (k *RedisKillSwitch) lose(ps *redis.PubSub, err error) bool {
	k.psMu.Lock()
	if k.ps != ps {
		k.psMu.Unlock()
		return false
	}
	k.ps, k.pingSent = nil, time.Time{}
	k.mu.Lock() // psMu, then mu: nothing takes them the other way
	began := k.lostLocked(err)
	k.mu.Unlock()
	k.psMu.Unlock()
	k.afterLoss(began, err)
	k.wg.Add(1) // the caller's own count is not yet done: Close's Wait has not returned
	go func() {
		defer k.wg.Done()
		_ = ps.Close()
	}()
	return true
}

// connLost notes that ps, if it is still the subscription in use, lost
// its connection: go-redis makes it again at the next Receive, and until
// it is confirmed again it is not PINGed (see checkSubscription). It
// reports whether ps is in use.
func (k *RedisKillSwitch) connLost(ps *redis.PubSub) bool {
	k.psMu.Lock()
	defer k.psMu.Unlock()
	if k.ps != ps {
		return false
	}
	if k.live {
		k.live, k.notSince, k.pingSent = false, time.Now(), time.Time{}
	}
	return true
}

// forget makes ps no longer the subscription in use.
func (k *RedisKillSwitch) forget(ps *redis.PubSub) {
	k.psMu.Lock()
	defer k.psMu.Unlock()
	if k.ps == ps {
		k.ps = nil
		k.pingSent = time.Time{}
	}
}

// receive is the loop that reads the subscription: it asks the reader to
// re-read each flag a message names, to reload on (re)subscription, and
// records PONGs for the health check.
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
			if !k.connLost(ps) {
				continue // the health check dropped it (a loss it recorded); a new one is made now
			}
			k.subLost(err)
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
		// A subscription the health check dropped can still deliver what
		// its connection had read: its confirmation or PONG must not mark
		// the one in use as healthy.
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				k.subscribed(ps)
			}
		case *redis.Pong:
			k.psMu.Lock()
			if k.ps == ps {
				k.pingSent = time.Time{}
			}
			k.psMu.Unlock()
		case *redis.Message:
			k.onMessage(m.Payload)
		}
	}
}

// subscribed records that ps is confirmed, if it is still the subscription
// in use, and asks for the reload that ends a loss: messages may have been
// missed until now. psMu is held across the check and the record, as lose
// holds it across its own, so a drop falls wholly before or after it: a
// dropped subscription never confirms the next one's generation.
func (k *RedisKillSwitch) subscribed(ps *redis.PubSub) {
	k.psMu.Lock()
	ok := k.ps == ps
	if ok {
		k.live, k.pingSent, k.lastPing = true, time.Time{}, time.Now()
		k.mu.Lock() // psMu, then mu: nothing takes them the other way
		k.confirmedGen, k.confirmedAt = k.subGen, k.ticket
		k.mu.Unlock()
	}
	k.psMu.Unlock()
	if ok {
		k.requestAll("subscribed")
	}
}

// subLost records that the subscription stopped being live, and asks for a
// reload at once: from now on the cache follows the hash by re-reading it.
// receive calls it for the subscription it reads; a new one is made only
// by receive, so none can be confirmed between its check and this record.
func (k *RedisKillSwitch) subLost(err error) {
	k.mu.Lock()
	began := k.lostLocked(err)
	k.mu.Unlock()
	k.afterLoss(began, err)
}

// lostLocked records a loss: the confirmed generation is now behind. k.mu
// is held.
func (k *RedisKillSwitch) lostLocked(err error) (began bool) {
	k.subGen++
	return k.failingLocked(&k.subErr, &k.subSince, err)
}

// afterLoss logs a loss that began and asks for the reload that follows it.
func (k *RedisKillSwitch) afterLoss(began bool, err error) {
	k.warnIf(began, "cronguard: redis kill switch lost its subscription; re-reading the hash every "+ksPollEvery.String(), err)
	k.requestAll("subscription lost")
}

// failingLocked records err in *cur, and now in *since when the failure
// begins now. It reports whether a failure began after the cache had
// loaded (before, Enabled's error says it), so that an outage is logged
// once. k.mu is held.
func (k *RedisKillSwitch) failingLocked(cur *error, since *time.Time, err error) (began bool) {
	began = *cur == nil
	if began {
		*since = time.Now()
	}
	*cur = err
	return began && k.loaded
}

// warnIf logs msg with err when began.
func (k *RedisKillSwitch) warnIf(began bool, msg string, err error) {
	if began {
		k.logger.Warn(msg, slog.String("key", k.key), slog.String("err", clip(err.Error())))
	}
}

// onMessage asks for a re-read of the flag a message names. A message
// that names none makes a full reload, at the next health check.
func (k *RedisKillSwitch) onMessage(payload string) {
	var m flipMessage
	if len(payload) > ksMaxMessage || json.Unmarshal([]byte(payload), &m) != nil || m.Flag == "" {
		k.unreadable(payload)
		return
	}
	k.request(m.Flag)
}

// unreadable notes a message that names no flag: the health check reloads
// (at most every ksCheckEvery), and it is logged at most once a second.
func (k *RedisKillSwitch) unreadable(payload string) {
	k.wmu.Lock()
	k.garbage = true
	log := time.Since(k.lastGarbageLog) >= time.Second
	if log {
		k.lastGarbageLog = time.Now()
	}
	k.wmu.Unlock()
	if log {
		k.logger.Warn("cronguard: redis kill switch got a message that names no flag; reloading",
			slog.String("channel", k.channel), slog.String("payload", clip(payload)))
	}
}

// request asks the reader to re-read flag. When ksMaxPending flags wait
// already, the flag is left to a full reload at the next health check, so a
// flood of names costs bounded memory and at most one reload per check.
func (k *RedisKillSwitch) request(flag string) {
	k.wmu.Lock()
	switch {
	case k.work.all: // the reload reads it too
	case len(k.work.flags) >= ksMaxPending:
		k.garbage = true
	default:
		if k.work.flags == nil {
			k.work.flags = map[string]struct{}{}
		}
		k.work.flags[flag] = struct{}{}
	}
	k.wmu.Unlock()
	k.signal()
}

// requestAll asks the reader to reload the whole hash.
func (k *RedisKillSwitch) requestAll(why string) {
	k.wmu.Lock()
	if !k.work.all {
		k.work = ksWork{all: true, why: why}
	}
	k.wmu.Unlock()
	k.signal()
}

func (k *RedisKillSwitch) signal() {
	select {
	case k.wake <- struct{}{}:
	default: // the reader has been told already
	}
}

// take returns the waiting work and clears it.
func (k *RedisKillSwitch) take() (ksWork, bool) {
	k.wmu.Lock()
	defer k.wmu.Unlock()
	w := k.work
	k.work = ksWork{}
	return w, w.all || len(w.flags) > 0
}

// readLoop is the only goroutine that reads the hash, so reads apply in
// the order they started: a read applies to a flag unless SetEnabled wrote
// the flag after the read started.
func (k *RedisKillSwitch) readLoop() {
	defer k.wg.Done()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-k.wake:
		}
		for k.ctx.Err() == nil {
			w, ok := k.take()
			if !ok {
				break
			}
			if w.all {
				k.reload(w.why)
			} else {
				k.reread(slices.Sorted(maps.Keys(w.flags)))
			}
		}
	}
}

// startRead returns the ticket of a read that starts now.
func (k *RedisKillSwitch) startRead() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ticket++
	return k.ticket
}

// startReload returns the ticket of a full reload that starts now, and
// records when it started.
func (k *RedisKillSwitch) startReload() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ticket++
	k.lastReload = time.Now()
	return k.ticket
}

// reload replaces the cache with the hash in Redis (HGETALL).
func (k *RedisKillSwitch) reload(why string) {
	t := k.startReload()
	ctx, cancel := context.WithTimeout(k.ctx, k.budget)
	vals, err := k.rdb.HGetAll(ctx, k.key).Result()
	cancel()
	if err != nil {
		k.readFailed(fmt.Errorf("reload (%s): %w", why, err))
		return
	}
	k.mu.Lock()
	var changed []string
	for name := range k.flags {
		if _, ok := vals[name]; !ok && k.setLocked(t, name, nil) {
			changed = append(changed, name)
		}
	}
	for name, v := range vals {
		if k.setLocked(t, name, &v) {
			changed = append(changed, name)
		}
	}
	wasTroubled := k.loaded && (k.readErr != nil || k.subErr != nil)
	k.loaded, k.readErr = true, nil
	if k.subErr != nil && k.confirmedGen == k.subGen && t > k.confirmedAt {
		k.subErr = nil // confirmed, and this read started after: in sync
	}
	recovered := wasTroubled && k.subErr == nil
	k.mu.Unlock()
	if recovered {
		k.logger.Info("cronguard: redis kill switch follows Redis again",
			slog.String("key", k.key), slog.String("why", why))
	}
	for _, name := range changed {
		k.watchers.notify(name)
	}
}

// reread re-reads the named flags (HMGET).
func (k *RedisKillSwitch) reread(names []string) {
	t := k.startRead()
	ctx, cancel := context.WithTimeout(k.ctx, k.budget)
	vals, err := k.rdb.HMGet(ctx, k.key, names...).Result()
	cancel()
	if err == nil && len(vals) != len(names) {
		err = fmt.Errorf("HMGET returned %d values for %d fields", len(vals), len(names))
	}
	if err != nil {
		k.readFailed(fmt.Errorf("re-read %d flags: %w", len(names), err))
		return
	}
	k.mu.Lock()
	var changed []string
	for i, name := range names {
		var v *string
		if s, ok := vals[i].(string); ok {
			v = &s
		}
		if k.setLocked(t, name, v) {
			changed = append(changed, name)
		}
	}
	k.mu.Unlock()
	for _, name := range changed {
		k.watchers.notify(name)
	}
}

// setLocked puts what read t found for flag in the cache (v nil: not in
// the hash), unless SetEnabled wrote the flag after t started. It reports
// whether the flag's value changed.
func (k *RedisKillSwitch) setLocked(t uint64, flag string, v *string) bool {
	f, ok := k.flags[flag]
	if ok && f.ticket > t {
		return false
	}
	on0, err0 := k.valueLocked(flag)
	if v == nil {
		delete(k.flags, flag)
	} else {
		st, err := parseFlagValue(k.key, flag, *v)
		k.flags[flag] = cachedFlag{state: st, err: err, ticket: t}
	}
	on1, err1 := k.valueLocked(flag)
	return on0 != on1 || (err0 == nil) != (err1 == nil)
}

// readFailed records that a read of the hash failed: Enabled fails until a
// full reload succeeds.
func (k *RedisKillSwitch) readFailed(err error) {
	if k.ctx.Err() != nil {
		return // closing
	}
	k.mu.Lock()
	began := k.failingLocked(&k.readErr, &k.readSince, err)
	k.mu.Unlock()
	k.warnIf(began, "cronguard: redis kill switch cannot read its hash; the last known flags hold", err)
}

// healthCheck PINGs the subscription and schedules full reloads, every
// ksCheckEvery.
func (k *RedisKillSwitch) healthCheck() {
	defer k.wg.Done()
	t := time.NewTicker(ksCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case now := <-t.C:
			k.checkSubscription(now)
			k.scheduleReload(now)
		}
	}
}

// checkSubscription has the pinger send a PING through a confirmed
// subscription every ksPingEvery; one left unanswered for ksPongTimeout,
// or that cannot be sent, drops the connection, and receive makes a new
// one. Both periods are counted in checks (half a check of slack absorbs
// ticker jitter), so a subscription that goes silent is noticed within
// ksPingEvery+ksPongTimeout (1.5s) plus scheduling delays: 2s is the
// stated bound. A subscription being made (new, or its connection lost)
// is not PINGed, since a PING would wait for its dial and count that as
// silence, and a link slow to set up would never subscribe: it has
// ksSubscribeWithin to be confirmed, or it is dropped and made again.
// Nothing here waits on the subscription (see pinger and lose): while it
// is being made, however long that takes, the check goes on, and with it
// the reloads every ksPollEvery (scheduleReload), which the loss began.
func (k *RedisKillSwitch) checkSubscription(now time.Time) {
	const slack = ksCheckEvery / 2
	k.psMu.Lock()
	ps, live, sent := k.ps, k.live, k.pingSent
	making := now.Sub(k.notSince)
	send := ps != nil && live && sent.IsZero() && now.Sub(k.lastPing) >= ksPingEvery-slack
	if send {
		k.pingSent, k.lastPing = now, now // before the PING: its PONG may come at once
	}
	k.psMu.Unlock()
	var err error
	switch {
	case ps == nil:
		return
	case !live && making >= ksSubscribeWithin-slack:
		err = fmt.Errorf("subscription not confirmed within %s", ksSubscribeWithin)
	case !sent.IsZero() && now.Sub(sent) >= ksPongTimeout-slack:
		err = fmt.Errorf("subscription silent: no PONG within %s", ksPongTimeout)
	case send:
		select {
		case k.pings <- ps:
		default: // the pinger is still on the last PING: its PONG timeout covers this one
		}
	}
	if err != nil {
		k.lose(ps, err)
	}
}

// pinger sends the health check's PINGs. It is apart because a go-redis
// PubSub's Ping takes the PubSub's lock, which a dial that hangs holds
// until the client's dial or read timeout (5s and 3s by default, more if
// the client is set so): the health check must not wait that long.
func (k *RedisKillSwitch) pinger() {
	defer k.wg.Done()
	for {
		select {
		case <-k.ctx.Done():
			return
		case ps := <-k.pings:
			ctx, cancel := context.WithTimeout(k.ctx, ksPongTimeout)
			err := ps.Ping(ctx)
			cancel()
			if err != nil && k.ctx.Err() == nil {
				k.lose(ps, fmt.Errorf("PING on the subscription: %w", err))
			}
		}
	}
}

// scheduleReload asks for a full reload every resync interval, every
// ksPollEvery while the subscription is not live or reads fail, and after
// a message that named no flag.
func (k *RedisKillSwitch) scheduleReload(now time.Time) {
	k.mu.RLock()
	troubled := !k.loaded || k.readErr != nil || k.subErr != nil
	last := k.lastReload
	k.mu.RUnlock()
	k.wmu.Lock()
	garbage := k.garbage
	k.garbage = false
	k.wmu.Unlock()
	every, why := k.resync, "periodic"
	if troubled {
		every, why = min(every, ksPollEvery), "poll"
	}
	switch {
	case garbage:
		k.requestAll("unreadable message")
	case now.Sub(last) >= every:
		k.requestAll(why)
	}
}
