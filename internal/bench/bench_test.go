package bench

import (
	"slices"
	"strings"
	"testing"
)

// The bench table: medians, same-run baselines, ratios, runs that did not
// happen marked.
func TestBenchTable(t *testing.T) {
	out := `goos: linux
BenchmarkPipeline/plain_consume_produce_baseline-2   1   1 ns/op   2000000 events/s
BenchmarkPipeline/walletsync_processor-2   1   1 ns/op   300000 events/s
BenchmarkPipeline/plain_consume_produce_baseline-2   1   1 ns/op   1000000 events/s
BenchmarkPipeline/walletsync_processor-2   1   1 ns/op   400000 events/s
BenchmarkPipeline/walletsync_processor-2   1   1 ns/op   350000 events/s
--- SKIP: BenchmarkSink
PASS`
	res := map[string]map[string]map[string][]float64{"pipeline": parseBench(strings.NewReader(out))}
	var b strings.Builder
	var groups []benchGroup
	for _, g := range benchSuite() {
		if g.name == "pipeline" || g.name == "clickhouse" {
			groups = append(groups, g)
		}
	}
	benchTable(&b, groups, res)
	got := b.String()
	for _, want := range []string{"350.0k events/s", "1.50M events/s", "0.23", "(not run)", "ratio ≥ 0.5"} {
		if !strings.Contains(got, want) {
			t.Errorf("bench table lacks %q:\n%s", want, got)
		}
	}
}

// --only runs exactly the suites it names, whatever their order in the
// suite (a suite named before the end once let every later one run too).
func TestBenchSelectsOnlyTheNamedSuites(t *testing.T) {
	names := func(gs []benchGroup) (out []string) {
		for _, g := range gs {
			out = append(out, g.name)
		}
		return out
	}
	all := benchSuite()
	if got, unknown := selectSuites(all, nil); len(got) != len(all) || unknown != nil {
		t.Errorf("no --only: %v, unknown %v", names(got), unknown)
	}
	got, unknown := selectSuites(all, map[string]bool{"clickhouse": true, "fold": true})
	if !slices.Equal(names(got), []string{"fold", "clickhouse"}) || unknown != nil {
		t.Errorf("--only clickhouse,fold: %v, unknown %v", names(got), unknown)
	}
	if _, unknown := selectSuites(all, map[string]bool{"zz": true, "crm": true, "aa": true}); !slices.Equal(unknown, []string{"aa", "zz"}) {
		t.Errorf("unknown suites %v, want [aa zz]", unknown)
	}
}

// A suite that does not exist stops the run before any go test starts.
func TestRunRefusesUnknownSuites(t *testing.T) {
	var out, log strings.Builder
	rep, err := Run(t.Context(), Config{Only: []string{" fold", "", "nosuch"}, Out: &out, Log: &log})
	if err == nil || err.Error() != "unknown suites [nosuch]" || rep.Failed != nil || out.Len() != 0 || log.Len() != 0 {
		t.Errorf("Run: %v, %+v, table %q, log %q", err, rep, out.String(), log.String())
	}
}
