package cronguard

import (
	"strconv"
	"unicode/utf8"
)

// clipMax is how many bytes of a string read from outside (Redis, a
// message) go into an error, an event or a log line.
const clipMax = 200

// clip cuts s to clipMax bytes on a UTF-8 boundary and says how long it
// was, so that a huge value read from a store never makes a huge error or
// log line. Shorter strings come back unchanged.
func clip(s string) string {
	if len(s) <= clipMax {
		return s
	}
	n := clipMax
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
