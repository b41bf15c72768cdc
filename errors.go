package cronguard

import "errors"

// Sentinel errors. Every error that cronguard returns or reports wraps one of
// these, so callers can branch with errors.Is; the message around it names the
// job and the offending value.
var (
	// ErrInvalidSpec: a schedule spec that cannot be parsed, including an
	// unknown CRON_TZ= or TZ= location.
	ErrInvalidSpec = errors.New("cronguard: invalid spec")
	// ErrDuplicateJob: Register was called twice with one name.
	ErrDuplicateJob = errors.New("cronguard: duplicate job")
	// ErrInvalidJob: Register was called with an empty (or blank) job name
	// or a nil Job, or with a Batch that misses Fetch, Process or Key, has a
	// negative Size, MaxBatches, Concurrency, PerSecond or MaxFailures, or a
	// PerSecond that is NaN or infinite (Batch.Run says the same). The
	// message names the job and the value.
	ErrInvalidJob = errors.New("cronguard: invalid job")
	// ErrInvalidOption: an option with a value out of range, such as a
	// non-positive LockTTL.
	ErrInvalidOption = errors.New("cronguard: invalid option")
	// ErrUnknownJob: a name that was never registered.
	ErrUnknownJob = errors.New("cronguard: unknown job")
	// ErrLocked: the job's run lock is held by another run, here or on
	// another instance.
	ErrLocked = errors.New("cronguard: job is locked")
	// ErrTickTaken: another run (usually another instance) already claimed
	// this scheduled tick or a newer one, or this instance ran it already
	// (a late second fire of one tick, after the process was paused).
	ErrTickTaken = errors.New("cronguard: tick already claimed")
	// ErrOverlap: a scheduled run was skipped because the previous run of the
	// job is still going in this process.
	ErrOverlap = errors.New("cronguard: previous run still going")
	// ErrLockLost: the run lock could not be extended; the run's context is
	// canceled with this cause.
	ErrLockLost = errors.New("cronguard: lock lost")
	// ErrKilled: the job's kill switch is off.
	ErrKilled = errors.New("cronguard: job is switched off")
	// ErrRunaway: a batch returned an item already handled in this run.
	ErrRunaway = errors.New("cronguard: runaway batch")
	// ErrErrorBudget: more items failed in one run than Batch.MaxFailures allows.
	ErrErrorBudget = errors.New("cronguard: item error budget exhausted")
	// ErrInvalidItems: RunManually got items for a job that is not a Batch,
	// or an item of the wrong type (or JSON that does not decode to it). The
	// message names the job and the item.
	ErrInvalidItems = errors.New("cronguard: invalid items")
	// ErrPanic: the job panicked; the run failed and the scheduler goes on.
	ErrPanic = errors.New("cronguard: job panicked")
	// ErrTimeout: the run exceeded its Timeout; the run's context is
	// canceled with this cause.
	ErrTimeout = errors.New("cronguard: run timed out")
	// ErrStopped: the scheduler was stopped.
	ErrStopped = errors.New("cronguard: scheduler stopped")
	// ErrStarted: Start was called on a scheduler that is already running.
	ErrStarted = errors.New("cronguard: scheduler already started")
	// ErrNotFlippable: the kill switch cannot be flipped from here: it is
	// not a FlippableKillSwitch, or its SetEnabled returned this error to
	// say where the flag is flipped (Unleash: in Unleash itself).
	ErrNotFlippable = errors.New("cronguard: kill switch cannot be flipped here")
	// ErrInvalidFlag: a kill switch flag name that is not valid UTF-8 (the
	// job name, or the name given with Flag); it would be stored or sent
	// under another name.
	ErrInvalidFlag = errors.New("cronguard: invalid flag name")
	// ErrBackend: a store could not answer. The Locker, the tick claim, or
	// the kill switch with no earlier answer: the run is skipped, and the
	// SkipError's Cause says which store and why (a kill switch's names the
	// job and the flag; JobInfo.EnabledErr carries the same). The history
	// store: a failed or dropped write is an EventHistory naming the job,
	// never a failed run, and a failed read is History's error.
	ErrBackend = errors.New("cronguard: store unavailable")
)
