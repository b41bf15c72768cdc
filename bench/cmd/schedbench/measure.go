package main

import (
	"context"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// probe collects what the jobs of one phase report about the ticks of its
// window, however late their runs start or end.
type probe struct {
	lat  recorder     // start lateness: time from the tick to the job's body
	run  recorder     // duration of a whole guarded run, or of a floor's PINGs or claim
	done recorder     // a floor's lateness when its round trips are back (the claim floor's lat)
	errs atomic.Int64 // failed calls of a floor: PINGs, or claims that failed or were refused

	mu    sync.Mutex
	skips map[string]int // cronguard's skipped ticks in the window, by reason (-skips)
}

// skipped counts a tick cronguard skipped, if it is in the window.
func (p *probe) skipped(tick time.Time, reason string) {
	if !tick.After(p.lat.from) || !tick.Before(p.lat.to) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.skips == nil {
		p.skips = map[string]int{}
	}
	p.skips[reason]++
}

func newProbe(capacity int) *probe {
	return &probe{lat: recorder{buf: make([]time.Duration, capacity)}, run: recorder{buf: make([]time.Duration, capacity)},
		done: recorder{buf: make([]time.Duration, capacity)}}
}

// window sets the ticks to record, from < tick < to. Call it before the
// scheduler starts: the jobs only read it.
func (p *probe) window(from, to time.Time) {
	p.lat.from, p.lat.to = from, to
	p.run.from, p.run.to = from, to
	p.done.from, p.done.to = from, to
}

// Bounds of drain.
const (
	drainQuiet = 2 * time.Second
	drainMax   = 10 * time.Second
)

// drain waits, after the window, for the late runs of its ticks: until
// every expected run has started, or none has for 2s, at most 10s. A
// scheduler that is stopping may refuse runs it has not begun.
func (p *probe) drain(expected int) {
	deadline := time.Now().Add(drainMax)
	last, quietSince := p.lat.n.Load(), time.Now()
	for time.Now().Before(deadline) && int(last) < expected && time.Since(quietSince) < drainQuiet {
		time.Sleep(20 * time.Millisecond)
		if n := p.lat.n.Load(); n != last {
			last, quietSince = n, time.Now()
		}
	}
}

// recorder keeps samples in a buffer sized before the phase, so recording
// costs the jobs an atomic add and a store, not an allocation or a lock.
// Samples past the buffer are counted, not kept.
type recorder struct {
	from, to time.Time
	n        atomic.Int64
	buf      []time.Duration
}

// add records d for a run of tick, if tick is in the window.
func (r *recorder) add(tick time.Time, d time.Duration) {
	if !tick.After(r.from) || !tick.Before(r.to) {
		return
	}
	if i := r.n.Add(1) - 1; i < int64(len(r.buf)) {
		r.buf[i] = d
	}
}

// samples returns the recorded samples, sorted. Call it once the scheduler
// has stopped (and so every job has returned).
func (r *recorder) samples() []time.Duration {
	n := min(int(r.n.Load()), len(r.buf))
	s := slices.Clone(r.buf[:n])
	slices.Sort(s)
	return s
}

// quantile of sorted samples (nearest rank); zero when there are none.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func mean(s []time.Duration) time.Duration {
	if len(s) == 0 {
		return 0
	}
	var t time.Duration
	for _, d := range s {
		t += d
	}
	return t / time.Duration(len(s))
}

// cpuTime is the user+system CPU this process has used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heap is the live heap after a full collection.
type heap struct{ bytes, objects uint64 }

func liveHeap() heap {
	runtime.GC()
	runtime.GC() // the second one frees what finalizers of the first released
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return heap{m.HeapAlloc, m.HeapObjects}
}

// spin starts n goroutines that burn CPU until the returned stop is called:
// the "busy machine" of issue 8, made the same on every run.
func spin(n int) (stop func()) {
	var halt atomic.Bool
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			x := 0
			for !halt.Load() {
				x++
			}
			spinSink.Add(int64(x))
		})
	}
	return func() { halt.Store(true); wg.Wait() }
}

var spinSink atomic.Int64 // keeps the spinning loops from being optimised away

// rtCounter is a go-redis hook that counts round trips (a command or a
// pipeline each) while on, and notes the names of the commands sent.
type rtCounter struct {
	on   atomic.Bool
	n    atomic.Int64
	sent sentNames
}

func (h *rtCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *rtCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.on.Load() {
			h.n.Add(1)
			h.sent.add(cmd.Name())
		}
		return next(ctx, cmd)
	}
}

func (h *rtCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.on.Load() && !connSetup(cmds) {
			h.n.Add(1)
			for _, c := range cmds {
				h.sent.add(c.Name())
			}
		}
		return next(ctx, cmds)
	}
}

// connSetup reports whether cmds is what go-redis sends on a new connection
// (HELLO, CLIENT SETINFO, ...): a cost of the pool, not of a run.
func connSetup(cmds []redis.Cmder) bool {
	for _, c := range cmds {
		switch c.Name() {
		case "hello", "client", "auth", "select":
		default:
			return false
		}
	}
	return true
}
