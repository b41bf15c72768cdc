package cronguard

import (
	"time"
)

// The ticks a process took up, for the missed-tick report.
//
// A claim that wins tick X with the claim mark at P finds the ticks of the
// spec strictly between P and X unclaimed. Not all of them are missed:
// this process may have taken some of them up (a fire, or RunTick, handed
// them to a run) and decided them without claiming: switched off, its
// previous run still going, the store down, or the run is still on its way
// to its own claim. Each such run raises its own event for its tick
// (finished or skipped), so those ticks are reported, as skips. The rest,
// the ticks no run here took up, are missed (EventMissed).
//
// So the process keeps the ticks it took up since the last claim answer
// that puts them behind the mark, as spans of the spec's ticks. Before,
// it kept only the latest tick it decided, and called every tick before it
// decided: the ticks of a pause (a frozen process) before a tick skipped
// for a store error were then never reported at all.

// tickSpan is a run of the spec's ticks, from and to (Unix nanoseconds)
// included, every one of which a run here took up. Two spans next to each
// other may be one run of ticks: spans are joined only when there are too
// many (see tickSchedule.compact), since telling costs a call of the
// spec's Next.
type tickSpan struct{ from, to int64 }

// maxTakenSpans bounds the spans kept (256 B). A new span past it joins
// spans that touch; when none do (a process paused that often while no
// claim was answered), the oldest span is dropped: its ticks would then be
// reported missed as well as skipped, never left unreported.
const maxTakenSpans = 16

// taken notes that a run took up tick; t.mu is held. A fire hands out
// ticks in order, so the common case appends or finds the tick in the
// last span.
func (t *tickSchedule) taken(ns int64) {
	i := len(t.spans)
	for i > 0 && t.spans[i-1].from > ns {
		i--
	}
	if i > 0 && ns <= t.spans[i-1].to {
		return // taken up already (RunTick given a tick twice)
	}
	if len(t.spans) == maxTakenSpans {
		if i -= t.compact(i); i < 0 {
			return // older than every span kept: it goes as the oldest would
		}
	}
	t.spans = append(t.spans, tickSpan{})
	copy(t.spans[i+1:], t.spans[i:])
	t.spans[i] = tickSpan{ns, ns}
}

// takenTick is taken for a tick given by hand (RunTick).
func (t *tickSchedule) takenTick(tick time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.taken(tick.UnixNano())
}

// compact joins the spans with no tick of the spec between them and, if
// none do, drops the oldest, so that one more fits. It returns how many
// of the spans before index i went.
func (t *tickSchedule) compact(i int) int {
	out, gone := t.spans[:1], 0
	for k, sp := range t.spans[1:] {
		last := &out[len(out)-1]
		if n := t.inner.Next(t.time(last.to)); n.IsZero() || n.UnixNano() >= sp.from {
			last.to = sp.to
			if k+1 < i {
				gone++
			}
			continue
		}
		out = append(out, sp)
	}
	if len(out) == maxTakenSpans {
		// Joined spans never straddle a new tick (it is a tick between
		// them), so the oldest is before index i unless i is 0.
		out, gone = out[:copy(out, out[1:])], gone+1
	}
	clear(t.spans[len(out):])
	t.spans = out
	return gone
}

// settled drops the ticks up to tick, once a claim answer put the mark at
// or past it: the mark only moves forward, so no later claim finds them
// between the mark and its tick.
//
// One bound: a claim that went to the store before this answer's claim,
// and is answered after it, may find the mark before tick (only when two
// runs of one job claim at once, with AllowOverlap). A tick dropped here
// that lies in its gap is then reported missed by it and skipped by its
// own run: reported twice, never left out.
func (t *tickSchedule) settled(tick time.Time) {
	ns := tick.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	i := 0
	for i < len(t.spans) && t.spans[i].to <= ns {
		i++
	}
	if i == 0 {
		return
	}
	n := copy(t.spans, t.spans[i:])
	clear(t.spans[n:])
	t.spans = t.spans[:n]
	if n == 0 && cap(t.spans) > 2 {
		t.spans = nil // a long switch-off grew it; a job that claims keeps one or two
	}
}

// untaken appends to dst the stretches strictly between after and before
// that hold no tick taken up here, each as a tickSpan of exclusive bounds:
// the ticks of the spec strictly inside one were missed. The common case is
// one stretch, (after, before) itself.
func (t *tickSchedule) untaken(after, before time.Time, dst []tickSpan) []tickSpan {
	lo, hi := after.UnixNano(), before.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, sp := range t.spans {
		if sp.to <= lo || sp.from >= hi {
			continue
		}
		if sp.from > lo {
			dst = append(dst, tickSpan{lo, sp.from})
		}
		lo = sp.to
	}
	if lo < hi {
		dst = append(dst, tickSpan{lo, hi})
	}
	return dst
}
