package cronguard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// elsewhereSwitch is a switch flipped in its own store, as the Unleash
// switch (module ./unleash) is: its SetEnabled only says where to flip,
// with an error wrapping ErrNotFlippable. Enabled fails while down.
type elsewhereSwitch struct{ down atomic.Bool }

func (e *elsewhereSwitch) Enabled(context.Context, string) (bool, error) {
	if e.down.Load() {
		return false, errors.New("flag store down")
	}
	return true, nil
}

func (e *elsewhereSwitch) SetEnabled(_ context.Context, flag string, _ bool, _ string) error {
	return fmt.Errorf("%w: flip toggle %q in the flag service", ErrNotFlippable, "x."+flag)
}

// A switch whose SetEnabled returns ErrNotFlippable: Scheduler.SetEnabled
// passes its words on (where to flip), and nothing is remembered here: the
// job follows the switch, whose last answer holds while it is down.
func TestSetEnabledOnSwitchFlippedElsewhere(t *testing.T) {
	ks := &elsewhereSwitch{}
	s, _ := newTest(t, WithKillSwitch(ks))
	ran := 0
	if err := s.Register("mail", "@hourly", JobFunc(func(context.Context) error { ran++; return nil }), Flag("mail-flag")); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s, "mail", t0); rep.Outcome() != "done" || ran != 1 {
		t.Fatalf("report = %v", rep)
	}
	err := s.SetEnabled(context.Background(), "mail", false, "stop")
	if !errors.Is(err, ErrNotFlippable) || !strings.Contains(err.Error(), `flip toggle "x.mail-flag" in the flag service`) ||
		!strings.Contains(err.Error(), `"mail"`) {
		t.Fatalf("SetEnabled: err = %v", err)
	}
	ks.down.Store(true)
	if rep := tickAt(t, s, "mail", t0.Add(time.Hour)); rep.Outcome() != "done" || ran != 2 {
		t.Fatalf("after a refused SetEnabled, store down: report = %v, ran %d; want the switch's last answer (on)", rep, ran)
	}
}

// The runaway guard on a switch flipped elsewhere stops the run, does not
// report the refused switch-off as a failure, and does not trip the job.
func TestRunawayOnSwitchFlippedElsewhere(t *testing.T) {
	ks := &elsewhereSwitch{}
	s, rec := newTest(t, WithKillSwitch(ks))
	if err := s.Register("same-users", "@hourly", Batch[int]{
		Fetch:   func(context.Context, Page) ([]int, error) { return []int{1, 2}, nil },
		Process: func(context.Context, int) error { return nil },
		Key:     itoa,
	}); err != nil {
		t.Fatal(err)
	}
	rep := tickAt(t, s, "same-users", t0)
	if rep.Outcome() != "runaway" || !errors.Is(rep.Err, ErrRunaway) || rep.Tripped {
		t.Fatalf("report = %+v", rep)
	}
	if strings.Contains(rep.Err.Error(), "switching flag") || strings.Contains(rep.Err.Error(), "switched off") {
		t.Fatalf("runaway error = %v; want no switch-off failure, nor a switch-off", rep.Err)
	}
	if ev, ok := rec.find(EventRunaway); !ok || !errors.Is(ev.Err, ErrRunaway) {
		t.Fatalf("runaway event = %+v, %v", ev, ok)
	}
}
