package main

import (
	"context"
	"flag"
	"fmt"
	"strings"

	"github.com/walletsync/walletsync/internal/bench"
)

// benchCommand is "walletsync bench"; the suite and its runner are
// internal/bench.
func benchCommand() command {
	return command{
		name:    "bench",
		summary: "run the performance suite and print each figure with its same-run baseline and ratio",
		help: `
Runs the benchmarks of the earlier issues — fold, ingest, pipeline,
ClickHouse sink (when clickhouse-server is installed), CRM sink, backfill,
replay — with "go test -bench" in the source tree (--src, default: the
tree around the current directory; needs the Go toolchain), --count times
each, and prints one table: the median of each figure, the baseline measured
in the same run, their ratio, and the goal. Takes about 5 minutes with
--count 3 on a 2-core machine; --only runs some suites.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			src := fs.String("src", "", "the walletsync source `directory`")
			count := fs.Int("count", bench.DefaultCount, "runs of each benchmark (the table shows medians)")
			only := fs.String("only", "", "comma-separated suites to run: fold, fold-command, ingest, pipeline, clickhouse, crm, backfill, replay")
			return func(ctx context.Context, e env, args []string) int {
				if len(args) > 0 {
					fmt.Fprintf(e.stderr, "walletsync bench: unexpected arguments %q\n", args)
					return exitUsage
				}
				// --count 0 runs each benchmark once: the zero Count is the
				// package's default.
				rep, err := bench.Run(ctx, bench.Config{Src: *src, Count: max(*count, 1), Only: strings.Split(*only, ","),
					Out: e.stdout, Log: e.stderr})
				if err != nil {
					// Nothing ran: the flags or the machine cannot run the suite.
					fmt.Fprintf(e.stderr, "walletsync bench: %v\n", err)
					return exitUsage
				}
				if len(rep.Failed) > 0 {
					return exitFail
				}
				return exitOK
			}
		},
	}
}
