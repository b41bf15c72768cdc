// Package cronguard runs periodic background jobs that are safe by default:
// a job registered in main() runs once per scheduled tick across all the
// instances of a service, never overlaps itself, works in bounded batches,
// and can be stopped by an operator within a second, without a release.
//
// A Scheduler wraps github.com/robfig/cron/v3 and runs every job through a
// fixed chain of guards, each of which runs the rest or skips the run:
//
//	scheduled: recover → your middleware → kill switch → no-overlap → tick claim + run lock → timeout → job
//	manual:    recover → your middleware → run lock → timeout → job
//
// The guards, outermost first:
//
//   - recover: a panic becomes a failed Report wrapping ErrPanic, with the
//     stack in the finished Event; the scheduler goes on.
//   - kill switch: KillSwitch.Enabled is asked before every scheduled run and
//     again before every batch of a Batch job. The flag is the job name
//     unless Flag says otherwise. When the store cannot answer, the last
//     answer holds; with none the job does not run (WithFailOpen to invert).
//   - no-overlap: a tick that comes while the previous run goes is skipped
//     (the default), queued (QueueOverlap) or run at once (AllowOverlap),
//     within this process; the run lock covers other instances.
//   - tick claim and run lock, one Locker.Claim call: each job has one
//     claim mark, the latest tick claimed, moved only forward to a newer
//     tick, so a late, clock-skewed or paused instance skips its tick. A
//     fire stands for the latest tick the spec names (the job reads it as
//     ReportFrom(ctx, nil).Tick), never a time it does not name. The same call takes the run lock (not for
//     AllowOverlap) with a TTL (LockTTL, default 30s), extended every TTL/3
//     by a watchdog while the job runs. A failed extension cancels the
//     run's context with cause ErrLockLost. Ticks that no instance claimed
//     are reported once, as EventMissed.
//   - timeout: Timeout cancels the run with cause ErrTimeout.
//
// RunManually runs a job, or chosen items of a Batch job, now. It skips cron,
// the tick claim and the kill switch, never the lock: a manual run and a
// scheduled run of one job never overlap.
//
// # Backends
//
// New without options uses embedded in-memory backends (NewMemoryLocker,
// NewMemoryKillSwitch): right for one process and for tests. For several
// instances, WithRedis(rdb) puts locks, claim marks and the kill switch in
// Redis; the module github.com/cronguard/cronguard/unleash reads the kill
// switch from Unleash (unleash.NewUnleashKillSwitch), so that the Unleash
// client is linked only into programs that use it.
//
// # What a run reports
//
// Every run ends in a Report (trigger, tick, batches, items processed and
// failed, its error), and raises Events (started, skipped, batch done, item
// failed, lock lost, runaway, missed, finished) that go to the WithObserver
// function and to log/slog. Report.Err says how the run ended: nil, a
// *SkipError for a run that did not start (middleware tells a skip from a
// failure with errors.As), or an error wrapping the sentinel of its end;
// Report.Outcome names it in one word. Every error a caller
// can act on wraps a sentinel (ErrInvalidSpec, ErrLocked, ErrRunaway, ...)
// for errors.Is, in a message that names the job and the offending value.
//
// # Guarantees and their limits
//
// A job's context is canceled when its lock is lost, but code that ignores
// its context keeps running: a lock can only ask. Redis locks are leases, not
// consensus: after a long GC pause or a network partition two holders can
// overlap briefly; use the fencing token (Report.Token, from ReportFrom) where a
// downstream store can check it.
package cronguard
