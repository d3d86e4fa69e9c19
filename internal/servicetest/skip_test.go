package servicetest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fullRunSkips are the Skip calls the full run may still reach, by file
// and the start of their message. Each is a hole in `make test`'s
// coverage on machines where it fires; add none lightly.
var fullRunSkips = map[string]string{
	// The container engine's chroot and user switch need root; CI runs
	// as root, so there it runs.
	"internal/deploytest/deploy_test.go": "needs root",
}

// TestSkipsOnlyUnderShort holds `make test` to skipping nothing: every
// t.Skip, Skipf or SkipNow in the module must sit directly in an
// `if testing.Short() {` block, so that only `go test -short` (make
// test-short) leaves tests out.
func TestSkipsOnlyUnderShort(t *testing.T) {
	root := ModuleRoot(t)
	fset := token.NewFileSet()
	found := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		var stack []ast.Node
		ast.Inspect(f, func(n ast.Node) bool {
			if n == nil {
				stack = stack[:len(stack)-1]
				return true
			}
			stack = append(stack, n)
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Skip" && sel.Sel.Name != "Skipf" && sel.Sel.Name != "SkipNow") {
				return true
			}
			found++
			if underShort(stack) {
				return true
			}
			if prefix, ok := fullRunSkips[rel]; ok && len(call.Args) > 0 {
				if lit, ok := call.Args[0].(*ast.BasicLit); ok && strings.HasPrefix(strings.Trim(lit.Value, "`\""), prefix) {
					return true
				}
			}
			t.Errorf("%s: %s is reachable without -short, so `make test` would skip it; guard it with `if testing.Short() {` or make the test run",
				fset.Position(call.Pos()), src[call.Pos()-f.FileStart:call.End()-f.FileStart])
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("found no Skip call at all: the walk is broken")
	}
}

// underShort reports whether the innermost statement block around the
// call (the top of stack) is the body of `if testing.Short()`.
func underShort(stack []ast.Node) bool {
	for i := len(stack) - 2; i > 0; i-- {
		block, ok := stack[i].(*ast.BlockStmt)
		if !ok {
			continue
		}
		ifs, ok := stack[i-1].(*ast.IfStmt)
		if !ok || ifs.Body != block {
			return false
		}
		call, ok := ifs.Cond.(*ast.CallExpr)
		if !ok || len(call.Args) != 0 {
			return false
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "Short" {
			return false
		}
		pkg, ok := sel.X.(*ast.Ident)
		return ok && pkg.Name == "testing"
	}
	return false
}
