package cronguard

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// historyEntryMax bounds the size of one history entry read from Redis;
// a bigger one is returned as an unreadable entry (Kind "") without being
// parsed.
const historyEntryMax = 64 << 10

// historySkipMemory is how long the last recorded skip of a job is
// remembered in Redis, to record a tick every instance skipped only once.
const historySkipMemory = 24 * time.Hour

// redisHistory keeps the run history in Redis, so that every instance sees
// the runs of every instance (NewRedisHistory).
//
// # Layout
//
// One capped stream per job, <prefix>history:{job}, each entry with one
// field "e", the JSON of a HistoryEntry; and <prefix>history:{job}:lastskip,
// "tick|reason" of the last skip recorded. The table of every key is in
// ARCHITECTURE.md ("Where state lives").
//
// Each write is one round trip (a Lua script): XADD with MAXLEN ~ perJob, so
// the stream is trimmed in whole nodes and may hold up to about 100 entries
// more than perJob (Redis's stream-node-max-entries). A tick skipped for the
// same reason by several instances (the switch is off: every instance asks
// it before the claim) is recorded once: the script compares it with the
// last skip recorded. Both keys carry the job's {job} hash tag, as the lock
// and the claim do, so the script runs on Redis Cluster too.
//
// Entries are read defensively: an entry that is not what Append writes
// (edited by hand, another program) comes back as an unreadable entry
// whose Error says why, cut to a bounded length; a key of the wrong type is
// an error wrapping ErrBackend.
type redisHistory struct {
	rdb    redis.UniversalClient
	prefix string
	size   int
	budget time.Duration
}

// NewRedisHistory returns a HistoryStore on rdb (a single, Sentinel or
// Cluster client), so that every instance sees the runs of every instance:
// one capped stream per job (the layout and the guarantees: the doc of
// redisHistory in history_redis.go; the keys: ARCHITECTURE.md). WithRedis
// uses it. It takes WithKeyPrefix, WithCallBudget and WithHistorySize; a
// nil client or option, or an option that does not concern the history, is
// an error wrapping ErrInvalidOption that names it. Entries it cannot read
// come back unreadable (Kind "") with a bounded Error; a key of the wrong
// type is an error wrapping ErrBackend.
func NewRedisHistory(rdb redis.UniversalClient, opts ...Option) (HistoryStore, error) {
	cfg, err := backendConfig(forHistory, rdb, opts)
	if err != nil {
		return nil, err
	}
	return &redisHistory{rdb: rdb, prefix: cfg.prefix, size: cfg.history.size, budget: cfg.budget}, nil
}

// key returns the name of the job's stream.
func (r *redisHistory) key(job string) string { return r.prefix + "history:{" + job + "}" }

// historyAppend adds one entry to the stream. A scheduled skip (ARGV[3] not
// empty) that matches the last skip recorded is not added again.
//
//	KEYS[1] stream, KEYS[2] last skip
//	ARGV[1] MAXLEN, ARGV[2] entry JSON, ARGV[3] "tick|reason" or "", ARGV[4] its TTL in ms
var historyAppend = redis.NewScript(`
if ARGV[3] ~= '' then
	if redis.call('GET', KEYS[2]) == ARGV[3] then
		return 0
	end
	redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[2])
return 1
`)

// Append implements HistoryStore. It keeps the caller's deadline, or is
// bounded by the budget when ctx has none.
func (r *redisHistory) Append(ctx context.Context, e HistoryEntry) error {
	if err := ctx.Err(); err != nil {
		return err // at stop, past the flush bound: fail at once
	}
	ctx, cancel := bounded(ctx, r.budget)
	defer cancel()
	c, _, err := r.newCall(&e, nil)
	if err != nil {
		return err
	}
	return historyAppend.Run(ctx, r.rdb, []string{c.stream, c.lastSkip}, r.args(c)...).Err()
}

// historyCall is what historyAppend is called with for one entry.
type historyCall struct {
	stream, lastSkip string // KEYS[1], KEYS[2]
	entry            []byte // ARGV[2]
	skip             string // ARGV[3]
}

// historyEntrySize is about the size of a run's entry in JSON, to size the
// buffer of a batch.
const historyEntrySize = 400

