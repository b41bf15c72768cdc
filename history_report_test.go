package cronguard

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Without an observer the memory history keeps each run's own Report
// instead of a copy: every entry still holds the report of its run (not a
// later one's), a failed run's error is kept as bounded text, and what a
// caller does with the Report it got back does not reach the history.
func TestHistoryKeepsEachRunsReport(t *testing.T) {
	s := quietScheduler(t)
	long := strings.Repeat("x", 2*historyTextMax)
	n := 0
	_ = s.Register("j", "@every 1m", JobFunc(func(context.Context) error {
		if n++; n == 2 {
			return errors.New(long)
		}
		return nil
	}))
	var reps []Report
	for k := range 3 {
		reps = append(reps, tickAt(t, s, "j", t0.Add(time.Duration(k)*time.Minute)))
	}
	reps[0].Processed, reps[0].Job = 99, "changed by the caller"
	h, err := s.History(context.Background(), "j", 0)
	if err != nil || len(h) != 3 {
		t.Fatalf("history: %+v, %v", h, err)
	}
	for i, e := range h { // newest first
		r := e.Report
		k := 2 - i
		if r == nil || !r.Tick.Equal(t0.Add(time.Duration(k)*time.Minute)) || r.Job != "j" || r.Processed != 0 || r.Token != int64(k+1) {
			t.Errorf("entry %d: report %+v, want the run of tick %d, untouched, with its lock's token %d", i, r, k, k+1)
		}
	}
	if r := h[1].Report; r.Outcome() != "error" || len(r.Err.Error()) > historyTextMax+64 || errors.Is(r.Err, reps[1].Err) {
		t.Errorf("failed run's entry: stop %s, error of %d bytes; want its text cut to %d", r.Outcome(), len(r.Err.Error()), historyTextMax)
	}
}
