package cronguard

import (
	"hash/maphash"
	"math"
	"math/bits"
)

// keySet is the runaway guard's memory of the keys one run has fetched: an
// exact set of strings, cheaper than a map[string]T once the keys outgrow
// the CPU caches (a run of 1,000,000 items).
//
// It is an open-addressing table of 8-byte slots, linear probing, over the
// keys kept in the order they came. A slot holds the top 32 bits of the
// key's 64-bit hash (hash/maphash, with a seed of the set's own) and the
// key's index in keys, plus one; 0 is an empty slot. A key's home slot is
// the top bits of its hash, so the table doubles without hashing a key
// again. Exact: a slot whose hash bits match is a hit only when its key
// equals the key (==), so keys whose hashes collide, in part or in full,
// are both kept and told apart; the hash only picks where to look.
//
// Memory: 16 bytes a key in keys (the string header; the set keeps the
// key's bytes alive until the run ends) and 8 bytes a slot, the table at
// most 3/4 full and, presized or grown, more than 3/8 full for the keys it
// was sized for: 27 to 37 bytes a key (32 MB for 1,000,000 keys, presized;
// up to 4 bytes a key more once keys grows past the hint), plus the keys'
// own bytes. A table holds at most keySetLimit keys; the rest go to a map.
//
// Tried and measured slower (BenchmarkKeySet, and the whole run with
// BenchmarkBatchPerItem): map[string]T, with a lookup and a write or one
// write and len; 1-byte tags apart from 4-byte indexes (every key is added,
// so its index's line is written anyway); the keys' bytes copied into one
// pointer-free buffer (the copy costs more than the garbage collector
// saves).
type keySet struct {
	seed  maphash.Seed
	hash  func(maphash.Seed, string) uint64 // nil: maphash.String; a test's, to force collisions
	slots []uint64                          // tag<<32 | index+1, 0: empty; len a power of 2
	shift uint                              // 64 - log2(len(slots)): a hash's top bits are its home
	keys  []string                          // every key added, by index
	limit int                               // the most keys slots index (keySetLimit; lower in tests)
	more  map[string]struct{}               // the keys past limit
	hs    []uint64                          // addAll's hashes, reused
	isNew []bool                            // addAll's answers, reused
	sink  uint64                            // what addAll's early reads of slots load, kept so they are made
}

// keySetLimit is the most keys one table indexes: an index+1 fits in 32
// bits and the table, at most 2^32 slots, stays under 3/4 full (on a
// 32-bit platform, 2^26 keys: address space runs out first).
const keySetLimit = min(3<<30, math.MaxInt>>5)

// minKeySlots is the smallest table: 1 KB.
const minKeySlots = 128

// newKeySet returns a set with room for hint keys before it grows.
func newKeySet(hint int) keySet {
	s := keySet{seed: maphash.MakeSeed(), limit: keySetLimit}
	n := minKeySlots
	for n/4*3 < min(hint, keySetLimit) {
		n <<= 1
	}
	s.slots = make([]uint64, n)
	s.shift = uint(64 - bits.TrailingZeros(uint(n)))
	s.keys = make([]string, 0, min(hint, keySetLimit))
	return s
}

// len returns the number of keys in the set.
func (s *keySet) len() int { return len(s.keys) + len(s.more) }

// add adds k and reports whether it was new.
func (s *keySet) add(k string) bool { return s.addHashed(k, s.hashOf(k)) }

// hashOf returns k's hash: maphash.String's, or the test's hash.
func (s *keySet) hashOf(k string) uint64 {
	if s.hash != nil {
		return s.hash(s.seed, k)
	}
	return maphash.String(s.seed, k)
}

// addAll adds keys in order and returns, for each, whether it was new (a
// key twice in keys is new the first time only). The slice is the set's,
// valid until the next call.
//
// It hashes every key and reads each one's home slot first, so that the
// cache misses of a large table overlap (the reads are independent) instead
// of coming one after another; the adds that follow then find the slots in
// the cache.
func (s *keySet) addAll(keys []string) []bool {
	hs := s.hs[:0]
	for _, k := range keys {
		hs = append(hs, s.hashOf(k))
	}
	var sink uint64
	for _, h := range hs {
		sink += s.slots[h>>s.shift]
	}
	isNew := s.isNew[:0]
	room := min(s.limit, len(s.slots)/4*3) // the keys the table takes before it grows
	for i, k := range keys {
		h := hs[i]
		if j := h >> s.shift; s.slots[j] == 0 && len(s.keys) < room { // addHashed's common case, inline
			s.keys = append(s.keys, k)
			s.slots[j] = h>>32<<32 | uint64(len(s.keys))
			isNew = append(isNew, true)
			continue
		}
		isNew = append(isNew, s.addHashed(k, h))
		room = min(s.limit, len(s.slots)/4*3)
	}
	s.hs, s.isNew, s.sink = hs, isNew, sink
	return isNew
}

// addHashed adds k, whose hash is h, and reports whether it was new.
func (s *keySet) addHashed(k string, h uint64) bool {
	tag := h >> 32
	mask := uint64(len(s.slots) - 1)
	for i := h >> s.shift; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == 0 {
			return s.insert(k, tag, i)
		}
		if v>>32 == tag && s.keys[uint32(v)-1] == k {
			return false
		}
	}
}

// insert adds k, not in the table, at its free slot i, or to more once the
// table is at its limit (more is looked in only then).
func (s *keySet) insert(k string, tag, i uint64) bool {
	if len(s.keys) >= s.limit {
		if s.more == nil {
			s.more = make(map[string]struct{})
		}
		n := len(s.more)
		s.more[k] = struct{}{}
		return len(s.more) > n
	}
	s.keys = append(s.keys, k)
	s.slots[i] = tag<<32 | uint64(len(s.keys))
	if len(s.keys) > len(s.slots)/4*3 {
		s.grow()
	}
	return true
}

// grow doubles the table. A slot's tag is the top 32 bits of its key's
// hash, its home in any table of at most 2^32 slots: no key is hashed again.
func (s *keySet) grow() {
	old := s.slots
	s.slots = make([]uint64, 2*len(old))
	s.shift--
	mask := uint64(len(s.slots) - 1)
	for _, v := range old {
		if v == 0 {
			continue
		}
		i := (v >> 32) >> (s.shift - 32)
		for s.slots[i] != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = v
	}
}

// runKeys is what the runaway guard knows of the keys fetched in one run.
// Only the keys that failed need more than membership, so they alone cost
// a map entry.
type runKeys struct {
	fetched keySet            // every key fetched in this run
	failed  map[string]seenAs // the fetched keys whose item failed or was cut short
}

// seenAs is what the runaway guard knows of a key that failed in this run.
type seenAs uint8

const (
	// seenFailed: its Process failed (or it was cut short) in an earlier
	// batch; it may come back, and is not retried.
	seenFailed seenAs = iota + 1
	// seenFailedAgain: a seenFailed key fetched again in this batch; a
	// second copy in the batch is a runaway. settle makes it seenFailed.
	seenFailedAgain
)

// newRunKeys returns the guard's state for a run, with room for hint keys.
func newRunKeys(hint int) *runKeys { return &runKeys{fetched: newKeySet(hint)} }

// fail records that k, fetched, failed or was cut short.
func (r *runKeys) fail(k string) {
	if r.failed == nil {
		r.failed = make(map[string]seenAs)
	}
	r.failed[k] = seenFailed
}