// newCall returns the call for e. Its JSON is appended to buf, returned
// grown: a batch's entries share one buffer.
func (r *redisHistory) newCall(e *HistoryEntry, buf []byte) (historyCall, []byte, error) {
	var c historyCall
	if e.Kind == EventSkipped && e.Trigger == TriggerSchedule && !e.Tick.IsZero() {
		c.skip = e.Tick.UTC().Format(time.RFC3339Nano) + "|" + string(e.Skip)
	}
	start := len(buf)
	buf, err := appendHistoryEntryJSON(buf, e)
	if err != nil {
		return c, buf[:start], err
	}
	c.entry = buf[start:len(buf):len(buf)] // capped: the next entry cannot write over it
	c.lastSkip = r.key(e.Job) + ":lastskip"
	c.stream = c.lastSkip[:len(c.lastSkip)-len(":lastskip")] // in the same allocation
	return c, buf, nil
}

// historySkipTTL is ARGV[4] of historyAppend, and historyAppendSHA the
// script's digest, boxed once.
var (
	historySkipTTL   any = historySkipMemory.Milliseconds()
	historyAppendSHA any = historyAppend.Hash()
)

// args are the ARGV of c.
func (r *redisHistory) args(c historyCall) []any {
	return []any{r.size, c.entry, c.skip, historySkipTTL}
}

// evalSha is the EVALSHA command of c: the arguments Script.EvalSha sends,
// built in one slice where it builds three (keys, args, and the command's).
// Redis Cluster routes it by its first key as it does Script.EvalSha's.
func (r *redisHistory) evalSha(c historyCall) []any {
	return []any{"evalsha", historyAppendSHA, 2, c.stream, c.lastSkip, r.size, c.entry, c.skip, historySkipTTL}
}

// appendHistoryEntryJSON appends the JSON of e as the stream stores it:
// without ID, with the stored name of its kind (storedKind). The bytes are
// those of json.Marshal, written without reflection (json_append.go); a time
// JSON cannot hold (a year outside [0,9999]) gets json.Marshal's error.
func appendHistoryEntryJSON(b []byte, e *HistoryEntry) ([]byte, error) {
	start := len(b)
	o := newJSONObject(b)
	// In the field order of HistoryEntry; ID is never stored.
	o.str("kind", string(storedKind(e.Kind)))
	o.str("job", e.Job)
	o.time("time", e.Time)
	o.strOmit("instance", e.Instance)
	o.strOmit("trigger", string(e.Trigger))
	o.timeOmit("tick", e.Tick)
	o.strOmit("by", e.By)
	if e.Report != nil {
		o.key("report")
		var ok bool
		o.b, ok = appendReportJSON(o.b, e.Report)
		o.ok = o.ok && ok
	}
	o.strOmit("skip", e.Skip)
	o.intOmit("missed", int64(e.Missed))
	o.timeOmit("first", e.First)
	o.timeOmit("last", e.Last)
	if e.Enabled != nil {
		o.bool("enabled", *e.Enabled)
	}
	o.strOmit("reason", e.Reason)
	o.strOmit("error", e.Error)
	if b, ok := o.end(); ok {
		return b, nil
	}
	stored := *e
	stored.ID, stored.Kind = "", storedKind(e.Kind)
	_, err := json.Marshal(stored)
	if err == nil { // cannot be: appendJSONTime fails only where json does
		err = fmt.Errorf("history: job %q: entry not encodable", e.Job)
	}
	return b[:start], err
}

// appendBatch implements batchAppender: the scheduler's history writer
// appends what queued up in one pipeline, one round trip. When Redis has
// lost the script (a restart, SCRIPT FLUSH) the batch is appended entry by
// entry, which loads it again.
func (r *redisHistory) appendBatch(ctx context.Context, es []HistoryEntry) []error {
	if err := ctx.Err(); err != nil {
		return repeatErr(err, len(es))
	}
	ctx, cancel := bounded(ctx, r.budget)
	defer cancel()
	errs := make([]error, len(es))
	cmds := make([]*redis.Cmd, len(es))
	buf := make([]byte, 0, len(es)*historyEntrySize) // the JSON of every entry
	_, _ = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range es {
			var c historyCall
			var err error
			if c, buf, err = r.newCall(&es[i], buf); err != nil {
				errs[i] = err
				continue
			}
			cmds[i] = p.Do(ctx, r.evalSha(c)...)
		}
		return nil
	})
	for i, c := range cmds {
		if c == nil {
			continue
		}
		if err := c.Err(); err != nil {
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				return r.appendEach(ctx, es)
			}
			errs[i] = err
		}
	}
	return someFailed(errs)
}

