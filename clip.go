package cronguard

import "github.com/cronguard/cronguard/internal/textclip"

// clipMax bounds text read from outside (Redis values, user input) that ends
// up in an error, an event or a log line.
const clipMax = textclip.Max

// clip cuts s to 200 bytes on a UTF-8 boundary and says how long it was, so
// a huge or hostile value read from a store cannot flood a log line or an
// error message.
func clip(s string) string { return clipN(s, clipMax) }

// clipN cuts s to at most n bytes on a UTF-8 boundary, appending
// "…(N bytes)" when it cut (internal/textclip: one copy for every module).
func clipN(s string, n int) string { return textclip.Cut(s, n) }
