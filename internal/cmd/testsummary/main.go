// Command testsummary reads `go test -json` on stdin, prints the tests'
// output as `go test -v` would, and ends with a summary, so that a skipped
// test is never silent:
//
//	=== testsummary: 2 skipped
//	--- SKIP: TestX (example.com/pkg)
//	    x_test.go:12: redis-server not found
//	=== testsummary: 1 failed
//	--- FAIL: TestY (example.com/pkg)
//	41 passed, 1 failed, 2 skipped
//
// Subtests count as tests. A package that failed with no failed test (a
// build error, TestMain, a panic or a timeout outside a test) is listed
// among the failures and counted on the last line as "N package(s)
// failed"; a test still running when its package ends (a panic or a
// timeout) counts as failed.
// A skip's reason is what the test logged last: at most 12 lines of 300
// bytes each. Lines that are not JSON are printed as they are.
//
// It exits 1 when a test or a package failed, else 0; scripts/test also
// keeps go test's own exit status.
//
// Usage: go test -json ./... | testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cronguard/cronguard/internal/textclip"
)

const (
	// maxReasonLines and maxLineBytes bound what is kept of a test's
	// output for its skip reason.
	maxReasonLines = 12
	maxLineBytes   = 300
	// maxInputLine bounds one line of input; longer lines are cut.
	maxInputLine = 1 << 20
)

// event is one line of go test -json (cmd/test2json).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output and build-fail events
}

// testID names a test across packages.
type testID struct{ pkg, test string }

// skip is a skipped test and why.
type skip struct {
	id     testID
	reason []string
}

// summary accumulates the results of a run.
type summary struct {
	passed, failed, skipped int
	packagesFailed          int // failed with no failed test
	skips                   []skip
	fails                   []string
	failedTestsIn           map[string]int      // package -> failed tests
	running                 map[string][]string // package -> tests started, not finished, in order
	logs                    map[testID][]string // running test -> its last lines
}

func main() {
	if failed := run(os.Stdin, os.Stdout); failed {
		os.Exit(1)
	}
}

// run copies the output of the go test -json stream in to out, then
// prints the summary. It reports whether a test or a package failed.
func run(in io.Reader, out io.Writer) bool {
	s := &summary{failedTestsIn: map[string]int{}, running: map[string][]string{}, logs: map[testID][]string{}}
	w := bufio.NewWriter(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxInputLine)
	for sc.Scan() {
		s.line(w, sc.Bytes())
		// Flush per line: a CI log should show a test as it runs.
		_ = w.Flush()
	}
	if err := sc.Err(); err != nil {
		s.fails = append(s.fails, fmt.Sprintf("--- FAIL: the go test -json stream could not be read to the end: %v", err))
	}
	s.print(w)
	_ = w.Flush()
	return len(s.fails) > 0
}

// line handles one input line.
func (s *summary) line(w io.Writer, b []byte) {
	var e event
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &e) != nil {
		fmt.Fprintf(w, "%s\n", b)
		return
	}
	id := testID{e.Package, e.Test}
	switch e.Action {
	case "run":
		s.running[e.Package] = append(s.running[e.Package], e.Test)
	case "output", "build-output":
		_, _ = io.WriteString(w, e.Output)
		if e.Test != "" {
			s.log(id, e.Output)
		}
	case "pass", "fail", "skip":
		if e.Test == "" {
			s.packageDone(e)
			return
		}
		s.testDone(id, e.Action)
	}
}

// log keeps the last lines a running test printed, but go test's own
// markers.
func (s *summary) log(id testID, output string) {
	for _, l := range strings.Split(strings.TrimRight(output, "\n"), "\n") {
		t := strings.TrimSpace(l)
		if t == "" || isMarker(t) {
			continue
		}
		lines := append(s.logs[id], clip(l))
		if len(lines) > maxReasonLines {
			lines = lines[len(lines)-maxReasonLines:]
		}
		s.logs[id] = lines
	}
}

func isMarker(line string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS", "--- FAIL", "--- SKIP"} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

func (s *summary) testDone(id testID, action string) {
	s.running[id.pkg] = remove(s.running[id.pkg], id.test)
	switch action {
	case "pass":
		s.passed++
	case "fail":
		s.failed++
		s.failedTestsIn[id.pkg]++
		s.fails = append(s.fails, fmt.Sprintf("--- FAIL: %s (%s)", id.test, id.pkg))
	case "skip":
		s.skipped++
		s.skips = append(s.skips, skip{id: id, reason: s.logs[id]})
	}
	delete(s.logs, id)
}

// packageDone counts the package's tests that never finished (a panic or
// a timeout ends the binary with no event for them) as failed, then
// records a package that failed without a failed test. A package skip is
// a package with no test files: not a skipped test.
func (s *summary) packageDone(e event) {
	for _, test := range s.running[e.Package] {
		s.failed++
		s.failedTestsIn[e.Package]++
		s.fails = append(s.fails, fmt.Sprintf("--- FAIL: %s (%s) did not finish: a panic or a timeout", test, e.Package))
		delete(s.logs, testID{e.Package, test})
	}
	delete(s.running, e.Package)
	if e.Action == "fail" && s.failedTestsIn[e.Package] == 0 {
		s.packagesFailed++
		s.fails = append(s.fails, fmt.Sprintf("--- FAIL: package %s (no test failed: a build error, TestMain, a panic or a timeout)", e.Package))
	}
}

func (s *summary) print(w io.Writer) {
	if len(s.skips) > 0 {
		fmt.Fprintf(w, "\n=== testsummary: %d skipped\n", len(s.skips))
		for _, sk := range s.skips {
			fmt.Fprintf(w, "--- SKIP: %s (%s)\n", sk.id.test, sk.id.pkg)
			if len(sk.reason) == 0 {
				fmt.Fprintln(w, "    (no reason given)")
			}
			for _, l := range sk.reason {
				// test2json indents a test's log by 4 spaces, its
				// continuation lines by 8: keep the difference.
				fmt.Fprintf(w, "    %s\n", strings.TrimPrefix(l, "    "))
			}
		}
	}
	if len(s.fails) > 0 {
		fmt.Fprintf(w, "\n=== testsummary: %d failed\n", len(s.fails))
		for _, f := range s.fails {
			fmt.Fprintln(w, f)
		}
	}
	fmt.Fprintln(w)
	last := fmt.Sprintf("%d passed, %d failed, %d skipped", s.passed, s.failed, s.skipped)
	if s.packagesFailed > 0 {
		last += fmt.Sprintf(", %d package(s) failed", s.packagesFailed)
	}
	fmt.Fprintln(w, last)
}

// remove returns tests without test.
func remove(tests []string, test string) []string {
	for i, t := range tests {
		if t == test {
			return append(tests[:i], tests[i+1:]...)
		}
	}
	return tests
}

// clip cuts s to maxLineBytes on a UTF-8 boundary and says how long it was.
func clip(s string) string { return textclip.Cut(s, maxLineBytes) }
