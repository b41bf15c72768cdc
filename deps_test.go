package cronguard

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// forbiddenDeps are substrings of package paths that must never be linked
// into a program that imports cronguard: test libraries (testify, objx),
// the YAML library they bring, and the Unleash client, which lives in the
// ./unleash module for that reason (its module ships a non-test mock file
// that imports testify).
var forbiddenDeps = []string{"testify", "objx", "yaml", "unleash"}

// The core package links only what it needs: go list -deps, run on this
// package as a user's build sees it (GOWORK=off: the workspace's other
// modules are not in a user's build), lists none of forbiddenDeps.
func TestCoreDependencies(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		msg := "deps test: the go command is not on PATH: " + err.Error()
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIPPING: " + msg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, gobin, "list", "-deps", ".")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps .: %v\n%s", err, stderr)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps . listed nothing")
	}
	for _, dep := range deps {
		for _, bad := range forbiddenDeps {
			if strings.Contains(strings.ToLower(dep), bad) {
				t.Errorf("the core package links %s (contains %q): every program that imports cronguard would too", dep, bad)
				break
			}
		}
	}
}
