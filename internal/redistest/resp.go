package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
)

// errNotRESP means the client sent something that is not a RESP command;
// the proxy then copies the rest of the connection through unread.
var errNotRESP = errors.New("not a RESP command")

// forwardCommand copies one command from r to w, which the caller
// flushes. It returns the command's name as sent (for a subscriber check); bulk
// strings are streamed, never held whole, so the memory used stays
// bounded by the buffers' sizes whatever the size of the values.
func forwardCommand(r *bufio.Reader, w *bufio.Writer) (string, error) {
	line, err := copyLine(r, w)
	if err != nil {
		return "", err
	}
	if line[0] != '*' {
		// An inline command: "PING\r\n", as redis-cli and telnet send.
		f := strings.Fields(string(line))
		if len(f) == 0 {
			return "", nil
		}
		return f[0], nil
	}
	n, err := strconv.Atoi(string(bytes.TrimSpace(line[1:])))
	if err != nil || n < 0 {
		return "", errNotRESP
	}
	var name string
	for i := range n {
		hdr, err := copyLine(r, w)
		if err != nil {
			return name, err
		}
		size, err := strconv.Atoi(string(bytes.TrimSpace(hdr[1:])))
		if hdr[0] != '$' || err != nil || size < 0 {
			return name, errNotRESP
		}
		if i == 0 && size <= maxCommandName {
			b := make([]byte, size+2) // the name and its CRLF
			if _, err := io.ReadFull(r, b); err != nil {
				return name, err
			}
			_, _ = w.Write(b)
			name = string(b[:size])
			continue
		}
		if _, err := io.CopyN(w, r, int64(size)+2); err != nil {
			return name, err
		}
	}
	return name, nil
}

// copyLine reads one line, up to and including '\n', and writes it to w.
// A line longer than r's buffer is not RESP from a client.
func copyLine(r *bufio.Reader, w *bufio.Writer) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	_, _ = w.Write(line) // a write error sticks in w and shows at Flush
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errNotRESP
	}
	if err != nil {
		return nil, err
	}
	return line, nil
}
