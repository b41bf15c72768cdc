package cronguard

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// The stack a scheduled run's goroutine gets.
//
// robfig/cron runs each fire on a goroutine of its own, which starts with a
// small stack: 2 KB unless the runtime has seen bigger ones, of which the
// 928 B stack guard is not for Go frames, so about 1.1 KB is left. The
// guards take about 600 B of it before the job's body starts
// (TestAllocsStackUnderScheduledJob), which leaves a body some 500 B: a
// no-op, a channel send or an atomic store fit; a body that logs, formats
// a string or calls a client does not.
//
// A body that does not fit grows the stack where it stands: the runtime
// copies the stack and fixes up every frame on it, the more the deeper
// (a Redis call, a logger). Grown at the top of the goroutine, before the
// guards, it costs about 0.4 µs; grown under the job, more. A body that
// fits would pay the growth at the top for nothing: about a third of what
// a no-op run costs on the memory backends (BenchmarkFireBurst's CPU
// profile).
//
// So each job learns which it is (stackNeed): its runs grow the stack at
// the top once two of its runs in a row grew it on their own. One is not
// enough: a run now and then grows it whatever the job (a history chunk
// or a span to allocate, work for the collector), and that should not
// make every run of the job pay. Every stackProbeEvery-th run goes
// without, to see whether the job still needs it.

// stackProbeEvery is how often a job whose runs grow the stack at the top
// runs without, to learn whether it still needs to: a power of two.
const stackProbeEvery = 64

// stackNeed's bits: the job's runs need a grown stack (stackDeep), and the
// last run that was not given one grew it (stackGrewOnce); the bits below
// count the job's runs (after 2^30 runs the count carries into the flags:
// one run's guess is wrong, and the next runs learn again).
const (
	stackDeep     = 1 << 31
	stackGrewOnce = 1 << 30
)

// stackNeed is what a job has learned about the stack its runs need.
type stackNeed struct{ n atomic.Uint32 }

// enter is called at the top of a scheduled run's goroutine: it grows the
// stack when the job's runs need it (but for a probe), and says whether it
// did.
func (s *stackNeed) enter() (grown bool) {
	n := s.n.Add(1)
	grown = n&stackDeep != 0 && n%stackProbeEvery != 0
	if grown {
		growStack()
	}
	return grown
}

// leave is called once the run is over: a run whose stack enter did not
// grow teaches the job whether its stack moved (grew) under it, which the
// caller finds by calling stackPointer from its own frame before the run
// and after.
func (s *stackNeed) leave(grown, moved bool) {
	switch {
	case grown:
	case !moved:
		s.n.And(^uint32(stackDeep | stackGrewOnce))
	case s.n.Or(stackGrewOnce)&stackGrewOnce != 0: // the second in a row
		s.n.Or(stackDeep)
	}
}

// growStack needs a frame big enough that the stack of a new goroutine
// grows on calling it, and small enough that one already grown is left
// alone.
//
//go:noinline
func growStack() {
	var frame [1536]byte
	runtime.KeepAlive(&frame)
}

// stackPointer is about the caller's stack pointer: the address of a local
// of a frame just below the caller's. Two calls from the same frame answer
// the same unless the stack moved in between: it grew, or a collection
// shrank a stack that started bigger than it needed (the runtime starts
// goroutines at the average size it has seen). A shrink is taken for a
// growth, and a growth then shrink back onto the same block for none:
// each costs a run some speed, never what it does.
//
//go:noinline
func stackPointer() uintptr {
	var b byte
	return uintptr(unsafe.Pointer(&b))
}
