package cronguard

import (
	"context"
	"fmt"
	"time"
)

// RunManually runs the job now, outside its schedule: with no items, one
// whole run; with items, exactly those items of a Batch job (an item may
// also be a []T, which is spread). It skips cron, the tick claim and the kill
// switch — an operator may run a job that is switched off — but never the
// run lock: when a run of the job is going, here or on another instance, it
// fails at once with ErrLocked.
//
// Items are processed in the order given, in batches of the Batch's Size
// (MaxBatches does not apply; the kill switch is not re-read between
// batches either), with its PerSecond, Concurrency and MaxFailures. An item
// whose Key an earlier item of the call had is processed once; the copies
// are counted in Report.Duplicates.
//
// An item may also be a json.RawMessage: it is decoded into the Batch's
// item type T (strictly: unknown fields and null are ErrInvalidItems), and a
// JSON array is spread into its items. The admin API runs items this way.
// Report.By is the actor of ctx (WithActor), for the history.
//
// The returned error is Report.Err: nil when the run did its work. A run
// ended by MaxBatches is not an error; Report.Stop says so.
func (s *Scheduler) RunManually(ctx context.Context, name string, items ...any) (Report, error) {
	e, err := s.lookup(name)
	if err != nil {
		return Report{Job: name, Trigger: TriggerManual, Err: err}, err
	}
	var flat []any
	if len(items) > 0 {
		b := e.batch()
		if b == nil {
			err := fmt.Errorf("%w: job %q is a %T, not a Batch; got %d items", ErrInvalidItems, name, e.job, len(items))
			return Report{Job: name, Trigger: TriggerManual, Err: err}, err
		}
		if items, err = decodeJSONItems(b, name, items); err == nil { // items_json.go
			flat, err = b.checkItems(name, items)
		}
		if err != nil {
			return Report{Job: name, Trigger: TriggerManual, Err: err}, err
		}
	}
	rep := s.execute(ctx, e, TriggerManual, time.Time{}, flat)
	return rep, rep.Err
}
