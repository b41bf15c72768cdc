package cronguard

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// flagWatcher is implemented by kill switches that can tell at once when a
// flag may have changed (the memory and Redis switches). The hard-kill guard
// uses it to cancel a run as soon as its flag goes off; without it, the
// guard only polls (WithKillPoll).
type flagWatcher interface {
	// watch calls fn after each change the switch sees to flag, until stop
	// is called. fn must not block: it runs on the switch's goroutines.
	watch(flag string, fn func()) (stop func())
}

// flagWatchers is the registry of watch callbacks of a switch.
type flagWatchers struct {
	mu   sync.Mutex
	next uint64
	fns  map[string]map[uint64]func()
}

// add registers fn for flag and returns the function that removes it.
func (w *flagWatchers) add(flag string, fn func()) (stop func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns == nil {
		w.fns = map[string]map[uint64]func(){}
	}
	if w.fns[flag] == nil {
		w.fns[flag] = map[uint64]func(){}
	}
	w.next++
	id := w.next
	w.fns[flag][id] = fn
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		delete(w.fns[flag], id)
		if len(w.fns[flag]) == 0 {
			delete(w.fns, flag)
		}
	}
}

// notify calls the callbacks watching flag.
func (w *flagWatchers) notify(flag string) {
	w.mu.Lock()
	fns := make([]func(), 0, len(w.fns[flag]))
	for _, fn := range w.fns[flag] {
		fns = append(fns, fn)
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// hardKillGuard cancels the run with cause ErrKilled as soon as the job's
// flag goes off: at once when the switch reports changes (flagWatcher; the
// Redis switch within a round trip of the flip message), and in any case
// within the kill poll (WithKillPoll, default 100ms), the fallback for
// switches that do not report changes and for lost messages.
func (s *Scheduler) hardKillGuard(ctx context.Context, e *entry) error {
	runCtx, cancel := context.WithCancelCause(ctx)
	changed := make(chan struct{}, 1)
	if w, ok := s.cfg.killSwitch.(flagWatcher); ok {
		stop := w.watch(e.cfg.flag, func() {
			select {
			case changed <- struct{}{}:
			default: // a check is pending already
			}
		})
		defer stop()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pollKill(runCtx, e, changed, cancel)
	}()
	defer func() { cancel(nil); <-done }()
	return s.start(runCtx, e)
}

// pollKill re-reads the flag when the switch reports a change and every
// kill poll, and cancels the run when the flag is off. A store that cannot
// answer never kills a run by itself: the fail policy's last known value
// decides (a run only started because that value was on, or fail-open with
// none, which stays on).
func (s *Scheduler) pollKill(ctx context.Context, e *entry, changed <-chan struct{}, cancel context.CancelCauseFunc) {
	t := time.NewTicker(s.cfg.killPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		// s.ask, not s.enabled: an outage must not raise an event ten
		// times a second.
		cctx, ccancel := context.WithTimeout(ctx, s.cfg.budget)
		a := s.ask(cctx, e.cfg.flag)
		ccancel()
		if !a.on { // unavailable is on here: the run started fail-open
			cancel(fmt.Errorf("%w: job %q: hard kill (flag %q)", ErrKilled, e.name, e.cfg.flag))
			return
		}
	}
}
