package main

import (
	"archive/zip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const modulePath = "github.com/cronguard/cronguard/cmd/cronguard"

// TestGoInstall checks that `go install github.com/cronguard/cronguard/cmd/cronguard@VERSION`
// works, as it will once the module is tagged: this directory is served as
// that version by a module proxy in a temporary directory, and installed
// outside any workspace, with a fresh module cache. go install refuses a
// module whose go.mod has replace directives, so the development setup is
// the go.work at the repository root, never a replace here; the replace
// subtest shows the refusal.
func TestGoInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the CLI in a fresh module cache")
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("as is", func(t *testing.T) {
		out, err := goInstall(t, "v0.0.1", gomod)
		if err != nil {
			t.Fatalf("go install: %v\n%s", err, out)
		}
	})
	t.Run("with a replace", func(t *testing.T) {
		bad := append(append([]byte{}, gomod...), "\nreplace github.com/cronguard/cronguard => ../..\n"...)
		out, err := goInstall(t, "v0.0.2", bad)
		t.Logf("go install says: %s", out)
		if err == nil || !strings.Contains(out, "replace") {
			t.Fatalf("go install of a module with a replace: err %v; want a refusal naming it\n%s", err, out)
		}
	})
}

// goInstall serves this directory, with gomod as its go.mod, as version v
// of the module from a file proxy, and go-installs it into a temporary bin.
func goInstall(t *testing.T, v string, gomod []byte) (string, error) {
	t.Helper()
	tmp := t.TempDir()
	dir := filepath.Join(tmp, "proxy", modulePath, "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("list", []byte(v+"\n"))
	write(v+".info", []byte(`{"Version":"`+v+`","Time":"2026-01-01T00:00:00Z"}`))
	write(v+".mod", gomod)
	zipModule(t, filepath.Join(dir, v+".zip"), modulePath+"@"+v, gomod)

	cache := filepath.Join(tmp, "modcache")
	realCache, _ := exec.Command("go", "env", "GOMODCACHE").Output()
	realProxy, _ := exec.Command("go", "env", "GOPROXY").Output()
	proxy := "file://" + filepath.Join(tmp, "proxy") +
		",file://" + filepath.Join(strings.TrimSpace(string(realCache)), "cache", "download") // what is already downloaded
	if p := strings.TrimSpace(string(realProxy)); p != "" && p != "off" {
		proxy += "," + p // what is not (a fresh machine)
	}
	cmd := exec.Command("go", "install", modulePath+"@"+v)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-modcacherw", "GOSUMDB=off",
		"GOPROXY="+proxy, "GOMODCACHE="+cache, "GOBIN="+filepath.Join(tmp, "bin"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		if _, serr := os.Stat(filepath.Join(tmp, "bin", "cronguard")); serr != nil {
			t.Fatalf("go install succeeded but left no binary: %v", serr)
		}
	}
	return string(out), err
}

// zipModule writes the module zip of this directory: its files under
// prefix/, go.mod replaced by gomod.
func zipModule(t *testing.T, path, prefix string, gomod []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if e.Name() == "go.mod" {
			b = gomod
		}
		w, err := zw.Create(prefix + "/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
