package pipeline_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// sourcePackages lists the module's packages (directories holding non-test
// Go files), as paths from the module root; the root is ".".
func sourcePackages(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			if !slices.Contains(out, filepath.ToSlash(rel)) {
				out = append(out, filepath.ToSlash(rel))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// docs/architecture.md's package map names every package of the module
// (test servers under their parent's row, the peers under internal/peers)
// and no package that does not exist.
func TestArchitectureDocListsEveryPackage(t *testing.T) {
	root := ".."
	b, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## The package map")
	if i < 0 {
		t.Fatal("docs/architecture.md has no package map")
	}
	listed := map[string]bool{}
	cell := regexp.MustCompile("`([^`]+)`")
	for _, line := range strings.Split(doc[i:], "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			listed[m[1]] = true
		}
	}
	if listed["walletsync"] {
		listed["."] = true
	}
	pkgs := sourcePackages(t, root)
	for _, p := range pkgs {
		parent := filepath.ToSlash(filepath.Dir(p))
		switch {
		case listed[p]:
		case strings.HasSuffix(p, "test") && listed[parent]: // a test server, with what it stands in for
		case strings.HasPrefix(p, "internal/peers/") && listed["internal/peers"]:
		case strings.HasPrefix(p, "deploy") && listed["deploy"]:
		default:
			t.Errorf("package %s is missing from docs/architecture.md's package map", p)
		}
	}
	for name := range listed {
		if name == "walletsync" || name == "deploy" || name == "." {
			continue
		}
		if st, err := os.Stat(filepath.Join(root, name)); err != nil || !st.IsDir() {
			t.Errorf("docs/architecture.md's package map names %s, which is no package", name)
		}
	}
}

// The domain is the standard library's only (issue 17): Kafka, HTTP
// servers, ClickHouse and the byte forms live in the packages around it.
func TestTheDomainImportsTheStandardLibraryOnly(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		n++
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") || path == "net/http" {
				t.Errorf("%s imports %s: the domain package takes only the standard library (and no HTTP)", filepath.Base(f), path)
			}
		}
	}
	if n < 4 {
		t.Fatalf("found %d files in the domain package", n)
	}
}
