package cronguard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// scriptBatcher coalesces the concurrent script calls of one server's
// locker (claims and releases) into pipelines, by group commit: a call
// that finds nothing in flight is sent at once, alone, by its caller, as
// it would be without the batcher; calls that arrive while something is in
// flight wait for it and are then sent together, in the next pipeline
// (up to maxBatch calls), as soon as it returns. Nothing waits on a timer.
// When 1,000 jobs share a second, their claims go in a handful of
// pipelines instead of queueing, one command each, in go-redis's pool.
//
// A pipeline is one round trip; each call in it keeps its own keys,
// arguments and attempt value, and gets its own reply: a script's error
// fails its own call only. On a Cluster client go-redis splits a pipeline
// by node (a job's keys share one slot).
//
// The pipelines that follow a lone call are sent by a goroutine of their
// own (a flight), which ends as soon as no call is queued; no goroutine
// lives longer. A pipeline carries the latest deadline of its calls; each
// caller still returns by its own deadline: see call. One flight at a
// time: a reply that stalls holds the calls queued behind it, each until
// its own deadline at most.
type scriptBatcher struct {
	client redis.UniversalClient

	mu     sync.Mutex
	queue  []*batchCall
	flying bool          // a call or a pipeline is in flight
	landed chan struct{} // made by drain only, closed when the flight in the air ends
}

// maxBatch bounds the calls of one pipeline. Measured with 1,000 claims at
// once on one local Redis, pipelines of 64 to 256 calls with 2 to 8 in
// flight returned the median claim earlier than one flight but not the
// 99th percentile, which waits for Redis to run every script (12–14 µs
// of its one thread per claim, BenchmarkRedisClaimServerTime): one flight it is.
const maxBatch = 1024

// batchCall is one script call waiting in, or sent by, the batcher.
type batchCall struct {
	ctx    context.Context
	script *redis.Script
	args   []any // the whole EVALSHA command (see evalShaArgs)

	state batchState // guarded by scriptBatcher.mu
	cmd   *redis.Cmd // the reply, once done is closed
	done  chan struct{}
}

type batchState uint8

const (
	callQueued batchState = iota
	callSent              // in a pipeline: it may run on the server
	callLeft              // its caller left before it was sent: it never will be
)

// errNeverSent marks a call whose caller's context ended while the call
// was still queued behind a pipeline in flight: it was not sent and will
// not be, so it cannot have run (replyLost is false for it).
var errNeverSent = errors.New("not sent: its context ended while it waited for the pipeline in flight")

// call runs script on the server through the batcher and returns its
// reply. It returns by ctx's deadline whatever the server does: if ctx
// ends while the call is queued, the call is taken out and never sent
// (an error wrapping errNeverSent and ctx's error); if ctx ends once the
// call is sent, it returns ctx's error and the call may still run on the
// server, later (a lost reply: the caller's lost-reply handling applies,
// as for a command that timed out).
func (b *scriptBatcher) call(ctx context.Context, script *redis.Script, keys []string, args ...any) (any, error) {
	cmdArgs := evalShaArgs(script, len(keys), len(keys)+len(args))
	for _, k := range keys {
		cmdArgs = append(cmdArgs, k)
	}
	return b.callArgs(ctx, script, append(cmdArgs, args...))
}

// callArgs is call with the whole EVALSHA command, made by evalShaArgs and
// completed with the script's keys and arguments: the claim path boxes a
// job's keys once (jobKeys), not on every call.
func (b *scriptBatcher) callArgs(ctx context.Context, script *redis.Script, args []any) (any, error) {
	b.mu.Lock()
	if err := ctx.Err(); err != nil {
		b.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", errNeverSent, err)
	}
	if !b.flying { // nothing in flight: send it now, on the caller's context
		b.flying = true
		b.mu.Unlock()
		defer b.land() // also when the client panics (a user's hook): the queue goes on
		return b.sendOne(ctx, script, args).Result()
	}
	c := &batchCall{ctx: ctx, script: script, args: args, done: make(chan struct{})}
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.cmd.Result()
	case <-ctx.Done():
	}
	b.mu.Lock()
	st := c.state
	if st == callQueued {
		c.state = callLeft
	}
	b.mu.Unlock()
	if st != callSent {
		return nil, fmt.Errorf("%w: %w", errNeverSent, ctx.Err())
	}
	select {
	case <-c.done: // the reply came as the context ended: it counts
		return c.cmd.Result()
	default:
		return nil, ctx.Err()
	}
}

// land ends a lone call's flight: the calls queued behind it go on in a
// flight of their own; with none, nothing is in flight any more.
func (b *scriptBatcher) land() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) > 0 {
		go b.fly()
		return
	}
	b.endFlight()
}

// endFlight records that nothing is in flight any more and wakes drain,
// if it waits; b.mu is held. A lone call makes no channel: drain does.
func (b *scriptBatcher) endFlight() {
	b.flying = false
	if b.landed != nil {
		close(b.landed)
		b.landed = nil
	}
}

// fly sends pipelines until no call is queued.
func (b *scriptBatcher) fly() {
	for {
		batch := b.take()
		if len(batch) == 0 {
			return
		}
		ctx, cancel := flightContext(batch)
		b.sendContained(ctx, batch)
		cancel()
		for _, c := range batch {
			close(c.done)
		}
	}
}

// take takes up to maxBatch calls from the head of the queue: those whose
// caller is still waiting are marked sent and returned. With none, the
// flight ends.
func (b *scriptBatcher) take() []*batchCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	var batch []*batchCall
	n := 0
	for _, c := range b.queue {
		if len(batch) == maxBatch {
			break
		}
		n++
		if c.state == callQueued && c.ctx.Err() == nil {
			c.state = callSent
			batch = append(batch, c)
		} else {
			c.state = callLeft
		}
	}
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	if len(batch) == 0 {
		b.endFlight()
	}
	return batch
}

