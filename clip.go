package cronguard

import (
	"strconv"
	"unicode/utf8"
)

// clipMax bounds text read from outside (Redis values, user input) that ends
// up in an error, an event or a log line.
const clipMax = 200

// clip cuts s to 200 bytes on a UTF-8 boundary and says how long it was, so
// a huge or hostile value read from a store cannot flood a log line or an
// error message.
func clip(s string) string { return clipN(s, clipMax) }

// clipN cuts s to at most n bytes on a UTF-8 boundary, appending
// "…(N bytes)" when it cut.
func clipN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
