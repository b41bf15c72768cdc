package cronguard

import (
	"context"
	"errors"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// seenBenchKeys returns n distinct keys: "0" to n-1 in decimal.
func seenBenchKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
	}
	return keys
}

// BenchmarkKeySet compares, per key, ways to remember every key of a run
// of 10,000 or 1,000,000 keys (batches of 1,000, room reserved up front as
// keysHint does), each answering "was it new?" exactly:
//
//	map-state: map[string]uint8, a lookup then a write (the runaway guard
//	           before keySet)
//	map-len:   map[string]struct{}, one write, new if len grew
//	set-add:   keySet.add, one key at a time
//	set-all:   keySet.addAll, a batch at a time (what the guard calls)
//
// Each run includes making the set, as each Batch run does.
//
//	go test -run '^$' -bench KeySet -benchtime 5x -count 3 .
func BenchmarkKeySet(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		keys := seenBenchKeys(n)
		hint := min(n, maxKeysHint)
		variants := []struct {
			name string
			run  func() int
		}{
			{"map-state", func() int {
				m, fresh := make(map[string]uint8, hint), 0
				for _, k := range keys {
					if _, seen := m[k]; !seen {
						m[k] = 1
						fresh++
					}
				}
				return fresh
			}},
			{"map-len", func() int {
				m, fresh := make(map[string]struct{}, hint), 0
				for _, k := range keys {
					l := len(m)
					if m[k] = struct{}{}; len(m) > l {
						fresh++
					}
				}
				return fresh
			}},
			{"set-add", func() int {
				s, fresh := newKeySet(hint), 0
				for _, k := range keys {
					if s.add(k) {
						fresh++
					}
				}
				return fresh
			}},
			{"set-all", func() int {
				s, fresh := newKeySet(hint), 0
				for i := 0; i < len(keys); i += 1000 {
					for _, isNew := range s.addAll(keys[i:min(i+1000, len(keys))]) {
						if isNew {
							fresh++
						}
					}
				}
				return fresh
			}},
		}
		for _, v := range variants {
			b.Run(strconv.Itoa(n)+"/"+v.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if got := v.run(); got != n {
						b.Fatalf("%d new keys, want %d", got, n)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/key")
			})
		}
	}
}

// addAllNew adds keys with addAll and returns how many were new.
func addAllNew(s *keySet, keys []string) int {
	n := 0
	for _, isNew := range s.addAll(keys) {
		if isNew {
			n++
		}
	}
	return n
}

// With every key's hash the same (same tag, same home slot), the set still
// tells every key apart: a new key is new, a key added before is not. Only
// the exact comparison of keys can get this right.
func TestKeySetExactWhenEveryHashCollides(t *testing.T) {
	s := newKeySet(4) // grows: collisions across growth too
	s.hash = func(maphash.Seed, string) uint64 { return 0xdead_beef_0000_0001 }
	keys := seenBenchKeys(500)
	if n := addAllNew(&s, keys); n != len(keys) {
		t.Fatalf("%d of %d distinct keys with one hash were new: a new key was taken for a repeat", n, len(keys))
	}
	for _, k := range keys {
		if s.add(k) {
			t.Fatalf("key %q added again was new: a repeat was missed", k)
		}
	}
	if !s.add("500") || s.add("500") {
		t.Fatal(`"500": new the first time only`)
	}
	if s.len() != 501 {
		t.Fatalf("len = %d, want 501", s.len())
	}
}

// Keys whose hashes share their home slot (their tags differ by length), or
// all share one tag and fall in 8 home slots, or plain maphash, against a
// map: the same answers, through the table's growth.
func TestKeySetPartialCollisionsMatchAMap(t *testing.T) {
	hashes := map[string]func(maphash.Seed, string) uint64{
		"one home slot": func(_ maphash.Seed, k string) uint64 { return 0x1234_5678<<32 | uint64(len(k)) },
		"8 hashes":      func(seed maphash.Seed, k string) uint64 { return maphash.String(seed, k) & 0xe000_0000_0000_0000 },
		"maphash":       nil,
	}
	for name, hash := range hashes {
		t.Run(name, func(t *testing.T) {
			s := newKeySet(1)
			s.hash = hash
			want := map[string]bool{}
			r := rand.New(rand.NewPCG(1, 2))
			for i := range 8_000 {
				k := strconv.Itoa(r.IntN(2_000)) // about 4 repeats a key
				if i%2 == 0 {
					k = strings.Repeat("x", r.IntN(40)) + k // lengths differ
				}
				_, seen := want[k]
				want[k] = true
				if got := s.add(k); got == seen {
					t.Fatalf("add %d (%q): new = %v, a map says %v", i, k, got, !seen)
				}
			}
			if s.len() != len(want) {
				t.Fatalf("len = %d, a map has %d", s.len(), len(want))
			}
		})
	}
}

