package cronguard

import (
	"hash/maphash"
	"math/bits"
)

// keySet is the runaway guard's memory of the keys one run has fetched: an
// exact set of strings, cheaper than a map[string]T once the keys outgrow
// the CPU caches (a run of 1,000,000 items).
//
// It is an open-addressing table of 4-byte slots, linear probing, over the
// keys kept in the order they came (a repeat too, as the runaway guard
// reads a batch's keys from there; only the first copy is indexed). A slot
// holds a tag, the low byte of the key's 64-bit hash (hash/maphash, with a
// seed of the set's own), and the key's index in keys, plus one, in 24
// bits; 0 is an empty slot. A key's home slot is the top bits of its hash.
// Exact: a slot whose tag matches is a hit only when its key equals the
// key (==); the hash only picks where to look, so keys whose hashes
// collide, in part or in full, are both kept and told apart (a tag matches
// another key's about once in 256 slots looked at, which costs one
// comparison of keys).
//
// Memory: 16 bytes a key in keys (the string header, and as much for each
// repeat; the set keeps the key's bytes alive until the run ends) and 4
// bytes a slot, the table at most 3/4 full and, presized or grown, more
// than 3/8 full for the keys it was sized for: 22 to 27 bytes a key (24 MB
// for 1,000,000 keys, presized; up to 4 bytes a key more once keys grows
// past the hint), plus the keys' own bytes. The small table is the point:
// a run of 1,000,000 keys reads 8 MB of slots at random, not the 32 to 56
// MB of the layouts below. A table holds at most keySetLimit keys
// (16,777,215); the rest of a larger run go to a map (about 60 bytes a
// key, slower, still exact).
//
// Tried and measured slower (BenchmarkKeySet, and the whole run with
// BenchmarkBatchPerItem): map[string]T, with a lookup and a write or one
// write and len (56 bytes a key); 8-byte slots with a 32-bit tag (32 bytes
// a key, 25 ns an item more in one run of 1,000,000); 1-byte tags apart
// from 4-byte indexes (every key is added, so its index's line is written
// anyway); the keys' bytes copied into one pointer-free buffer (the copy
// costs more than the garbage collector saves).
type keySet struct {
	seed  maphash.Seed
	hash  func(maphash.Seed, string) uint64 // nil: maphash.String; a test's, to force collisions
	slots []uint32                          // tag<<24 | index+1, 0: empty; len a power of 2
	shift uint                              // 64 - log2(len(slots)): a hash's top bits are its home
	keys  []string                          // every key added, in order, repeats too; slots index the first of each
	n     int                               // the keys slots index
	limit int                               // keys from this index on are not indexed (keySetLimit; lower in tests)
	more  map[string]struct{}               // the keys past limit
	hs    []uint64                          // addAll's hashes, reused
	isNew []bool                            // addAll's answers, reused
	sink  uint32                            // what addAll's early reads of slots load, kept so they are made
}

// keySetLimit is the most keys one table indexes: an index+1 fits in a
// slot's 24 bits.
const keySetLimit = 1<<24 - 1

// minKeySlots is the smallest table: 512 bytes.
const minKeySlots = 128

// newKeySet returns a set with room for hint keys before it grows.
func newKeySet(hint int) keySet {
	s := keySet{seed: maphash.MakeSeed(), limit: keySetLimit}
	n := minKeySlots
	for n/4*3 < min(hint, keySetLimit) {
		n <<= 1
	}
	s.slots = make([]uint32, n)
	s.shift = uint(64 - bits.TrailingZeros(uint(n)))
	s.keys = make([]string, 0, min(hint, keySetLimit))
	return s
}

// len returns the number of keys in the set.
func (s *keySet) len() int { return s.n + len(s.more) }

// add adds k and reports whether it was new.
func (s *keySet) add(k string) bool { return s.addAll([]string{k})[0] }

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
func (s *keySet) addAll(keys []string) []bool {
	_, isNew := addKeys(s, keys, func(k string) string { return k })
	return isNew
}

