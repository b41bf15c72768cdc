package cronguard

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// The keys of a job are built once: the claim path's lookups allocate
// nothing (they escaped and concatenated three keys on every call).
func TestRedisKeysCachedNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates on its own")
	}
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = c.Close() })
	l := rlLocker(t, c, WithKeyPrefix("app{1}:"))
	job := "nightly{x}%"
	want := []string{"app%7B1%7D:claim:{nightly%7Bx%7D%25}", "app%7B1%7D:lock:{nightly%7Bx%7D%25}", "app%7B1%7D:fence:{nightly%7Bx%7D%25}"}
	if got := l.claimKeys(job); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("claimKeys = %q, want %q", got, want)
	}
	n := testing.AllocsPerRun(100, func() {
		_ = l.claimKeys(job)
		_ = l.acquireKeys(job)
		_ = l.lockKey(job)
	})
	if n != 0 {
		t.Errorf("%.1f allocations per lookup of a job's keys; want 0", n)
	}
}

// The cache is bounded whatever names the Locker is called with: at most
// maxCachedJobs names, none longer than maxCachedName; every name gets the
// same keys cached or not.
func TestRedisKeyCacheBounded(t *testing.T) {
	var kc keyCache
	long := strings.Repeat("x", maxCachedName+1)
	for i := range 3*maxCachedJobs + 7 {
		job := fmt.Sprint("job-{", i, "}")
		got, want := kc.get("p:", job), newJobKeys("p:", job)
		if got.claim != want.claim || got.lock != want.lock || got.fence != want.fence {
			t.Fatalf("%s: cached %+v, built %+v", job, got, want)
		}
		if k := kc.get("p:", long); k.lock != "p:lock:{"+long+"}" {
			t.Fatalf("long name: %q", k.lock)
		}
	}
	entries := 0
	kc.m.Range(func(k, _ any) bool {
		entries++
		if len(k.(string)) > maxCachedName {
			t.Errorf("a name of %d bytes is cached", len(k.(string)))
		}
		return true
	})
	if entries > maxCachedJobs || entries != kc.n {
		t.Errorf("%d names cached (counted %d); want at most %d", entries, kc.n, maxCachedJobs)
	}
	if _, ok := kc.m.Load(fmt.Sprint("job-{", 3*maxCachedJobs+6, "}")); !ok {
		t.Error("the latest name is not cached")
	}
}

// The key cache's memory bound as its doc states it: names of braces
// (escaped to 3 bytes each in three keys) are its worst case.
func TestRedisKeyCacheHeapPerWorstCaseName(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's shadow memory counts too")
	}
	prefix := escapePrefix("cronguard:")
	for _, fill := range []string{"x", "{"} {
		var kc keyCache
		names := make([]string, maxCachedJobs)
		for i := range names {
			s := fmt.Sprintf("%06d", i)
			names[i] = s + strings.Repeat(fill, maxCachedName-len(s))
		}
		runtime.GC()
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		for _, job := range names {
			kc.get(prefix, job)
		}
		runtime.GC()
		runtime.ReadMemStats(&b)
		mb := float64(int64(b.HeapAlloc)-int64(a.HeapAlloc)) / 1e6
		t.Logf("names of %q: %.1f MB", fill, mb)
		if limit := map[string]float64{"x": 5, "{": 13}[fill]; mb > limit*1.15 {
			t.Errorf("names of %q: the cache holds %.1f MB; its doc says about %.0f MB", fill, mb, limit)
		}
		runtime.KeepAlive(&kc)
	}
}
