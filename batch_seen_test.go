package cronguard

import (
	"strconv"
	"testing"
)

// seenBenchKeys are the keys of BenchmarkKeySet: n of them, fetched in
// batches of 1,000.
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
//	set-all:   keySet.addAll, a batch at a time
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
