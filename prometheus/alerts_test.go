package cgprom_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestAlertRules checks the alert rules with promtool (Debian package
// prometheus): their syntax, and the unit tests of testdata/alerts_test.yml,
// which feed each rule series that must and must not fire it.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found under CI=true: .ci/run installs it (apt-get install prometheus)")
		}
		t.Skip("SKIP: promtool not found (apt-get install prometheus): the alert rules are not checked")
	}
	for _, args := range [][]string{
		{"check", "rules", "alerts.yml"},
		{"test", "rules", "testdata/alerts_test.yml"},
	} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestREADMEAlertRules: the rules the README shows are alerts.yml, word
// for word, so the tested file and the documented one cannot drift apart.
func TestREADMEAlertRules(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile("alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	block := "```yaml\n" + string(rules) + "```\n"
	if !bytes.Contains(readme, []byte(block)) {
		t.Fatal("README.md does not show alerts.yml verbatim in a ```yaml block")
	}
}
