package cronguard

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/robfig/cron/v3"
)

// Scheduler runs registered jobs on their cron specs through the guard chain
// (see the package documentation). Create it with New, add jobs with
// Register, then Start; Stop ends it. All methods are safe for concurrent use.
type Scheduler struct {
	cfg  config
	cron *cron.Cron

	mu    sync.Mutex
	jobs  map[string]*entry
	state lifecycle
	wg    runGate // one per run going now (rungate.go)

	base       context.Context // parent of every run; canceled by Stop
	cancelBase context.CancelCauseFunc

	// The call budget of the Locker calls of runs no middleware or caller
	// derived a context for (budget.go): claims end with s.base, releases
	// outlive it, as a release does.
	claimBudget, releaseBudget *sharedBudget

	flags flagMemory // last known kill switch answers

	history historyRecorder // history_writer.go
	runs    runRegistry     // the runs going now, for Stop to cancel (run.go)
}

type lifecycle int

const (
	created lifecycle = iota
	started
	stopped
)

// Option configures a Scheduler in New.
type Option func(*config) error

type config struct {
	locker      Locker
	killSwitch  KillSwitch
	checkpoints CheckpointStore
	loc         *time.Location
	logger      *slog.Logger
	observers   []func(Event)
	middleware  []Middleware
	instance    string
	prefix      string
	failOpen    bool
	killPoll    time.Duration
	budget      time.Duration
	stopGrace   time.Duration
	redis       []redis.UniversalClient // set by WithRedis; turned into backends in New
	owned       []io.Closer             // backends New made; closed by Stop
	history     historyConfig           // history.go
	given       []string                // names of the options given, for the Redis backends (redis.go)
	resync      time.Duration           // Redis kill switch only; set by tests
	defaultOff  bool                    // Redis kill switch only; set by tests
}

// WithLocker sets the store of tick claims and run locks. The default is
// NewMemoryLocker's, which coordinates this process only.
func WithLocker(l Locker) Option {
	return func(c *config) error {
		c.saw("WithLocker")
		if isNil(l) {
			return fmt.Errorf("%w: WithLocker(nil)", ErrInvalidOption)
		}
		c.locker = l
		return nil
	}
}

// WithKillSwitch sets the kill switch. The default is NewMemoryKillSwitch's,
// with every job on.
func WithKillSwitch(ks KillSwitch) Option {
	return func(c *config) error {
		c.saw("WithKillSwitch")
		if isNil(ks) {
			return fmt.Errorf("%w: WithKillSwitch(nil)", ErrInvalidOption)
		}
		c.killSwitch = ks
		return nil
	}
}

// WithCheckpointStore sets where Batch keyset cursors are kept between runs
// (Batch.Checkpoint). The default keeps them in memory.
func WithCheckpointStore(cs CheckpointStore) Option {
	return func(c *config) error {
		c.saw("WithCheckpointStore")
		if isNil(cs) {
			return fmt.Errorf("%w: WithCheckpointStore(nil)", ErrInvalidOption)
		}
		c.checkpoints = cs
		return nil
	}
}

// WithLocation sets the time zone of specs that have no CRON_TZ= prefix.
// The default is time.Local.
func WithLocation(loc *time.Location) Option {
	return func(c *config) error {
		c.saw("WithLocation")
		if loc == nil {
			return fmt.Errorf("%w: WithLocation(nil)", ErrInvalidOption)
		}
		c.loc = loc
		return nil
	}
}

// WithLogger sets the logger events go to. The default is slog.Default();
// slog.New(slog.DiscardHandler) makes the scheduler quiet. NewRedisKillSwitch
// takes it too: where it logs losing and regaining Redis.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		c.saw("WithLogger")
		if l == nil {
			return fmt.Errorf("%w: WithLogger(nil)", ErrInvalidOption)
		}
		c.logger = l
		return nil
	}
}

// WithObserver adds a function that receives every Event. It may be given
// more than once (a metrics collector and your own hook, say): each observer
// gets every event, in the order given. It is called synchronously from the
// run that raised the event, possibly from several runs at once: keep it
// quick and safe for concurrent use. A panic in an observer is logged and
// does not reach the run or the other observers.
func WithObserver(fn func(Event)) Option {
	return func(c *config) error {
		if fn == nil {
			return fmt.Errorf("%w: WithObserver(nil)", ErrInvalidOption)
		}
		c.observers = append(c.observers, fn)
		return nil
	}
}

