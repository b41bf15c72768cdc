package cronguard

import (
	"sync"
	"sync/atomic"
)

// runGate counts the runs going now, for Stop: a run that got in before
// close is waited for by Wait; from close on, track refuses every run. It
// is one atomic word: a run takes no lock that every run shares (it once
// took Scheduler.mu, and a sync.WaitGroup cannot be added to while Stop
// may be waiting on it, which an unlocked check would allow).
type runGate struct {
	n         atomic.Int64 // runs going, plus gateClosed once closed
	closeOnce sync.Once
	idleOnce  sync.Once
	idle      chan struct{} // made by close; closed once closed with no run going
}

// gateClosed is the bit of runGate.n that close sets, far above any count
// of runs.
const gateClosed = 1 << 62

// track counts a run in; false once the gate is closed. Its Add comes
// before close's or after it: before, close's Add sees the run counted and
// Wait waits for its done; after, the run sees the bit and does not go.
func (g *runGate) track() bool {
	if g.n.Add(1)&gateClosed != 0 {
		g.done()
		return false
	}
	return true
}

// done counts a run out.
func (g *runGate) done() {
	if g.n.Add(-1) == gateClosed {
		g.signal()
	}
}

// close refuses every run from now on; Stop calls it, once or more.
func (g *runGate) close() {
	g.closeOnce.Do(func() {
		g.idle = make(chan struct{})
		if g.n.Add(gateClosed) == gateClosed {
			g.signal()
		}
	})
}

// signal tells Wait that no run goes; a refused run may reach the count of
// zero again later, and tell it again, for nothing.
func (g *runGate) signal() { g.idleOnce.Do(func() { close(g.idle) }) }

// Wait returns once the gate is closed and every run that got in has
// ended. It must be called after close.
func (g *runGate) Wait() { <-g.idle }
