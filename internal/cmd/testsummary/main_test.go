package main

import (
	"os"
	"strings"
	"testing"
)

// summarize runs the program over a testdata stream.
func summarize(t *testing.T, file string) (string, bool) {
	t.Helper()
	f, err := os.Open("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out strings.Builder
	failed := run(f, &out)
	return out.String(), failed
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestMixed: a real go test -json stream (testdata/mixed.json, from a
// module with a passing, a skipped, a failing test, a skipped subtest, a
// package that does not build and one with no test files).
func TestMixed(t *testing.T) {
	out, failed := summarize(t, "mixed.json")
	if !failed {
		t.Error("run reported no failure")
	}
	// The output goes through as go test -v prints it.
	for _, want := range []string{
		"=== RUN   TestPass\n    a_test.go:5: hello\n--- PASS: TestPass (0.00s)\n",
		"b/b_test.go:5:28: undefined: undefined\n",
		"?   \texample.com/fake/c\t[no test files]\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Every skip, with its reason, indentation of continuation lines kept.
	wantSkips := "=== testsummary: 2 skipped\n" +
		"--- SKIP: TestSkip (example.com/fake/a)\n" +
		"    a_test.go:6: redis-server not found\n" +
		"        second line\n" +
		"--- SKIP: TestParent/skipped (example.com/fake/a)\n" +
		"    a_test.go:9: no unleash\n"
	if !strings.Contains(out, wantSkips) {
		t.Errorf("output lacks the skip list %q", wantSkips)
	}
	for _, want := range []string{
		"--- FAIL: TestFail (example.com/fake/a)\n",
		"--- FAIL: package example.com/fake/b (no test failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// A package with no test files is not a skipped test.
	if got, want := lastLine(out), "3 passed, 1 failed, 2 skipped, 1 package(s) failed"; got != want {
		t.Errorf("last line = %q, want %q\n%s", got, want, out)
	}
}

// TestTimeout: tests still running when the binary dies count as failed.
func TestTimeout(t *testing.T) {
	out, failed := summarize(t, "timeout.json")
	if !failed {
		t.Error("run reported no failure")
	}
	if !strings.Contains(out, "--- FAIL: TestHang/sub (example.com/fake/d) did not finish") {
		t.Errorf("the hung test is not listed:\n%s", out)
	}
	if got, want := lastLine(out), "0 passed, 2 failed, 0 skipped"; got != want {
		t.Errorf("last line = %q, want %q", got, want)
	}
}

func TestAllPassedAndNotJSON(t *testing.T) {
	in := "go: downloading example.com/x v1.0.0\n" +
		`{"Action":"run","Package":"p","Test":"TestA"}` + "\n" +
		`{"Action":"output","Package":"p","Test":"TestA","Output":"--- PASS: TestA (0.00s)\n"}` + "\n" +
		`{"Action":"pass","Package":"p","Test":"TestA"}` + "\n" +
		`{"Action":"pass","Package":"p"}` + "\n"
	var out strings.Builder
	if run(strings.NewReader(in), &out) {
		t.Error("run reported a failure")
	}
	if !strings.HasPrefix(out.String(), "go: downloading example.com/x v1.0.0\n") {
		t.Errorf("a line that is not JSON was not passed through:\n%s", out.String())
	}
	if strings.Contains(out.String(), "testsummary:") {
		t.Errorf("a summary section with nothing to list:\n%s", out.String())
	}
	if got := lastLine(out.String()); got != "1 passed, 0 failed, 0 skipped" {
		t.Errorf("last line = %q", got)
	}
}

// TestSkipReasonBounded: a test that logs a lot keeps only its last lines,
// each cut, as its reason.
func TestSkipReasonBounded(t *testing.T) {
	var in strings.Builder
	in.WriteString(`{"Action":"run","Package":"p","Test":"TestS"}` + "\n")
	for range 50 {
		in.WriteString(`{"Action":"output","Package":"p","Test":"TestS","Output":"    s_test.go:1: noise\n"}` + "\n")
	}
	long := strings.Repeat("é", 400)
	in.WriteString(`{"Action":"output","Package":"p","Test":"TestS","Output":"    s_test.go:2: ` + long + `\n"}` + "\n")
	in.WriteString(`{"Action":"skip","Package":"p","Test":"TestS"}` + "\n")
	var out strings.Builder
	run(strings.NewReader(in.String()), &out)
	_, list, _ := strings.Cut(out.String(), "--- SKIP: TestS (p)\n")
	reason, _, _ := strings.Cut(list, "\n\n")
	lines := strings.Split(reason, "\n")
	if len(lines) != maxReasonLines {
		t.Errorf("reason has %d lines, want %d:\n%s", len(lines), maxReasonLines, reason)
	}
	lastReason := lines[len(lines)-1]
	if !strings.Contains(lastReason, "…(") || len(lastReason) > maxLineBytes+40 {
		t.Errorf("long line not cut: %d bytes", len(lastReason))
	}
	if !strings.Contains(out.String(), "0 passed, 0 failed, 1 skipped") {
		t.Errorf("no summary line:\n%s", out.String())
	}
}

func TestNoReason(t *testing.T) {
	in := `{"Action":"run","Package":"p","Test":"TestS"}` + "\n" +
		`{"Action":"output","Package":"p","Test":"TestS","Output":"--- SKIP: TestS (0.00s)\n"}` + "\n" +
		`{"Action":"skip","Package":"p","Test":"TestS"}` + "\n"
	var out strings.Builder
	run(strings.NewReader(in), &out)
	if !strings.Contains(out.String(), "--- SKIP: TestS (p)\n    (no reason given)\n") {
		t.Errorf("output:\n%s", out.String())
	}
}
