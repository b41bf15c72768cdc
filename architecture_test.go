package cronguard

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronguard/cronguard/internal/redistest"
)

// The key table of ARCHITECTURE.md is the one list of what cronguard keeps
// in Redis: a scheduler on WithRedis that claims, locks, checkpoints, flips
// a switch, skips and records its history writes exactly the keys and
// channels the table names, no other, and each of them.
func TestArchitectureKeyTable(t *testing.T) {
	doc, err := os.ReadFile("ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	var table []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(cronguard:[^`]+)`").FindAllStringSubmatch(string(doc), -1) {
		table = append(table, m[1])
	}

	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := context.Background()
	var mu sync.Mutex
	seen := map[string]bool{}
	look := func() {
		keys, _ := c.Keys(ctx, "*").Result()
		chans, _ := c.PubSubChannels(ctx, "*").Result()
		mu.Lock()
		defer mu.Unlock()
		for _, k := range append(keys, chans...) {
			k = strings.ReplaceAll(k, "{billing}", "{job}")
			seen[regexp.MustCompile(`:db\d+$`).ReplaceAllString(k, ":db<N>")] = true
		}
	}
	s, _ := redisSched(t, "web-1", c)
	job := Batch[int]{
		Fetch: func(_ context.Context, p Page) ([]int, error) {
			look() // the run lock exists only now
			if p.After != "" {
				return nil, nil
			}
			return []int{1, 2}, nil
		},
		Process:    func(context.Context, int) error { return nil },
		Key:        itoa,
		Checkpoint: true,
	}
	if err := s.Register("billing", "@every 1m", job); err != nil {
		t.Fatal(err)
	}
	waitSwitchLoaded(t, s)
	look() // the flips channel, subscribed
	if err := s.SetEnabled(ctx, "billing", false, "test"); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s, "billing", t0); skipOf(rep) != "killed" {
		t.Fatalf("switched off: %v", rep)
	}
	if err := s.SetEnabled(ctx, "billing", true, "test"); err != nil {
		t.Fatal(err)
	}
	if rep := tickAt(t, s, "billing", t0.Add(time.Minute)); rep.Outcome() != "done" {
		t.Fatalf("run: %v", rep)
	}
	stopSched(t, s) // writes the history
	look()

	for k := range seen {
		if !slices.Contains(table, k) {
			t.Errorf("Redis holds %q, which the key table of ARCHITECTURE.md does not name", k)
		}
	}
	for _, k := range table {
		if !seen[k] {
			t.Errorf("the key table of ARCHITECTURE.md names %q, which the scheduler never wrote", k)
		}
	}
	if len(table) < 8 {
		t.Errorf("key table: %q; want every key of the claim, lock, fence, switch, flips, checkpoint and history", table)
	}
}
