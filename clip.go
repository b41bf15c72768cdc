package cronguard

import (
	"strconv"
	"unicode/utf8"
)

// clipMax is the most bytes of an outside value (read from Redis, say)
// that clip keeps for an error, event or log line.
const clipMax = 200

// clip cuts s to clipMax bytes on a UTF-8 boundary and says how long it was,
// so a hostile or broken value cannot blow up an error message or a log.
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