// addKeys adds the keys of items (key is called once an item, in order)
// and returns them, with, for each, whether it was new (a key twice in
// items is new the first time only). Both slices are the set's: the keys
// are read-only and stay valid, the answers until the next call.
//
// It hashes every key and reads each one's home slot first, so that the
// cache misses of a large table overlap (the reads are independent) instead
// of coming one after another; the adds that follow find the slots in the
// cache. The keys are kept where they are first written, in s.keys: a
// slot indexes the first copy of its key, later copies are never indexed.
func addKeys[T any](s *keySet, items []T, key func(T) string) ([]string, []bool) {
	start, hs := len(s.keys), s.hs[:0]
	for _, it := range items {
		k := key(it)
		s.keys = append(s.keys, k)
		hs = append(hs, s.hashOf(k))
	}
	s.hs = hs
	return s.keys[start:len(s.keys):len(s.keys)], s.index(start, hs)
}

// index indexes keys[start:], whose hashes are hs, and returns for each
// whether it was new.
func (s *keySet) index(start int, hs []uint64) []bool {
	var sink uint32
	for _, h := range hs {
		sink += s.slots[h>>s.shift]
	}
	isNew := s.isNew[:0]
	room := len(s.slots) / 4 * 3 // the keys the table takes before it grows
	for i, h := range hs {
		at := start + i
		if j := h >> s.shift; s.slots[j] == 0 && s.n < room && at < s.limit { // indexAt's common case, inline
			s.slots[j] = tagOf(h)<<24 | uint32(at+1)
			s.n++
			isNew = append(isNew, true)
			continue
		}
		isNew = append(isNew, s.indexAt(at, h))
		room = len(s.slots) / 4 * 3
	}
	s.isNew, s.sink = isNew, sink
	return isNew
}

// indexAt indexes keys[at], whose hash is h, unless an earlier copy is
// indexed, and reports whether it was new. Past the limit a new key goes
// to more.
func (s *keySet) indexAt(at int, h uint64) bool {
	k, tag, mask := s.keys[at], tagOf(h), uint64(len(s.slots)-1)
	i := h >> s.shift
	for ; s.slots[i] != 0; i = (i + 1) & mask {
		if v := s.slots[i]; v>>24 == tag && s.keys[v&indexMask-1] == k {
			return false
		}
	}
	if at >= s.limit {
		if s.more == nil {
			s.more = make(map[string]struct{})
		}
		n := len(s.more)
		s.more[k] = struct{}{}
		return len(s.more) > n
	}
	s.slots[i] = tag<<24 | uint32(at+1)
	s.n++
	if s.n > len(s.slots)/4*3 {
		s.grow(at)
	}
	return true
}

// grow doubles the table and indexes keys[:upto+1] again, hashing each
// (a table presized by the hint never grows): the first copy of each key,
// as before; the keys after upto are not indexed yet.
func (s *keySet) grow(upto int) {
	s.slots = make([]uint32, 2*len(s.slots))
	s.shift--
	s.n = 0
	mask := uint64(len(s.slots) - 1)
	for at, k := range s.keys[:min(upto+1, s.limit)] {
		h := s.hashOf(k)
		tag, i := tagOf(h), h>>s.shift
		for ; s.slots[i] != 0; i = (i + 1) & mask {
			if v := s.slots[i]; v>>24 == tag && s.keys[v&indexMask-1] == k {
				break // a later copy: not indexed
			}
		}
		if s.slots[i] == 0 {
			s.slots[i] = tag<<24 | uint32(at+1)
			s.n++
		}
	}
}

// indexMask is the index+1 part of a slot.
const indexMask = 1<<24 - 1

// tagOf returns the tag of hash h: its low byte, independent of the top
// bits that pick its home slot.
func tagOf(h uint64) uint32 { return uint32(h) & 0xff }

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
