package cgotel

import (
	"strconv"
	"unicode/utf8"
)

// clipMax is the most bytes of an error message that goes into a span: it
// may carry outside data (an item key, a value read from Redis).
const clipMax = 200

// clip cuts s to clipMax bytes on a UTF-8 boundary and says how long it was.
// (The core's clip, which this module cannot import.)
func clip(s string) string {
	if len(s) <= clipMax {
		return s
	}
	cut := clipMax
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
