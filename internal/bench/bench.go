// Package bench is the performance suite of the issues — benchmarks in the
// source tree, run with "go test -bench" — and the table "walletsync bench"
// prints: the median of each figure next to the baseline measured in the
// same run, their ratio, and the goal. It lives apart from the command so
// that the binary's command file only turns flags into a Config.
package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// benchGroup is one `go test -bench` run of the suite.
type benchGroup struct {
	name, pkg, pattern, benchtime string
	rows                          []benchRow
}

// benchRow is one figure of the table: a benchmark's metric, and the
// baseline measured in the same run it is compared with.
type benchRow struct {
	figure, bench, metric, baseline, goal string
	lowerIsBetter                         bool
}

// benchSuite is the performance suite of the issues, as benchmarks in the
// source tree.
func benchSuite() []benchGroup {
	return []benchGroup{
		{"fold", ".", "^(BenchmarkDecode|BenchmarkDecodeDedupeFold|BenchmarkStateBytes)$", "", []benchRow{
			{figure: "decode + validate", bench: "BenchmarkDecode/walletsync", metric: "events/s", baseline: "BenchmarkDecode/encoding_json_baseline"},
			{figure: "decode + dedupe + fold, one core", bench: "BenchmarkDecodeDedupeFold/walletsync", metric: "events/s", baseline: "BenchmarkDecodeDedupeFold/encoding_json_baseline", goal: "≥ 1,000,000/s"},
			{figure: "fold state in memory, one pass per customer", bench: "BenchmarkStateBytes/one_register", metric: "bytes/customer", lowerIsBetter: true},
		}},
		{"fold-command", "./cmd/walletsync", "^BenchmarkFoldCommand$", "2x", []benchRow{
			{figure: "walletsync fold, 1M-line file", bench: "BenchmarkFoldCommand", metric: "lines/s", goal: "≥ 500,000/s"},
		}},
		{"ingest", "./ingest", "^(BenchmarkIngestNDJSON|BenchmarkWebhook)$", "", []benchRow{
			{figure: "POST /v1/events NDJSON", bench: "BenchmarkIngestNDJSON/post_v1_events", metric: "events/s", baseline: "BenchmarkIngestNDJSON/direct_produce_baseline", goal: "≥ 300,000/s"},
			{figure: "signed webhooks, 32 concurrent", bench: "BenchmarkWebhook", metric: "req/s", goal: "≥ 10,000/s"},
			{figure: "signed webhooks, p99 latency", bench: "BenchmarkWebhook", metric: "p99-ms", goal: "< 20 ms", lowerIsBetter: true},
		}},
		{"pipeline", "./processors", "^BenchmarkPipeline$", "1x", []benchRow{
			{figure: "exactly-once processor", bench: "BenchmarkPipeline/walletsync_processor", metric: "events/s", baseline: "BenchmarkPipeline/plain_consume_produce_baseline", goal: "≥ 200,000/s, ratio ≥ 0.5"},
			{figure: "floor: transactions, the processor's 2 outputs", bench: "BenchmarkPipeline/transactional_copy_2_outputs", metric: "events/s", baseline: "BenchmarkPipeline/plain_consume_produce_baseline"},
			{figure: "floor: the same + decoding", bench: "BenchmarkPipeline/transactional_parse_copy_2_outputs", metric: "events/s", baseline: "BenchmarkPipeline/plain_consume_produce_baseline"},
			{figure: "exactly-once processor vs that floor", bench: "BenchmarkPipeline/walletsync_processor", metric: "events/s", baseline: "BenchmarkPipeline/transactional_parse_copy_2_outputs"},
			{figure: "CPU per event, broker included: processor", bench: "BenchmarkPipeline/walletsync_processor", metric: "cpu-µs/event", baseline: "BenchmarkPipeline/plain_consume_produce_baseline", lowerIsBetter: true},
			{figure: "CPU per event: floor with decoding", bench: "BenchmarkPipeline/transactional_parse_copy_2_outputs", metric: "cpu-µs/event", baseline: "BenchmarkPipeline/plain_consume_produce_baseline", lowerIsBetter: true},
		}},
		{"clickhouse", "./sinks/clickhouse", "^BenchmarkSink$", "", []benchRow{
			{figure: "ClickHouse sink", bench: "BenchmarkSink/sink", metric: "rows/s", baseline: "BenchmarkSink/bare_prepare_batch_baseline", goal: "≥ 1M rows/s, ratio ≥ 0.7"},
		}},
		{"crm", "./sinks/crm", "^(BenchmarkDelivery|BenchmarkFlappyStream)$", "1x", []benchRow{
			{figure: "CRM webhook, changes delivered (5 ms server)", bench: "BenchmarkDelivery/webhook", metric: "changes/s", goal: "≥ 1,000/s"},
			{figure: "CRM HubSpot batch, changes delivered (5 ms server)", bench: "BenchmarkDelivery/hubspot", metric: "changes/s", goal: "≥ 5,000/s"},
			{figure: "CRM writes per 1,000 events, flappy stream", bench: "BenchmarkFlappyStream/walletsync_settle_1s", metric: "writes/1000events", baseline: "BenchmarkFlappyStream/plain_forwarder_baseline", lowerIsBetter: true},
		}},
		{"backfill", "./ingest/passapi", "^BenchmarkBackfill$", "1x", []benchRow{
			{figure: "backfill, 1M passes", bench: "BenchmarkBackfill", metric: "s/1M-passes", goal: "< 60 s", lowerIsBetter: true},
		}},
		{"replay", "./cmd/walletsync", "^BenchmarkReplayArchive$", "1x", []benchRow{
			{figure: "replay from the Parquet archive", bench: "BenchmarkReplayArchive/replay_archive", metric: "events/s", baseline: "BenchmarkReplayArchive/produce_encoded_records_baseline", goal: "≥ 1,000,000/s"},
		}},
	}
}