// WithMiddleware adds middleware that wraps every job outermost, before the
// guards. The first given is the outermost.
func WithMiddleware(mw ...Middleware) Option {
	return func(c *config) error {
		c.saw("WithMiddleware")
		for i, m := range mw {
			if m == nil {
				return fmt.Errorf("%w: WithMiddleware: middleware %d is nil", ErrInvalidOption, i)
			}
		}
		c.middleware = append(c.middleware, mw...)
		return nil
	}
}

// WithInstanceID names this instance in claims, reports and events. The
// default is hostname-pid. NewRedisLocker and NewRedlock take it too: the
// owner named in their lock values, so a run that finds a lock taken can
// say who holds it.
func WithInstanceID(id string) Option {
	return func(c *config) error {
		c.saw("WithInstanceID")
		if id == "" {
			return fmt.Errorf("%w: WithInstanceID(\"\")", ErrInvalidOption)
		}
		c.instance = id
		return nil
	}
}

// WithKeyPrefix sets the prefix of every key and channel the Redis backends
// use (default "cronguard:"): those WithRedis makes, and each Redis
// backend's constructor takes it. Services that share a Redis but not their
// jobs need different prefixes.
func WithKeyPrefix(p string) Option {
	return func(c *config) error {
		c.saw("WithKeyPrefix")
		c.prefix = p
		return nil
	}
}

// WithFailOpen makes a job run when its kill switch store cannot answer and
// no earlier answer is known. By default such a job does not run.
func WithFailOpen() Option {
	return func(c *config) error {
		c.saw("WithFailOpen")
		c.failOpen = true
		return nil
	}
}

// WithKillPoll sets how often a HardKill job's switch is re-read while the
// job runs (default 100ms): a fallback, since the memory and Redis switches
// push a flip to the run at once.
func WithKillPoll(d time.Duration) Option {
	return func(c *config) error {
		c.saw("WithKillPoll")
		if d <= 0 {
			return fmt.Errorf("%w: WithKillPoll %s: must be positive", ErrInvalidOption, d)
		}
		c.killPoll = d
		return nil
	}
}

// WithCallBudget bounds every call to the lock and flag stores (default 2s),
// so an unreachable store costs a tick at most this long, plus two smaller
// bounds: a scheduled claim's deadline is shared by the claims that start
// within a sixteenth of the budget (at most 10 ms later than its own, see
// budget.go), and a Redis claim that timed out then deletes the lock it may
// have taken within a quarter of the locker's own budget. Each Redis
// backend's constructor takes it too: there it bounds a call whose context
// has no deadline (a caller's deadline is kept as it is) and the kill
// switch's background reads.
func WithCallBudget(d time.Duration) Option {
	return func(c *config) error {
		c.saw("WithCallBudget")
		if d <= 0 {
			return fmt.Errorf("%w: WithCallBudget %s: must be positive", ErrInvalidOption, d)
		}
		c.budget = d
		return nil
	}
}

// New returns a Scheduler. Without options it runs on embedded in-memory
// backends: good for one process, with no Redis needed.
func New(opts ...Option) (*Scheduler, error) {
	cfg := config{
		loc:       time.Local,
		logger:    slog.Default(),
		prefix:    defaultKeyPrefix,
		killPoll:  100 * time.Millisecond,
		budget:    defaultCallBudget,
		stopGrace: 5 * time.Second,
	}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrInvalidOption)
		}
		if err := opt(&cfg); err != nil {
			return nil, err
		}
	}
	if cfg.instance == "" {
		cfg.instance = defaultInstanceID()
	}
	if err := cfg.useRedis(); err != nil {
		return nil, err
	}
	if cfg.locker == nil {
		cfg.locker = NewMemoryLocker()
	}
	if cfg.killSwitch == nil {
		cfg.killSwitch = NewMemoryKillSwitch()
	}
	if cfg.checkpoints == nil {
		cfg.checkpoints = newMemoryCheckpoints()
	}
	base, cancel := context.WithCancelCause(context.Background())
	s := &Scheduler{
		cfg:  cfg,
		cron: cron.New(cron.WithLocation(cfg.loc)),
		jobs: map[string]*entry{},
		base: base,
	}
	s.claimBudget = newSharedBudget(base, cfg.budget)
	s.releaseBudget = newSharedBudget(context.Background(), cfg.budget)
	s.cancelBase = func(cause error) { cancel(cause); s.runs.cancelAll(cause) } // run.go
	return s, nil
}

