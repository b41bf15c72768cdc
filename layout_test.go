package cronguard

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// then applies its guards as robfig/cron's Chain.Then does: the first
// given is the outermost, and the innermost step runs last.
func TestThenAppliesOutermostFirst(t *testing.T) {
	var order []string
	g := func(name string) guard {
		return func(next step) step {
			return func(run *run) error {
				order = append(order, name)
				return next(run)
			}
		}
	}
	chain := then(g("a"), g("b"), g("c"))(func(*run) error { order = append(order, "job"); return nil })
	if err := chain(&run{}); err != nil || !slices.Equal(order, []string{"a", "b", "c", "job"}) {
		t.Fatalf("order %v, err %v; want a b c job", order, err)
	}
}

// fileDecls parses file and returns its top-level function, method and
// type names, and every field or method name selected in it (x.sel).
func fileDecls(t *testing.T, file string) (decls, selected map[string]bool) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	decls, selected = map[string]bool{}, map[string]bool{}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			decls[d.Name.Name] = true
		case *ast.GenDecl:
			for _, s := range d.Specs {
				if ts, ok := s.(*ast.TypeSpec); ok {
					decls[ts.Name.Name] = true
				}
			}
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		if se, ok := n.(*ast.SelectorExpr); ok {
			selected[se.Sel.Name] = true
		}
		return true
	})
	return decls, selected
}

// Everything the kill switch does to a job is in killswitch.go (issue 9):
// the fail policy, the kill switch guard and its re-check, the hard-kill
// guard and its poll, the per-batch check, and the one switch-off.
func TestKillSwitchInOneFile(t *testing.T) {
	decls, _ := fileDecls(t, "killswitch.go")
	for _, name := range []string{
		"KillSwitch", "FlippableKillSwitch", "flagMemory", "ask", "enabled", // interfaces, fail policy
		"killSwitchGuard", "switchedOff", "hardKillGuard", "pollKill", "flagWatchers", // guards
		"checkKill", "flip", "switchOff", // per batch; the one switch-off
	} {
		if !decls[name] {
			t.Errorf("killswitch.go does not declare %s", name)
		}
	}
	if decls, _ := fileDecls(t, "killswitch_memory.go"); !decls["memoryKillSwitch"] {
		t.Error("killswitch_memory.go does not declare memoryKillSwitch")
	}
}

// The batch loop reaches the Scheduler only through its run's methods
// (checkKill, switchOff, loadCheckpoint, saveCheckpoint, emit): batch.go
// selects neither a run's scheduler (run.s) nor a config (cfg).
func TestBatchReachesSchedulerThroughRun(t *testing.T) {
	_, selected := fileDecls(t, "batch.go")
	for _, name := range []string{"s", "cfg", "emitEvent", "flip", "enabled"} {
		if selected[name] {
			t.Errorf("batch.go selects .%s: go through the run's methods", name)
		}
	}
}

// A test that skips under the race detector (raceEnabled) runs only in
// scripts/test's second pass without -race, which selects tests by name:
// 'Alloc|HeapPer'. A test that skips and is named otherwise would never run.
func TestRaceSkippedTestsRunWithoutRace(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	selected := regexp.MustCompile(`Alloc|HeapPer`)
	found := 0
	for _, name := range files {
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Body == nil || !strings.HasPrefix(fn.Name.Name, "Test") || !mentions(fn.Body, "raceEnabled") {
				continue
			}
			found++
			if !selected.MatchString(fn.Name.Name) {
				t.Errorf("%s skips under -race, and scripts/test's run without -race ('Alloc|HeapPer') does not select it", fn.Name.Name)
			}
		}
	}
	if found < 4 {
		t.Fatalf("found %d tests that skip under -race; the allocation budgets alone are 4", found)
	}
}

// mentions reports whether the identifier name appears in n.
func mentions(n ast.Node, name string) (yes bool) {
	ast.Inspect(n, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && id.Name == name {
			yes = true
		}
		return !yes
	})
	return yes
}