// parseBench reads `go test -bench` output: benchmark name (without the
// -GOMAXPROCS suffix) → metric → one value per run. Skipped benchmarks and
// other lines are ignored.
func parseBench(r io.Reader) map[string]map[string][]float64 {
	out := map[string]map[string][]float64{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		if out[name] == nil {
			out[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				out[name][f[i+1]] = append(out[name][f[i+1]], v)
			}
		}
	}
	return out
}

func median(vs []float64) (float64, bool) {
	if len(vs) == 0 {
		return 0, false
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2], true
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2, true
}

func human(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// benchTable prints the figures with their baselines and ratios.
func benchTable(w io.Writer, groups []benchGroup, results map[string]map[string]map[string][]float64) {
	tw := tabwriter.NewWriter(w, 2, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "suite\tfigure\tmedian\tbaseline (same run)\tratio\tgoal")
	for _, g := range groups {
		res := results[g.name]
		for _, row := range g.rows {
			v, ok := median(res[row.bench][row.metric])
			if !ok {
				fmt.Fprintf(tw, "%s\t%s\t(not run)\t\t\t%s\n", g.name, row.figure, row.goal)
				continue
			}
			base, ratio := "", ""
			if row.baseline != "" {
				if bv, ok := median(res[row.baseline][row.metric]); ok && bv > 0 {
					base = human(bv) + " " + row.metric
					ratio = strconv.FormatFloat(v/bv, 'f', 2, 64)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s %s\t%s\t%s\t%s\n", g.name, row.figure, human(v), row.metric, base, ratio, row.goal)
		}
	}
	tw.Flush()
}

// moduleRoot finds the walletsync source tree from dir upwards.
func moduleRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/walletsync/walletsync\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("not inside the walletsync source tree (the suite runs its benchmarks with go test): use --src")
		}
	}
}

// DefaultCount is the runs of each benchmark when Config.Count is 0.
const DefaultCount = 3

// Config configures Run.
type Config struct {
	// Src is the walletsync source tree (default: the tree around the
	// working directory), where the suite runs go test.
	Src string
	// Count is the runs of each benchmark (default DefaultCount; less than
	// 0: 1); the table shows medians.
	Count int
	// Only names the suites to run (blank names are ignored; none: all).
	Only []string
	Out  io.Writer // the table (default os.Stdout)
	// Log shows each go test command as it starts, and the end of the
	// output of one that failed (default os.Stderr).
	Log io.Writer
}

// Report is what a run did; its figures are in the table.
type Report struct {
	Failed []string // the suites whose go test failed
}

// Run runs the suites of cfg.Only with "go test -bench" in the source tree,
// cfg.Count times each, and prints one table: the median of each figure, the
// baseline measured in the same run, their ratio, and the goal. A suite that
// fails is reported and shown as not run, and the others still run; the
// error is for a run that cannot start (no source tree, no Go toolchain, a
// suite that does not exist), before anything ran.
func Run(ctx context.Context, cfg Config) (Report, error) {
	var rep Report
	if cfg.Count == 0 {
		cfg.Count = DefaultCount
	}
	if cfg.Out == nil {
		cfg.Out = os.Stdout
	}
	if cfg.Log == nil {
		cfg.Log = os.Stderr
	}
	root := cfg.Src
	if root == "" {
		wd, _ := os.Getwd()
		var err error
		if root, err = moduleRoot(wd); err != nil {
			return rep, err
		}
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return rep, errors.New("the suite needs the Go toolchain (go) in PATH")
	}
	want := map[string]bool{}
	for _, s := range cfg.Only {
		if s = strings.TrimSpace(s); s != "" {
			want[s] = true
		}
	}
	groups, unknown := selectSuites(benchSuite(), want)
	if len(unknown) > 0 {
		return rep, fmt.Errorf("unknown suites %v", unknown)
	}
	results := map[string]map[string]map[string][]float64{}
	for _, g := range groups {
		a := []string{"test", "-run", "^$", "-bench", g.pattern, "-count", strconv.Itoa(max(cfg.Count, 1)), "-timeout", "30m"}
		if g.benchtime != "" {
			a = append(a, "-benchtime", g.benchtime)
		}
		a = append(a, g.pkg)
		fmt.Fprintf(cfg.Log, "running %s: go %s\n", g.name, strings.Join(a, " "))
		cmd := exec.CommandContext(ctx, goBin, a...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			rep.Failed = append(rep.Failed, g.name)
			fmt.Fprintf(cfg.Log, "%s failed: %v\n%s\n", g.name, err, lastLines(string(out), 20))
		}
		results[g.name] = parseBench(strings.NewReader(string(out)))
	}
	benchTable(cfg.Out, groups, results)
	return rep, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// selectSuites keeps the suites named in want, all of them when want is
// empty, and returns the names that match none.
func selectSuites(all []benchGroup, want map[string]bool) (groups []benchGroup, unknown []string) {
	known := map[string]bool{}
	for _, g := range all {
		known[g.name] = true
		if len(want) == 0 || want[g.name] {
			groups = append(groups, g)
		}
	}
	for name := range want {
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	return groups, unknown
}