// Register adds a job under a unique name, to run on spec. It may be called
// before or after Start. spec has 5 fields (minute hour dom month dow), an
// optional leading seconds field, or a descriptor (@hourly, @every 90s), and
// may start with CRON_TZ=Zone or TZ=Zone.
func (s *Scheduler) Register(name, spec string, job Job, opts ...JobOption) error {
	e, err := s.newEntry(name, spec, job, opts)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == stopped {
		return fmt.Errorf("%w: cannot register job %q", ErrStopped, name)
	}
	if _, dup := s.jobs[name]; dup {
		return fmt.Errorf("%w: %q is already registered", ErrDuplicateJob, name)
	}
	s.jobs[name] = e
	s.cron.Schedule(&e.ticks, (*cronFire)(e))
	return nil
}

func (s *Scheduler) newEntry(name, spec string, job Job, opts []JobOption) (*entry, error) {
	if strings.TrimSpace(name) == "" {
		return nil, fmt.Errorf("%w: empty job name %q", ErrInvalidJob, name)
	}
	if isNil(job) {
		return nil, fmt.Errorf("%w: job %q: nil Job", ErrInvalidJob, name)
	}
	sched, err := parseSpec(spec, s.cfg.loc)
	if err != nil {
		return nil, fmt.Errorf("job %q: %w", name, err)
	}
	cfg := jobConfig{lockTTL: defaultLockTTL, flag: name}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: job %q: nil JobOption", ErrInvalidOption, name)
		}
		if err := opt(&cfg); err != nil {
			return nil, fmt.Errorf("job %q: %w", name, err)
		}
	}
	if !utf8.ValidString(cfg.flag) {
		// JSON, the admin API and other stores would turn it into U+FFFD:
		// another flag's name.
		return nil, fmt.Errorf("%w: job %q: flag %q is not valid UTF-8 (the flag is the job name unless Flag names it)", ErrInvalidFlag, name, cfg.flag)
	}
	e := &entry{s: s, name: name, spec: spec, job: job, cfg: cfg, ticks: tickSchedule{inner: sched, loc: s.cfg.loc}}
	if cfg.catchUp {
		e.extra = &entryExtra{catchUp: new(catchUpState)} // only CatchUp jobs pay for it
	}
	if b := e.batch(); b != nil {
		if err := b.validate(name); err != nil {
			return nil, err
		}
	}
	if err := s.buildChain(e); err != nil {
		return nil, err
	}
	return e, nil
}

// Start starts firing the registered jobs. It does not block and does not
// wait for any store: a store that cannot be reached shows as skipped ticks.
func (s *Scheduler) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case started:
		return ErrStarted
	case stopped:
		return fmt.Errorf("%w: cannot start again", ErrStopped)
	}
	s.state = started
	s.cron.Start()
	return nil
}

// Stop stops firing, then waits for the runs going now (scheduled and
// manual) to end. When ctx ends first it cancels their contexts (cause
// ErrStopped), waits a grace of 5s more for them to return, and returns an
// error wrapping ctx's cause that names the jobs it canceled — and says
// which were still running when the grace ran out (Stop then returns
// without them). After the runs it writes the history entries still queued
// (for at most 5s or until ctx ends), waits for Redlock calls still on
// their way to a slow server (each within the call budget) and closes the
// backends it made: the kill switch WithRedis made waits for a
// subscription being dialed, up to the client's dial or read timeout
// (RedisKillSwitch.Close). A stopped scheduler leaves no goroutine behind
// and cannot be started again. Stop may be called more than once.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.mu.Lock()
	wasStarted := s.state == started
	s.state = stopped
	s.wg.close() // no run starts from here on
	s.mu.Unlock()
	defer s.closeOwned()
	// After the runs (defers run last first): their last entries are written.
	defer s.history.close(ctx, s)
	// Calls to slow Redlock servers that outlived their run, each within the budget.
	defer drainLocker(s.cfg.locker)
	var cronDone <-chan struct{} // nil unless started
	if wasStarted {
		// robfig's Done waits for its job goroutines, which are our runs:
		// wait on it only once our own runs have ended.
		cronDone = s.cron.Stop().Done()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancelBase(ErrStopped)
		waitClosed(cronDone)
		return nil
	case <-ctx.Done():
	}
	running := s.runningJobs()
	if len(running) == 0 { // ctx ended before we looked, with nothing running
		<-done // the last run has untracked; wg.Done follows at once
		s.cancelBase(ErrStopped)
		waitClosed(cronDone)
		return nil
	}
	s.cancelBase(fmt.Errorf("%w: %w", ErrStopped, context.Cause(ctx)))
	grace := time.NewTimer(s.cfg.stopGrace)
	defer grace.Stop()
	select {
	case <-done:
		waitClosed(cronDone)
		return fmt.Errorf("cronguard: stop: %w; canceled jobs: %s", context.Cause(ctx), strings.Join(running, ", "))
	case <-grace.C:
	}
	return fmt.Errorf("cronguard: stop: %w; canceled jobs still running after the %s grace: %s",
		context.Cause(ctx), s.cfg.stopGrace, strings.Join(running, ", "))
}

