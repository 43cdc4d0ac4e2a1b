package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Test servers (the local Pass API and CRMs, the throwaway ClickHouse, the
// peers' implementations, the standard library's *test packages) are for
// tests. The one a production code path may run is the local Pass API, and
// only behind the demo: "walletsync run --demo" starts it in simulate.go
// and hands it to internal/simulate, the simulator that keeps it at the
// truth. This fails when any other non-test file of the module imports a
// test server, directly or through a package that does.
func TestTestServersStayBehindTheDemo(t *testing.T) {
	const module = "github.com/walletsync/walletsync"
	// The demo's files (slash paths from the module's root), and what they
	// may import that reaches a test server.
	demo := map[string][]string{
		"cmd/walletsync/simulate.go":    {module + "/ingest/passapi/passapitest", module + "/internal/simulate"},
		"internal/simulate/simulate.go": {module + "/ingest/passapi/passapitest"},
	}
	isTestServer := func(pkg string) bool {
		return pkg == "testing" || strings.HasPrefix(pkg, "testing/") || strings.HasSuffix(pkg, "test") ||
			strings.HasPrefix(pkg, module+"/internal/peers/")
	}

	// The imports of every non-test file outside the test servers.
	root := filepath.Join("..", "..")
	imports := map[string][]string{} // file → import paths
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if isTestServer(path.Join(module, path.Dir(rel))) {
			return nil // a test server may use what test servers use
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			imports[rel] = append(imports[rel], ip)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(imports) < 50 {
		t.Fatalf("found only %d files under %s", len(imports), root)
	}

	// The module's packages that reach a test server, until none is added.
	reaches := map[string]bool{}
	for changed := true; changed; {
		changed = false
		for file, ips := range imports {
			pkg := path.Join(module, path.Dir(file))
			if reaches[pkg] {
				continue
			}
			for _, ip := range ips {
				if isTestServer(ip) || reaches[ip] {
					reaches[pkg], changed = true, true
					break
				}
			}
		}
	}

	for file, ips := range imports {
		for _, ip := range ips {
			if (isTestServer(ip) || reaches[ip]) && !slices.Contains(demo[file], ip) {
				t.Errorf("%s imports %s, which is or reaches a test server: only tests and the demo (%v) may", file, ip, slices.Sorted(maps.Keys(demo)))
			}
		}
	}
	// A list that no longer matches the code would let a new import through
	// unnoticed.
	for file, allowed := range demo {
		for _, ip := range allowed {
			if !slices.Contains(imports[file], ip) {
				t.Errorf("%s no longer imports %s: take it off the demo's list", file, ip)
			}
		}
	}
}
