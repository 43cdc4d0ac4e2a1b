package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/walletsync/walletsync/queries"
	chquery "github.com/walletsync/walletsync/queries/clickhouse"
	"github.com/walletsync/walletsync/queries/embedded"
)

// insightMain is `walletsync query NAME …`: one insight, printed.
func insightMain(ctx context.Context, e env, f *roleFlags, args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(e.stderr, "walletsync query: one insight name at most: daily, status, installed-base, retention or funnel")
		return exitUsage
	}
	q, err := queries.ParseQuery(args[0], f.from, f.to, f.by)
	if err != nil {
		fmt.Fprintf(e.stderr, "walletsync query: %v\n", err)
		return exitUsage
	}
	switch f.format {
	case "table", "json", "csv":
	default:
		fmt.Fprintf(e.stderr, "walletsync query: --format: want table, json or csv, got %q\n", f.format)
		return exitUsage
	}
	var engine queries.Engine
	switch {
	case f.clickhouseDSN != "":
		conn, err := dialClickHouse(f.clickhouseDSN)
		if err != nil {
			fmt.Fprintf(e.stderr, "walletsync query: %v\n", err)
			return exitUsage
		}
		defer conn.Close()
		engine = &chquery.Engine{Conn: conn}
	case f.archiveDir != "":
		engine = embedded.New(f.archiveDir)
	default:
		fmt.Fprintln(e.stderr, "walletsync query: --clickhouse or --archive-dir is required to answer insights")
		return exitUsage
	}
	ans, err := engine.Insight(ctx, q)
	if err != nil {
		if errors.Is(err, queries.ErrNotImplemented) {
			fmt.Fprintf(e.stderr, "walletsync query: %s is not available yet\n", q.Name)
			return exitUsage
		}
		fmt.Fprintf(e.stderr, "walletsync query: the insight store failed: %v\n", err)
		return exitFail
	}
	if err := printAnswer(e.stdout, f.format, queries.Columns(q), ans); err != nil {
		fmt.Fprintf(e.stderr, "walletsync query: %v\n", err)
		return exitFail
	}
	return exitOK
}

func printAnswer(w io.Writer, format string, cols []string, ans queries.Answer) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(ans)
	case "csv":
		cw := csv.NewWriter(w)
		_ = cw.Write(cols)
		for _, r := range ans.Rows {
			rec := make([]string, len(cols))
			for i, c := range cols {
				rec[i] = fmt.Sprint(r[c])
			}
			_ = cw.Write(rec)
		}
		cw.Flush()
		return cw.Error()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for i, c := range cols {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c)
	}
	fmt.Fprintln(tw, "\t")
	for _, r := range ans.Rows {
		for i, c := range cols {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, r[c])
		}
		fmt.Fprintln(tw, "\t")
	}
	return tw.Flush()
}
