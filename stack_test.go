package cronguard

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStackNeedLearns walks stackNeed through what a job's runs teach it:
// one run that grew its stack is not enough, two in a row are; a job that
// needs a grown stack gets one at the top but for every stackProbeEvery-th
// run, which unlearns it when that run does without.
func TestStackNeedLearns(t *testing.T) {
	var s stackNeed
	run := func(moved bool) (grown bool) {
		grown = s.enter()
		s.leave(grown, moved)
		return grown
	}
	deep := func() bool { return s.n.Load()&stackDeep != 0 }

	if run(false) || deep() {
		t.Fatal("a new job's run was given a grown stack")
	}
	// Now and then a run grows its stack whatever the job: not learned.
	for i := range 10 {
		if run(i%2 == 0) {
			t.Fatalf("run %d: given a grown stack after runs that grew every other time", i)
		}
	}
	if deep() {
		t.Fatal("learned from runs that did not grow twice in a row")
	}
	run(true)
	run(true)
	if !deep() {
		t.Fatal("two runs in a row grew the stack, not learned")
	}
	// From now on the runs are given a grown stack, but for a probe.
	probes := 0
	for range 2 * stackProbeEvery {
		if grown := s.enter(); !grown {
			probes++
			s.leave(false, true) // the probe grew it: still needed
		} else {
			s.leave(true, false) // grown at the top: nothing to learn
		}
	}
	if probes != 2 || !deep() {
		t.Fatalf("%d probes in %d runs (deep %v), want 2 and still deep", probes, 2*stackProbeEvery, deep())
	}
	// The job changed: the next probe does without, and it is unlearned.
	for s.enter() {
		s.leave(true, false)
	}
	s.leave(false, false)
	if deep() {
		t.Fatal("a probe that did not grow the stack left the job deep")
	}
	if run(false) {
		t.Fatal("the run after an unlearning probe was given a grown stack")
	}
}

// bigFrame needs more stack than a scheduled run's body has before its
// goroutine's stack grows (see stack.go), even when the runtime starts
// goroutines with more than 2 KB, having seen bigger stacks in the tests.
//
//go:noinline
func bigFrame() {
	var b [64 << 10]byte
	runtime.KeepAlive(&b)
}

// TestAllocsStackLearnedPerJob (named for scripts/test's run without
// -race, which the frames depend on) fires two jobs as robfig/cron does, each
// on a goroutine of its own, in two seconds in a row: the one whose body
// needs a grown stack learns it, the no-op does not.
func TestAllocsStackLearnedPerJob(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes the frames; scripts/test runs this test again without -race")
	}
	s := quietScheduler(t)
	var runs atomic.Int32
	jobs := map[string]Job{
		"big":  JobFunc(func(context.Context) error { bigFrame(); runs.Add(1); return nil }),
		"noop": JobFunc(func(context.Context) error { runs.Add(1); return nil }),
	}
	var entries []*entry
	for name, job := range jobs {
		if err := s.Register(name, "* * * * * *", job); err != nil {
			t.Fatal(err)
		}
		e, err := s.lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, e)
	}
	for range 2 {
		for _, e := range entries {
			e.ticks.Next(time.Now()) // as robfig/cron asks at its start and after each fire
		}
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 10*time.Millisecond)))
		var wg sync.WaitGroup
		for _, e := range entries {
			wg.Go((*cronFire)(e).Run)
		}
		wg.Wait()
	}
	if n := runs.Load(); n != 4 {
		t.Fatalf("%d runs, want 4 (two ticks of two jobs)", n)
	}
	for _, e := range entries {
		deep := e.stack.n.Load()&stackDeep != 0
		if deep != (e.name == "big") {
			t.Errorf("job %s: learned that its runs need a grown stack: %v", e.name, deep)
		}
	}
}