// waitClosed waits for ch unless it is nil.
func waitClosed(ch <-chan struct{}) {
	if ch != nil {
		<-ch
	}
}

// closeOwned closes the backends New made (WithRedis), once.
func (s *Scheduler) closeOwned() {
	s.mu.Lock()
	owned := s.cfg.owned
	s.cfg.owned = nil
	s.mu.Unlock()
	for _, c := range owned {
		_ = c.Close()
	}
}

func (s *Scheduler) runningJobs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for n, e := range s.jobs {
		if e.active.Load() > 0 {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// JobInfo describes a registered job, for dashboards and the admin API.
type JobInfo struct {
	Name    string    `json:"name"`
	Spec    string    `json:"spec"`
	Flag    string    `json:"flag"`
	Overlap string    `json:"overlap"`       // "skip" (the default), "queue" (QueueOverlap) or "allow" (AllowOverlap)
	Prev    time.Time `json:"prev,omitzero"` // last tick fired here
	Next    time.Time `json:"next"`          // next tick by the spec
	Enabled bool      `json:"enabled"`
	// EnabledErr is set when the kill switch could not answer cleanly (store
	// down or broken, a value that cannot be read, a degraded Redis
	// subscription); Enabled then holds the value the next run would act on
	// (the last known value, see WithFailOpen).
	EnabledErr error `json:"-"`
	// EnabledBy, EnabledReason and EnabledAt say who flipped the flag last,
	// why and when, when the kill switch records it (the memory and Redis
	// switches; Unleash gives the toggle's name as the reason); empty for a
	// flag never flipped, or a switch that keeps no record. They come from
	// the switch's local state, never a store.
	EnabledBy     string    `json:"enabled_by,omitempty"`
	EnabledReason string    `json:"enabled_reason,omitempty"`
	EnabledAt     time.Time `json:"enabled_at,omitzero"`
	Running       int       `json:"running"` // runs going in this process
	Last          *Report   `json:"last,omitempty"`
}

// Jobs returns every registered job, sorted by name.
func (s *Scheduler) Jobs() []JobInfo {
	s.mu.Lock()
	names := make([]string, 0, len(s.jobs))
	for n := range s.jobs {
		names = append(names, n)
	}
	s.mu.Unlock()
	slices.Sort(names)
	infos := make([]JobInfo, 0, len(names))
	for _, n := range names {
		if info, err := s.Job(n); err == nil {
			infos = append(infos, info)
		}
	}
	return infos
}

// Job describes one registered job, or returns ErrUnknownJob.
func (s *Scheduler) Job(name string) (JobInfo, error) {
	e, err := s.lookup(name)
	if err != nil {
		return JobInfo{}, err
	}
	running := int(e.active.Load())
	ctx, cancel := context.WithTimeout(s.base, s.cfg.budget)
	defer cancel()
	on, flagErr := s.flagInfo(ctx, name, e.cfg.flag)
	now := time.Now().In(s.cfg.loc)
	info := JobInfo{
		Name: name, Spec: e.spec, Flag: e.cfg.flag, Overlap: e.cfg.overlap.String(),
		Prev: e.ticks.last(), Next: e.sched().Next(now),
		Enabled: on, EnabledErr: flagErr,
		Running: running, Last: e.lastReport(),
	}
	info.EnabledBy, info.EnabledReason, info.EnabledAt = s.flipped(e.cfg.flag)
	return info, nil
}

// SetEnabled flips the job's kill switch flag: off stops the job before its
// next run or batch, on every instance the switch reaches. It returns
// ErrNotFlippable when the switch is flipped elsewhere (Unleash).
//
// When the store cannot be written (down, or its key broken) SetEnabled
// returns the error. An off is still remembered as this instance's last
// known value: while the store cannot answer reads either, the fail policy
// keeps the job off here (and a HardKill run stops); the first clean answer
// from the store replaces it. A failed on changes nothing.
func (s *Scheduler) SetEnabled(ctx context.Context, name string, on bool, reason string) error {
	e, err := s.lookup(name)
	if err != nil {
		return err
	}
	return s.flip(ctx, e, on, reason)
}

func (s *Scheduler) lookup(name string) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.jobs[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownJob, name)
	}
	return e, nil
}

// isNil reports whether v is nil or a nil pointer, map, func, ... inside an
// interface (a typed nil), which would panic when used.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch v := reflect.ValueOf(v); v.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Chan, reflect.Interface, reflect.Slice:
		return v.IsNil()
	}
	return false
}
