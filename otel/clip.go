package cgotel

import "github.com/cronguard/cronguard/internal/textclip"

// clipMax is the most bytes of an error message that goes into a span: it
// may carry outside data (an item key, a value read from Redis).
const clipMax = 200

// clip cuts s to clipMax bytes on a UTF-8 boundary and says how long it
// was (internal/textclip, the core's own).
func clip(s string) string { return textclip.Cut(s, clipMax) }
