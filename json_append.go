package cronguard

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// Hand-written JSON appenders for what is encoded at every run: the Redis
// history's entry (history_redis.go) and the Report in it (report_json.go).
// encoding/json spent a tenth of a WithRedis run's CPU there (reflection,
// then re-compacting what Report.MarshalJSON returned). They write the
// bytes encoding/json writes, byte for byte: json_append_test.go compares
// them with json.Marshal on adversarial values.

const jsonHex = "0123456789abcdef"

// jsonSafe reports whether encoding/json writes the ASCII byte c as is in
// a string: not a control character, a quote, a backslash, nor one of the
// HTML-sensitive <, > and & (json.Marshal escapes HTML).
func jsonSafe(c byte) bool {
	return c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// appendJSONString appends s as json.Marshal writes a string: quoted;
// quote and backslash escaped; \b, \f, \n, \r, \t short; other control
// characters, <, > and & as \u00XX; each byte of invalid UTF-8 as \ufffd;
// U+2028 and U+2029 as \u2028 and \u2029.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if jsonSafe(c) {
				i++
				continue
			}
			b = appendJSONEscape(append(b, s[start:i]...), c)
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', jsonHex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendJSONEscape appends the escape of the ASCII byte c.
func appendJSONEscape(b []byte, c byte) []byte {
	switch c {
	case '\\', '"':
		return append(b, '\\', c)
	case '\b':
		return append(b, '\\', 'b')
	case '\f':
		return append(b, '\\', 'f')
	case '\n':
		return append(b, '\\', 'n')
	case '\r':
		return append(b, '\\', 'r')
	case '\t':
		return append(b, '\\', 't')
	}
	return append(b, '\\', 'u', '0', '0', jsonHex[c>>4], jsonHex[c&0xF])
}

// appendJSONTime appends t as time.Time.MarshalJSON writes it (RFC 3339
// with nanoseconds, quoted). ok is false where MarshalJSON fails: a year
// outside [0,9999], or an offset that RFC 3339 cannot write (24h or more,
// seconds); the caller then lets encoding/json return that error.
func appendJSONTime(b []byte, t time.Time) (_ []byte, ok bool) {
	b = append(b, '"')
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	// The checks of time.Time.MarshalJSON (appendStrictRFC3339).
	num2 := func(d []byte) byte { return 10*(d[0]-'0') + (d[1] - '0') }
	switch {
	case b[n0+len("9999")] != '-': // year must be exactly 4 digits wide
		return b, false
	case b[len(b)-1] != 'Z':
		c := b[len(b)-len("Z07:00")]
		if ('0' <= c && c <= '9') || num2(b[len(b)-len("07:00"):]) >= 24 {
			return b, false
		}
	}
	return append(b, '"'), true
}

// jsonObject appends the members of one JSON object, as encoding/json
// writes a struct: in field order, no spaces.
type jsonObject struct {
	b    []byte
	more bool // a member was written: the next one needs a comma
	ok   bool // false once a time could not be written (appendJSONTime)
}

func newJSONObject(b []byte) jsonObject { return jsonObject{b: append(b, '{'), ok: true} }

// key appends the comma, if needed, and "name": (name needs no escaping).
func (o *jsonObject) key(name string) {
	if o.more {
		o.b = append(o.b, ',')
	}
	o.more = true
	o.b = append(o.b, '"')
	o.b = append(o.b, name...)
	o.b = append(o.b, '"', ':')
}

func (o *jsonObject) str(name, v string) {
	o.key(name)
	o.b = appendJSONString(o.b, v)
}

// strOmit is str of a field tagged omitempty.
func (o *jsonObject) strOmit(name, v string) {
	if v != "" {
		o.str(name, v)
	}
}

func (o *jsonObject) int(name string, v int64) {
	o.key(name)
	o.b = strconv.AppendInt(o.b, v, 10)
}

// intOmit is int of a field tagged omitempty.
func (o *jsonObject) intOmit(name string, v int64) {
	if v != 0 {
		o.int(name, v)
	}
}

func (o *jsonObject) bool(name string, v bool) {
	o.key(name)
	o.b = strconv.AppendBool(o.b, v)
}

// boolOmit is bool of a field tagged omitempty.
func (o *jsonObject) boolOmit(name string, v bool) {
	if v {
		o.bool(name, v)
	}
}

func (o *jsonObject) time(name string, t time.Time) {
	o.key(name)
	var ok bool
	o.b, ok = appendJSONTime(o.b, t)
	o.ok = o.ok && ok
}

// timeOmit is time of a field tagged omitzero (t.IsZero, as encoding/json
// asks).
func (o *jsonObject) timeOmit(name string, t time.Time) {
	if !t.IsZero() {
		o.time(name, t)
	}
}

// end closes the object; ok is false when a time could not be written.
func (o *jsonObject) end() ([]byte, bool) { return append(o.b, '}'), o.ok }
