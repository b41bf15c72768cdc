// Package textclip cuts text read from outside (a store, a request, a
// process's output) to a bounded length before it goes into an error, an
// event, a span or a log line. It is the one copy that the core, admin/,
// otel/ and the internal commands share.
package textclip

import (
	"strconv"
	"unicode/utf8"
)

// Max is the usual bound: 200 bytes.
const Max = 200

// Cut returns s when it has at most n bytes; otherwise s cut to at most n
// bytes on a UTF-8 boundary, followed by "…(N bytes)", N being len(s).
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := max(n, 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
