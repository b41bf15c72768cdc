package cgotel

// This file reads the run from the core's report (cronguard.ReportFrom):
// the job, trigger, tick and instance before the run, and after it whether
// it was skipped and why, its outcome, batches and items.

import (
	"context"
	"errors"

	"github.com/cronguard/cronguard"
	"go.opentelemetry.io/otel/attribute"
)

// Attribute keys that only the core's report can fill.
const (
	AttrStop      = attribute.Key("cronguard.stop")
	AttrBatches   = attribute.Key("cronguard.batches")
	AttrProcessed = attribute.Key("cronguard.items.processed")
	AttrFailed    = attribute.Key("cronguard.items.failed")
	AttrTripped   = attribute.Key("cronguard.tripped")
)

func before(ctx context.Context) runInfo {
	r, ok := cronguard.ReportFrom(ctx, nil)
	if !ok { // a Job run outside a Scheduler
		return runInfo{trigger: cronguard.TriggerManual}
	}
	return runInfo{job: r.Job, trigger: r.Trigger, tick: r.Tick, instance: r.Instance}
}

func after(ctx context.Context, err error) result {
	r, ok := cronguard.ReportFrom(ctx, err)
	switch {
	case !ok && err == nil:
		return result{outcome: OutcomeOK}
	case !ok:
		return result{outcome: OutcomeError, err: err}
	}
	if skip, ok := errors.AsType[*cronguard.SkipError](r.Err); ok {
		return result{outcome: OutcomeSkipped, skip: r.Outcome(), backend: errors.Is(skip.Reason, cronguard.ErrBackend), err: r.Err}
	}
	res := result{outcome: OutcomeOK, attrs: []attribute.KeyValue{
		AttrStop.String(r.Outcome()),
		AttrBatches.Int(r.Batches),
		AttrProcessed.Int(r.Processed),
		AttrFailed.Int(r.Failed),
	}}
	if r.Tripped {
		res.attrs = append(res.attrs, AttrTripped.Bool(true))
	}
	if r.Err != nil {
		res.outcome, res.err = OutcomeError, r.Err
	}
	return res
}
