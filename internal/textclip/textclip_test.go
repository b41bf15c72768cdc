package textclip

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 200, "short"},
		{"abcdef", 3, "abc…(6 bytes)"},
		{"aé", 2, "a…(3 bytes)"}, // é is 2 bytes: not cut in half
		{"abc", 0, "…(3 bytes)"},
	} {
		if got := Cut(tc.s, tc.n); got != tc.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
	long := strings.Repeat("é", 1000)
	if got := Cut(long, Max); !utf8.ValidString(got) || len(got) > Max+len("…(2000 bytes)") {
		t.Errorf("Cut of 2000 bytes of é: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}
