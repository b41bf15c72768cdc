package unleash

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	unleashclient "github.com/Unleash/unleash-client-go/v4"
	"github.com/cronguard/cronguard"
)

// These tests need no Unleash server: the client answers from toggles it
// is bootstrapped with (unleashclient.BootstrapStorage, as from a backup
// file) and cannot reach its server, whose address refuses connections.

// deadURL returns the URL of a port on which nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr + "/api"
}

// offlineClient returns a client that cannot reach a server and holds the
// toggles given (name: enabled with the default strategy), none when nil.
// It is closed when the test ends, after the schedulers made later.
func offlineClient(t *testing.T, toggles map[string]bool) *unleashclient.Client {
	t.Helper()
	opts := []unleashclient.ConfigOption{
		unleashclient.WithUrl(deadURL(t)),
		unleashclient.WithAppName("cronguard-offline-test"),
		unleashclient.WithRefreshInterval(time.Hour),
		unleashclient.WithDisableMetrics(true),
		unleashclient.WithBackupPath(t.TempDir()),
		unleashclient.WithHttpClient(&http.Client{Timeout: time.Second}),
		unleashclient.WithListener(&unleashclient.NoopListener{}),
	}
	if toggles != nil {
		type strategy struct {
			Name string `json:"name"`
		}
		type feature struct {
			Name       string     `json:"name"`
			Enabled    bool       `json:"enabled"`
			Strategies []strategy `json:"strategies"`
		}
		resp := struct {
			Version  int       `json:"version"`
			Features []feature `json:"features"`
		}{Version: 1}
		for name, on := range toggles {
			resp.Features = append(resp.Features, feature{Name: name, Enabled: on, Strategies: []strategy{{Name: "default"}}})
		}
		b, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		opts = append(opts, unleashclient.WithStorage(&unleashclient.BootstrapStorage{Reader: strings.NewReader(string(b))}))
	}
	c, err := unleashclient.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Enabled follows the client's toggles under the prefix; a missing toggle
// is off; a client that holds no toggles is an error, not an off.
func TestUnleashKillSwitchOffline(t *testing.T) {
	ks := NewUnleashKillSwitch(offlineClient(t, map[string]bool{"cronguard.on": true, "cronguard.off": false, "bare": true}))
	ctx := context.Background()
	for flag, want := range map[string]bool{"on": true, "off": false, "missing": false, "bare": false} {
		if on, err := ks.Enabled(ctx, flag); err != nil || on != want {
			t.Errorf("Enabled(%q) = %v, %v; want %v", flag, on, err, want)
		}
	}
	if on, err := NewUnleashKillSwitch(offlineClient(t, map[string]bool{"bare": true}), UnleashPrefix("")).Enabled(ctx, "bare"); err != nil || !on {
		t.Errorf("UnleashPrefix(\"\"): Enabled(\"bare\") = %v, %v", on, err)
	}
	if by, reason, at := ks.Flipped("on"); by != "" || !at.IsZero() || !strings.Contains(reason, `"cronguard.on"`) {
		t.Errorf("Flipped = %q, %q, %v", by, reason, at)
	}

	empty := NewUnleashKillSwitch(offlineClient(t, nil))
	if _, err := empty.Enabled(ctx, "on"); !errors.Is(err, errUnleashNotLoaded) || !strings.Contains(err.Error(), `"cronguard.on"`) {
		t.Errorf("client with no toggles: err = %v", err)
	}
	if _, err := NewUnleashKillSwitch(nil).Enabled(ctx, "on"); err == nil {
		t.Error("nil client: no error")
	}
}

// Scheduler.SetEnabled on the Unleash switch fails with ErrNotFlippable
// and names the toggle to flip in Unleash, for either direction.
func TestUnleashSetEnabledNamesToggle(t *testing.T) {
	ks := NewUnleashKillSwitch(offlineClient(t, map[string]bool{"cronguard.mail-flag": true}))
	var _ cronguard.FlippableKillSwitch = ks
	s, _ := newScheduler(t, cronguard.WithKillSwitch(ks))
	if err := s.Register("mail", "@hourly", cronguard.JobFunc(func(context.Context) error { return nil }), cronguard.Flag("mail-flag")); err != nil {
		t.Fatal(err)
	}
	for _, on := range []bool{false, true} {
		err := s.SetEnabled(context.Background(), "mail", on, "")
		if !errors.Is(err, cronguard.ErrNotFlippable) || !strings.Contains(err.Error(), `toggle "cronguard.mail-flag" in Unleash`) {
			t.Errorf("SetEnabled(%t): err = %v", on, err)
		}
	}
	if on, err := ks.Enabled(context.Background(), "mail-flag"); err != nil || !on {
		t.Errorf("after SetEnabled: Enabled = %v, %v; want the toggle unchanged", on, err)
	}
}

// Real ticks: a job whose toggle is on runs, off is killed; a client with
// no toggles fails closed (ErrBackend) unless WithFailOpen; the
// runaway guard stops a run without reporting the switch-off it cannot
// make as a failure.
func TestUnleashKillSwitchOfflineTicks(t *testing.T) {
	ks := NewUnleashKillSwitch(offlineClient(t, map[string]bool{"cronguard.on": true, "cronguard.off": false, "cronguard.loop": true}))
	s, rec := newScheduler(t, cronguard.WithKillSwitch(ks))
	var ran atomic.Int32
	job := cronguard.JobFunc(func(context.Context) error { ran.Add(1); return nil })
	for _, name := range []string{"on", "off"} {
		if err := s.Register(name, everySecond, job); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Register("loop", everySecond, cronguard.Batch[int]{
		Fetch:   func(context.Context, cronguard.Page) ([]int, error) { return []int{1, 2}, nil },
		Process: func(context.Context, int) error { return nil },
		Key:     func(i int) string { return string(rune('0' + i)) },
	}); err != nil {
		t.Fatal(err)
	}
	empty := NewUnleashKillSwitch(offlineClient(t, nil))
	closed, closedRec := newScheduler(t, cronguard.WithKillSwitch(empty))
	open, openRec := newScheduler(t, cronguard.WithKillSwitch(empty), cronguard.WithFailOpen())
	for _, sc := range []*cronguard.Scheduler{closed, open} {
		if err := sc.Register("on", everySecond, job); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for _, sc := range []*cronguard.Scheduler{s, closed, open} {
		if err := sc.Start(); err != nil {
			t.Fatal(err)
		}
	}

	if ev := rec.outcome(t, "on", start); ev.Kind != cronguard.EventFinished || ev.Report.Outcome() != "done" {
		t.Errorf("toggle on: %+v", ev)
	}
	if ev := rec.outcome(t, "off", start); ev.Skip != "killed" || !errors.Is(ev.Err, cronguard.ErrKilled) {
		t.Errorf("toggle off: %+v", ev)
	}
	ev := rec.outcome(t, "loop", start)
	if ev.Kind != cronguard.EventFinished || ev.Report.Outcome() != "runaway" || ev.Report.Tripped ||
		!errors.Is(ev.Err, cronguard.ErrRunaway) || strings.Contains(ev.Err.Error(), "switching flag") {
		t.Errorf("runaway: %+v (err %v)", ev, ev.Err)
	}
	if ev := closedRec.outcome(t, "on", start); ev.Skip != "backend" || !errors.Is(ev.Err, cronguard.ErrBackend) ||
		!strings.Contains(ev.Err.Error(), "no toggles yet") {
		t.Errorf("no toggles, fail closed: %+v (err %v)", ev, ev.Err)
	}
	if ev, ok := closedRec.find("on", cronguard.EventFlag); !ok || ev.Enabled {
		t.Errorf("no toggles, fail closed: EventFlag = %+v, %v", ev, ok)
	}
	if ev := openRec.outcome(t, "on", start); ev.Kind != cronguard.EventFinished || ev.Report.Outcome() != "done" {
		t.Errorf("no toggles, WithFailOpen: %+v (err %v)", ev, ev.Err)
	}
}

// validToggleName is Unleash's rule for toggle names, checked without an
// Unleash server.
func TestValidToggleName(t *testing.T) {
	long := strings.Repeat("a", 100)
	for _, name := range []string{"a", "cronguard.emails", "A-Z_0.9!~*'()", long, "...", ".a"} {
		if err := validToggleName(name); err != nil {
			t.Errorf("validToggleName(%q) = %v, want valid", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", long + "a", "a b", "a/b", "a?b", "a#b", "a%20b", "émails", "a\xffb", "a:b", "a+b", "a@b", "a,b"} {
		err := validToggleName(name)
		if err == nil {
			t.Errorf("validToggleName(%q) = nil, want an error", name)
			continue
		}
		if !strings.Contains(err.Error(), "Flag(") || (name != "" && !strings.Contains(err.Error(), name[:1])) {
			t.Errorf("validToggleName(%q) = %v: the message must name the value and the fix", name, err)
		}
	}
}