// sendOne runs a lone call as a plain command on the caller's goroutine
// and returns its reply; on a server without the script (NOSCRIPT: it did
// not run) it is sent again with the script's text.
func (b *scriptBatcher) sendOne(ctx context.Context, script *redis.Script, args []any) *redis.Cmd {
	cmd := evalShaCmd(ctx, args)
	_ = b.client.Process(ctx, cmd) // the error is cmd's
	if noScript(cmd.Err()) {
		return evalCmd(ctx, b.client, script, args)
	}
	return cmd
}

// send runs batch as one pipeline (one call alone as a plain command) and
// gives each call its reply. Calls that met a server without the script
// (NOSCRIPT: it did not run) are sent again with the script's text.
func (b *scriptBatcher) send(ctx context.Context, batch []*batchCall) {
	b.exec(ctx, batch, false)
	var again []*batchCall
	for _, c := range batch {
		if noScript(c.cmd.Err()) {
			again = append(again, c)
		}
	}
	if len(again) > 0 {
		b.exec(ctx, again, true)
	}
}

// noScript reports whether err is Redis's NOSCRIPT: the script is not
// loaded, and did not run.
func noScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// sendContained is send for a flight, on its own goroutine, where a panic
// in the client (a user's hook, say) would end the process: the panic
// becomes the error of each call left without a reply. Such a call may
// have run on the server; its error is not a lost reply (replyLost), so a
// lock it took stays until its TTL: the tick is skipped, never run twice.
func (b *scriptBatcher) sendContained(ctx context.Context, batch []*batchCall) {
	defer func() {
		p := recover()
		if p == nil {
			return
		}
		err := fmt.Errorf("cronguard: the Redis client panicked: %s", clip(fmt.Sprint(p)))
		for _, c := range batch {
			if c.cmd == nil || (c.cmd.Err() == nil && c.cmd.Val() == nil) {
				c.cmd = redis.NewCmd(ctx)
				c.cmd.SetErr(err)
			}
		}
	}()
	b.send(ctx, batch)
}

// exec sends calls, by hash or (eval) by text, and sets each one's cmd.
func (b *scriptBatcher) exec(ctx context.Context, calls []*batchCall, eval bool) {
	run := func(s scriptProcessor, c *batchCall) *redis.Cmd {
		if eval {
			return evalCmd(ctx, s, c.script, c.args)
		}
		cmd := evalShaCmd(ctx, c.args)
		_ = s.Process(ctx, cmd) // in a pipeline: queued; the error is cmd's
		return cmd
	}
	if len(calls) == 1 {
		calls[0].cmd = run(b.client, calls[0])
		return
	}
	pipe := b.client.Pipeline()
	for _, c := range calls {
		c.cmd = run(pipe, c)
	}
	_, _ = pipe.Exec(ctx) // each command holds its own error
}

// scriptProcessor is a client or a pipeline: it sends a command, or a
// script by its text.
type scriptProcessor interface {
	redis.Scripter
	Process(ctx context.Context, cmd redis.Cmder) error
}

// evalShaArgs starts the arguments of one EVALSHA of script with nkeys
// keys: "evalsha", the script's hash and nkeys, with room for n more (the
// keys, then the script's arguments). The command is the one go-redis's
// Script.EvalSha sends, without boxing the hash and each key anew.
func evalShaArgs(script *redis.Script, nkeys, n int) []any {
	args := make([]any, 3, 3+n)
	args[0], args[1], args[2] = "evalsha", scriptHash(script), nkeys
	return args
}

// scriptHash is script's hash, boxed once per script.
func scriptHash(script *redis.Script) any {
	switch script {
	case claimScript:
		return claimHash
	case releaseScript:
		return releaseHash
	}
	return script.Hash()
}

var claimHash, releaseHash any = claimScript.Hash(), releaseScript.Hash()

// evalShaCmd is the command of args (see evalShaArgs), routed on a
// Cluster by its first key, as Script.EvalSha's.
func evalShaCmd(ctx context.Context, args []any) *redis.Cmd {
	cmd := redis.NewCmd(ctx, args...)
	if args[2] != 0 {
		cmd.SetFirstKeyPos(3)
	}
	return cmd
}

// evalCmd sends the call of args (see evalShaArgs) by the script's text,
// with go-redis's Script.Eval: after NOSCRIPT, which is rare (a fresh or
// restarted server), so its allocations do not matter.
func evalCmd(ctx context.Context, s scriptProcessor, script *redis.Script, args []any) *redis.Cmd {
	nkeys, _ := args[2].(int)
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i], _ = args[3+i].(string)
	}
	return script.Eval(ctx, s, keys, args[3+nkeys:]...)
}

// flightContext is the context of a pipeline: the first call's values,
// no cancellation (a caller that leaves does not cut the others' calls),
// and the latest deadline of the calls (none if one has none).
func flightContext(batch []*batchCall) (context.Context, context.CancelFunc) {
	var last time.Time
	for _, c := range batch {
		dl, ok := c.ctx.Deadline()
		if !ok {
			return context.WithoutCancel(batch[0].ctx), noCancel
		}
		if dl.After(last) {
			last = dl
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), last)
}

// drain waits for the flight in the air, if any: it ends by the latest
// deadline of its calls (with ContextTimeoutEnabled; else by the client's
// socket timeouts) once no call is queued.
func (b *scriptBatcher) drain() {
	b.mu.Lock()
	if !b.flying {
		b.mu.Unlock()
		return
	}
	if b.landed == nil {
		b.landed = make(chan struct{})
	}
	landed := b.landed
	b.mu.Unlock()
	<-landed
}
