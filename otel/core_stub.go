//go:build !cronguard_reportfrom

package cgotel

// This file is what the middleware can learn of a run from the core as it
// is: a Middleware gets the run's context and an error, and the context
// only tells the tick (cronguard.TickFrom). It is replaced by
// core_report.go once the core exports
//
//	// ReportFrom returns, inside a Middleware, the Report of the run of ctx
//	// as it stands (Job, Trigger, Tick, Instance), or, given the error the
//	// rest of the chain returned, the Report the Scheduler is about to emit.
//	// ok is false outside a run.
//	func ReportFrom(ctx context.Context, err error) (r Report, ok bool) {
//		st, ok := ctx.Value(runKey{}).(*run)
//		if !ok {
//			return Report{}, false
//		}
//		return st.report(err), true
//	}
//
// (in run.go; st.report is what execute builds its Report with). The code
// and tests of core_report*.go passed against a core with that function.
//
// INTEGRATION: add ReportFrom to the core; delete this file and
// mode_stub_test.go; remove the build constraint of core_report.go,
// core_report_test.go and mode_report_test.go.

import (
	"context"
	"errors"

	"github.com/cronguard/cronguard"
)

// before returns what the context tells of the run: its tick, and from it
// the trigger (a scheduled tick is never zero; a manual run's is).
func before(ctx context.Context) runInfo {
	tick := cronguard.TickFrom(ctx)
	trigger := cronguard.TriggerManual
	if !tick.IsZero() {
		trigger = cronguard.TriggerSchedule
	}
	return runInfo{trigger: trigger, tick: tick}
}

// skipSentinels maps the errors the guards skip a run with to the reason,
// most specific first: a queued run that Stop canceled wraps ErrStopped and
// the cause.
var skipSentinels = []struct {
	err    error
	reason cronguard.SkipReason
}{
	{cronguard.ErrTickTaken, cronguard.SkipTickTaken},
	{cronguard.ErrOverlap, cronguard.SkipOverlap},
	{cronguard.ErrLocked, cronguard.SkipLocked},
	{cronguard.ErrBackend, cronguard.SkipBackend},
	{cronguard.ErrFlagUnavailable, cronguard.SkipBackend},
	{cronguard.ErrKilled, cronguard.SkipKilled},
	{cronguard.ErrStopped, cronguard.SkipStopped},
}

// after classifies the attempt by its error alone. A run that started and
// then ended with a skip sentinel (the kill switch off between batches) is
// taken for a skip: only the core knows whether the run started.
func after(_ context.Context, err error) result {
	if err == nil {
		return result{outcome: OutcomeOK}
	}
	for _, s := range skipSentinels {
		if errors.Is(err, s.err) {
			return result{outcome: OutcomeSkipped, skip: s.reason, err: err}
		}
	}
	return result{outcome: OutcomeError, err: err}
}