// Past its limit the table takes no more keys and the rest go to a map:
// still exact, on both sides of the limit.
func TestKeySetPastItsLimit(t *testing.T) {
	s := newKeySet(0)
	s.limit = 100
	keys := seenBenchKeys(300)
	if n := addAllNew(&s, keys); n != 300 {
		t.Fatalf("%d of 300 new", n)
	}
	if n := addAllNew(&s, keys); n != 0 {
		t.Fatalf("%d of 300 repeats taken for new", n)
	}
	if s.n != 100 || len(s.more) != 200 {
		t.Fatalf("table %d keys, map %d: want 100 and 200", s.n, len(s.more))
	}
}

// A key repeated within one addAll is new the first time only.
func TestKeySetAddAllRepeatInOneCall(t *testing.T) {
	s := newKeySet(8)
	got := s.addAll([]string{"a", "b", "a", "c", "b"})
	if want := []bool{true, true, false, true, false}; !slices.Equal(got, want) {
		t.Fatalf("addAll = %v, want %v", got, want)
	}
}

// The table's size: a power of 2 with the hint at most 3/4 full, presized so
// that a run of up to maxKeysHint keys never grows it.
func TestKeySetPresized(t *testing.T) {
	for _, c := range []struct{ hint, slots int }{{0, minKeySlots}, {96, 128}, {97, 256}, {10_000, 16384}, {maxKeysHint, 1 << 21}} {
		s := newKeySet(c.hint)
		if len(s.slots) != c.slots || cap(s.keys) != c.hint {
			t.Errorf("hint %d: %d slots, room for %d keys; want %d slots, %d keys", c.hint, len(s.slots), cap(s.keys), c.slots, c.hint)
		}
		for _, k := range seenBenchKeys(c.hint) {
			s.add(k)
		}
		if len(s.slots) != c.slots {
			t.Errorf("hint %d: grew to %d slots with %d keys", c.hint, len(s.slots), c.hint)
		}
	}
}

// A run whose first batch is short reserves room for that batch only, so
// its key set grows batch after batch; an item of the first batch that
// comes back after many growths is still caught, and nothing before it is.
func TestRunawayGuardAfterTheKeySetGrew(t *testing.T) {
	s, _ := newTest(t)
	processed := 0
	_ = s.Register("j", "@every 1m", Batch[int]{
		Fetch: func(_ context.Context, p Page) ([]int, error) {
			switch {
			case p.Number == 0:
				return []int{0}, nil // short: room for 1 key
			case p.Number <= 50:
				items := make([]int, p.Size)
				for i := range items {
					items[i] = p.Number*p.Size + i
				}
				return items, nil
			default:
				return []int{999_999, 0}, nil // 0 again
			}
		},
		Process: func(context.Context, int) error { processed++; return nil },
		Key:     itoa,
		Size:    100,
	})
	rep := tickAt(t, s, "j", t0)
	if !errors.Is(rep.Err, ErrRunaway) || processed != 1+50*100 || rep.Batches != 51 {
		t.Fatalf("report = %+v, processed %d: want runaway at batch 51 after 5001 items", rep, processed)
	}
}

// addAll in batches that grow the table midway, with repeats within and
// across batches, against a map: a key after the point where the table
// grew is new or not as a map says, never taken for a repeat because the
// growth saw it first.
func TestKeySetAddAllGrowsMidBatch(t *testing.T) {
	s := newKeySet(0)
	want := map[string]bool{}
	r := rand.New(rand.NewPCG(3, 4))
	for b := range 40 {
		batch := make([]string, 500)
		for i := range batch {
			batch[i] = strconv.Itoa(r.IntN(15_000))
		}
		for i, got := range s.addAll(batch) {
			_, seen := want[batch[i]]
			want[batch[i]] = true
			if got == seen {
				t.Fatalf("batch %d, key %d (%q): new = %v, a map says %v", b, i, batch[i], got, !seen)
			}
		}
	}
	if s.len() != len(want) {
		t.Fatalf("len = %d, a map has %d", s.len(), len(want))
	}
}
