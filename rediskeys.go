package cronguard

import "sync"

// jobKeys are the Redis keys of one job (see NewRedisLocker, Keys). The
// slices are the KEYS of claimScript and acquireScript; they are shared by
// every call for the job and never changed (go-redis copies them).
type jobKeys struct {
	claim, lock, fence string
	claimKeys          []string // claim, lock, fence
	acquireKeys        []string // lock, fence
	boxed              [3]any   // claim, lock, fence as the batcher sends them (boxed once, not per call)
}

// newJobKeys builds the keys of job under the escaped prefix.
func newJobKeys(keyPrefix, job string) *jobKeys {
	tag := hashTag(job)
	k := &jobKeys{
		claim: keyPrefix + "claim:" + tag,
		lock:  keyPrefix + "lock:" + tag,
		fence: keyPrefix + "fence:" + tag,
	}
	k.claimKeys = []string{k.claim, k.lock, k.fence}
	k.acquireKeys = k.claimKeys[1:]
	k.boxed = [3]any{k.claim, k.lock, k.fence}
	return k
}

// maxCachedJobs and maxCachedName bound keyCache: at most 4,096 job
// names, each of at most 256 bytes, so with a short prefix about 5 MB, and
// 13 MB at worst (names of braces and %, which the hash tag escapes to 3
// bytes each: TestRedisKeyCacheHeapPerWorstCaseName), however many names the
// Locker is called with.
const (
	maxCachedJobs = 4096
	maxCachedName = 256
)

// keyCache keeps the keys of the jobs a locker is called for, so that the
// claim path does not escape and concatenate them on every call. The
// Locker can be called directly with any name, not only for registered
// jobs: the cache holds at most maxCachedJobs names (it is emptied when
// full, and refills with the names in use) and never a name longer than
// maxCachedName (its keys are built on each call). Lookups take no lock;
// mu orders the insertions, so that n counts the entries exactly.
type keyCache struct {
	m  sync.Map // job name → *jobKeys
	mu sync.Mutex
	n  int // entries in m; guarded by mu
}

// get returns job's keys, from the cache or newly built.
func (c *keyCache) get(keyPrefix, job string) *jobKeys {
	if k, ok := c.m.Load(job); ok {
		return k.(*jobKeys)
	}
	k := newJobKeys(keyPrefix, job)
	if len(job) > maxCachedName {
		return k
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= maxCachedJobs {
		c.m.Clear() // a bound, not a policy: the names in use come back
		c.n = 0
	}
	if old, loaded := c.m.LoadOrStore(job, k); loaded {
		return old.(*jobKeys)
	}
	c.n++
	return k
}

// jobKeys returns the keys of job (cached, see keyCache).
func (l *redisStore) jobKeys(job string) *jobKeys { return l.keys.get(l.keyPrefix, job) }

func (l *redisStore) claimKey(job string) string      { return l.jobKeys(job).claim }
func (l *redisStore) lockKey(job string) string       { return l.jobKeys(job).lock }
func (l *redisStore) fenceKey(job string) string      { return l.jobKeys(job).fence }
func (l *redisStore) claimKeys(job string) []string   { return l.jobKeys(job).claimKeys }
func (l *redisStore) acquireKeys(job string) []string { return l.jobKeys(job).acquireKeys }
