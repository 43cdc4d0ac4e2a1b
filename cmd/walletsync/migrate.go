package main

import (
	"context"
	"flag"
	"fmt"

	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
)

func migrateCommand() command {
	return command{
		name:    "migrate",
		summary: "create or upgrade the ClickHouse schema",
		help: `
Applies the schema migrations embedded in this binary that the ClickHouse
database lacks, and prints their names. Safe to run again and from several
places at once: every step is CREATE … IF NOT EXISTS.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			dsn := fs.String("clickhouse", "", "ClickHouse `DSN`, e.g. clickhouse://user:password@host:9000/database (native protocol); @FILE reads it")
			return func(ctx context.Context, e env, args []string) int {
				if *dsn == "" || len(args) > 0 {
					fmt.Fprintln(e.stderr, "walletsync migrate: --clickhouse DSN is required and nothing else")
					return exitUsage
				}
				conn, err := dialClickHouse(*dsn)
				if err != nil {
					fmt.Fprintf(e.stderr, "walletsync migrate: %v\n", err)
					return exitUsage
				}
				defer conn.Close()
				done, err := chsink.Migrate(ctx, conn)
				for _, m := range done {
					fmt.Fprintln(e.stdout, "applied", m)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "walletsync migrate: %v\n", err)
					return exitFail
				}
				if len(done) == 0 {
					fmt.Fprintln(e.stdout, "schema up to date")
				}
				return exitOK
			}
		},
	}
}
