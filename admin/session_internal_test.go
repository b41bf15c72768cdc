package admin

import (
	"strings"
	"testing"
	"time"
)

func TestSessionExpires(t *testing.T) {
	s := newSessions(time.Hour)
	now := time.Now()
	s.now = func() time.Time { return now }
	ss, v := s.issue("alice")
	if got, ok := s.parse(v); !ok || got.who != "alice" || got.id != ss.id {
		t.Fatalf("fresh session: %+v %v", got, ok)
	}
	now = now.Add(59 * time.Minute)
	if _, ok := s.parse(v); !ok {
		t.Fatal("session refused before its expiry")
	}
	now = now.Add(2 * time.Minute)
	if _, ok := s.parse(v); ok {
		t.Fatal("session accepted after its expiry")
	}
}

func TestSessionWhoIsBounded(t *testing.T) {
	s := newSessions(0)
	_, v := s.issue(strings.Repeat("é", 1000))
	got, ok := s.parse(v)
	if !ok || len(got.who) > maxWhoLen+20 {
		t.Fatalf("who of %d bytes in a session (ok %v); want it cut to about %d", len(got.who), ok, maxWhoLen)
	}
	if s.ttl != DefaultSessionTTL {
		t.Errorf("default TTL %s", s.ttl)
	}
}

// TestRevokedIsBounded: past maxRevoked logged-out sessions that have not
// expired, the key changes: every session ends, and memory stays bounded.
func TestRevokedIsBounded(t *testing.T) {
	s := newSessions(time.Hour)
	_, keep := s.issue("bob")
	for range maxRevoked {
		ss, _ := s.issue("x")
		s.revoke(ss)
	}
	if _, ok := s.parse(keep); !ok {
		t.Fatal("a live session ended before the list was full")
	}
	ss, _ := s.issue("x")
	s.revoke(ss)
	if len(s.revoked) > maxRevoked {
		t.Fatalf("%d revoked ids kept", len(s.revoked))
	}
	if _, ok := s.parse(keep); ok {
		t.Fatal("the list overflowed without changing the key")
	}
}

func TestSessionTTLOption(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 31 * 24 * time.Hour} {
		var c config
		if err := SessionTTL(d)(&c); err == nil {
			t.Errorf("SessionTTL(%s): no error", d)
		}
	}
	var c config
	if err := SessionTTL(time.Hour)(&c); err != nil || c.dash.sessionTTL != time.Hour {
		t.Errorf("SessionTTL(1h): %v %s", err, c.dash.sessionTTL)
	}
}