// appendEach appends es one by one.
func (r *redisHistory) appendEach(ctx context.Context, es []HistoryEntry) []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = r.Append(ctx, e)
	}
	return someFailed(errs)
}

// someFailed is errs, or nil when none is set.
func someFailed(errs []error) []error {
	if slices.ContainsFunc(errs, func(err error) bool { return err != nil }) {
		return errs
	}
	return nil
}

func repeatErr(err error, n int) []error {
	errs := make([]error, n)
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// History implements HistoryStore, bounded as Append.
func (r *redisHistory) History(ctx context.Context, job string, limit int) ([]HistoryEntry, error) {
	ctx, cancel := bounded(ctx, r.budget)
	defer cancel()
	key := r.key(job)
	msgs, err := r.rdb.XRevRangeN(ctx, key, "+", "-", int64(max(limit, 1))).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: history: read stream %s: %s", ErrBackend, clip(key), clip(err.Error()))
	}
	out := make([]HistoryEntry, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, parseHistoryEntry(job, m))
	}
	return out, nil
}

// parseHistoryEntry reads one stream entry; what it cannot read becomes a
// entry of Kind "" with a bounded Error.
func parseHistoryEntry(job string, m redis.XMessage) HistoryEntry {
	bad := func(format string, args ...any) HistoryEntry {
		return HistoryEntry{ID: clip(m.ID), Job: job,
			Error: clipN(fmt.Sprintf("unreadable history entry: "+format, args...), 512)}
	}
	v, ok := m.Values["e"]
	if !ok {
		return bad("no field \"e\" (fields: %s)", clip(strings.Join(fieldNames(m.Values), ",")))
	}
	raw, ok := v.(string)
	if !ok {
		return bad("field \"e\" is a %T", v)
	}
	if len(raw) > historyEntryMax {
		return bad("%d bytes, more than %d", len(raw), historyEntryMax)
	}
	var e HistoryEntry
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		return bad("%v; value: %s", err, clip(raw))
	}
	switch e.Kind = readKind(e.Kind); e.Kind {
	case EventFinished:
		if e.Report == nil {
			return bad("a run without a report; value: %s", clip(raw))
		}
	case EventSkipped, EventMissed, EventFlag:
	default:
		return bad("kind %q; value: %s", clip(string(e.Kind)), clip(raw))
	}
	e.ID, e.Job = m.ID, job
	boundEntry(&e)
	return e
}

// The stream keeps the kind names entries had before HistoryEntry.Kind
// became an EventKind ("run" for EventFinished, "skip" for EventSkipped;
// "missed" and "flag" are the same), so entries written by any version
// read the same in every other during a rolling upgrade.
var storedKinds = map[EventKind]EventKind{EventFinished: "run", EventSkipped: "skip"}

// storedKind is the name of kind k in the stream.
func storedKind(k EventKind) EventKind {
	if s, ok := storedKinds[k]; ok {
		return s
	}
	return k
}

// readKind is the kind a stream entry names: the stored name, or the
// EventKind itself (accepted too, in case a later version writes it).
func readKind(k EventKind) EventKind {
	for kind, stored := range storedKinds {
		if k == stored {
			return kind
		}
	}
	return k
}

// boundEntry cuts the texts of an entry read from outside to their bounds.
func boundEntry(e *HistoryEntry) {
	e.Instance, e.By = clip(e.Instance), clip(e.By)
	e.Trigger, e.Skip = Trigger(clip(string(e.Trigger))), clip(e.Skip)
	e.Reason, e.Error = clipN(e.Reason, historyTextMax), clipN(e.Error, historyTextMax)
	if r := e.Report; r != nil {
		r.Job, r.Instance, r.By = clip(r.Job), clip(r.Instance), clip(r.By)
		r.Trigger = Trigger(clip(string(r.Trigger)))
		*r = historyReport(*r)
	}
}

func fieldNames(values map[string]any) []string {
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, strconv.Quote(clip(k)))
	}
	slices.Sort(names)
	return names
}
