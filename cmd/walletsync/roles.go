package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/sinks/parquet"
)

func runRoleCommand() command {
	return command{
		name:    "run",
		summary: "the whole pipeline in one process on an embedded Kafka",
		help: `
Runs ingest, the processors, the read API with the dashboard at /, and the
Parquet archive in one process, plus the sinks that are configured
(--clickhouse, --crm-webhook-url, --actito-api-key, --hubspot-token) and the
scheduled backfill (--passapi-url). Without --brokers it starts an embedded
Kafka-protocol broker (kfake) persisted under --data-dir, so stopping and
starting again keeps every event and status; with --brokers it uses that
Kafka or Redpanda instead. --demo plays simulated traffic against it, with a
local Pass API for the backfill: open http://localhost:8080/.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			f := &roleFlags{}
			f.common(fs, ":8080")
			f.kafkaFlags(fs, "Kafka `brokers` (host:port,…); empty: the embedded broker")
			fs.StringVar(&f.dataDir, "data-dir", "walletsync-data", "`directory` for the embedded broker's data")
			fs.IntVar(&f.embeddedBrokers, "embedded-brokers", 1, "brokers in the embedded cluster")
			fs.StringVar(&f.kafkaListen, "kafka-listen", "", "`HOST:PORT` of the embedded broker, for Kafka clients outside the process (kcat); with several --embedded-brokers the others take the next ports; empty: free loopback ports")
			f.ingestFlags(fs)
			f.tokenFlag(fs)
			f.processFlags(fs)
			f.clickhouseFlags(fs, "ClickHouse `DSN` (clickhouse://user:password@host:9000/db; @FILE reads it): also run the ClickHouse sink")
			f.crm.register(fs)
			f.passapi.register(fs)
			fs.BoolVar(&f.demo, "demo", false, "demo mode: simulate traffic against this process, with a local Pass API the backfill reads every minute")
			f.sim.register(fs, false)
			f.archiveFlags(fs, "Parquet archive `directory` of the clean events and statuses (default: DATA-DIR/archive; \"none\": no archive); without --clickhouse the insights are answered from it", 10*time.Second)
			return func(ctx context.Context, e env, args []string) int {
				switch f.archiveDir {
				case "":
					f.archiveDir = filepath.Join(f.dataDir, "archive")
				case "none":
					f.archiveDir = ""
				}
				if f.demo {
					d := f.setUpDemo(&e)
					defer d.api.Close()
					f.demoRun = d.run(f)
				}
				return roleMain(ctx, e, f, args, "run")
			}
		},
	}
}

func ingestCommand() command {
	return command{
		name:    "ingest",
		summary: "the HTTP ingest alone, against Kafka",
		help: `
Serves POST /v1/events, /v1/webhooks/wallet-crew and /v1/connector/installation
and writes the events to wallet.events on --brokers. Run as many as you need
behind a load balancer.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			f := &roleFlags{}
			f.common(fs, ":8080")
			f.kafkaFlags(fs, "Kafka `brokers` (host:port,…), required")
			f.ingestFlags(fs)
			f.tokenFlag(fs)
			return func(ctx context.Context, e env, args []string) int {
				return roleMain(ctx, e, f, args, "ingest")
			}
		},
	}
}

func processCommand() command {
	return command{
		name:    "process",
		summary: "one exactly-once processor, against Kafka",
		help: `
Joins the processors' consumer group on wallet.events and folds the
partitions it is given into wallet.events.clean and wallet.status, exactly
once. Start several (each with its own --transactional-id) to share the
partitions. --http serves /metrics, /healthz and /readyz.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			f := &roleFlags{}
			f.common(fs, ":8081")
			f.kafkaFlags(fs, "Kafka `brokers` (host:port,…), required")
			f.processFlags(fs)
			return func(ctx context.Context, e env, args []string) int {
				return roleMain(ctx, e, f, args, "process")
			}
		},
	}
}

func queryCommand() command {
	return command{
		name:    "query",
		args:    "[NAME]",
		summary: "the read API alone, or one insight query (NAME)",
		help: `
Without NAME: serves GET /v1/customers/{customerId}, /v1/status,
/v1/pipeline and (with --clickhouse or --archive-dir) /v1/insights/{name}
from --brokers.

With NAME (daily, status, installed-base, retention or funnel): answers that insight
from --clickhouse (or, without it, the Parquet archive in --archive-dir) for --from (inclusive) to --to (exclusive), UTC days, and
prints it as a table, JSON or CSV. Bad parameters exit 2, a store failure 1.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			f := &roleFlags{}
			f.common(fs, ":8082")
			f.kafkaFlags(fs, "Kafka `brokers` (host:port,…), required")
			f.tokenFlag(fs)
			fs.StringVar(&f.group, "group", "walletsync-process", "consumer group of the processors, for /v1/pipeline")
			fs.StringVar(&f.clickhouseDSN, "clickhouse", "", "ClickHouse `DSN` answering insights (clickhouse://user:password@host:9000/db; @FILE reads it)")
			fs.StringVar(&f.archiveDir, "archive-dir", "", "without --clickhouse: answer insights from this Parquet archive `directory`, in process")
			fs.StringVar(&f.from, "from", "", "insight: first `day` (YYYY-MM-DD, UTC), inclusive")
			fs.StringVar(&f.to, "to", "", "insight: last `day` (YYYY-MM-DD, UTC), exclusive")
			fs.StringVar(&f.by, "by", "", "insight daily: split by passType, medium or source")
			fs.StringVar(&f.format, "format", "table", "insight: output `format`, table, json or csv")
			return func(ctx context.Context, e env, args []string) int {
				if len(args) > 0 {
					// Flags may follow the name: "query daily --from …".
					name := args[0]
					if err := fs.Parse(args[1:]); err != nil {
						return exitUsage
					}
					return insightMain(ctx, e, f, append([]string{name}, fs.Args()...))
				}
				return roleMain(ctx, e, f, args, "query")
			}
		},
	}
}

func sinkCommand() command {
	return command{
		name:    "sink",
		args:    "clickhouse|crm|parquet",
		summary: "one sink alone, against Kafka: clickhouse, crm --destination webhook|actito|hubspot, or parquet",
		help: `
"walletsync sink clickhouse" copies wallet.events.clean and wallet.status
into ClickHouse (creating or upgrading its schema first), in batches by rows
and time, committing offsets only after ClickHouse acknowledged the rows.

"walletsync sink crm --destination webhook|actito|hubspot" keeps one CRM in
step with wallet.status: the newest version per customer after the settle
window, retried until acknowledged or dead-lettered to wallet.crm.dlq.

"walletsync sink parquet --archive-dir DIR" archives wallet.events.clean and
wallet.status as Parquet files under DIR (events/day=…, status/day=…),
resuming after the last offset its files cover; one per directory.

Several of each may run: they share the partitions in one consumer group.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			f := &roleFlags{}
			f.common(fs, ":8083")
			f.kafkaFlags(fs, "Kafka `brokers` (host:port,…), required")
			f.clickhouseFlags(fs, "ClickHouse `DSN` (clickhouse://user:password@host:9000/db; @FILE reads it), required by the clickhouse sink")
			f.crm.register(fs)
			fs.StringVar(&f.crm.destination, "destination", "", "the crm sink's destination: webhook, actito or hubspot")
			f.archiveFlags(fs, "the parquet sink's archive `directory`, required by it", parquet.DefaultRollInterval)
			return func(ctx context.Context, e env, args []string) int {
				if args = parseAfterName(fs, args); args == nil {
					return exitUsage
				}
				if len(args) != 1 || (args[0] != "clickhouse" && args[0] != "crm" && args[0] != "parquet") {
					fmt.Fprintln(e.stderr, `walletsync sink: name the sink: "walletsync sink clickhouse", "walletsync sink crm --destination NAME" or "walletsync sink parquet --archive-dir DIR"`)
					return exitUsage
				}
				if args[0] == "clickhouse" && f.clickhouseDSN == "" {
					fmt.Fprintln(e.stderr, "walletsync sink clickhouse: --clickhouse is required")
					return exitUsage
				}
				if args[0] == "crm" && f.crm.destination == "" {
					fmt.Fprintln(e.stderr, "walletsync sink crm: --destination is required (webhook, actito or hubspot)")
					return exitUsage
				}
				if args[0] == "parquet" && f.archiveDir == "" {
					fmt.Fprintln(e.stderr, "walletsync sink parquet: --archive-dir is required")
					return exitUsage
				}
				if args[0] == "crm" {
					// Settings are checked before anything connects.
					if _, err := f.crm.destinations(f.crm.destination); err != nil {
						fmt.Fprintf(e.stderr, "walletsync sink crm: %v\n", err)
						return exitUsage
					}
				}
				return roleMain(ctx, e, f, nil, "sink "+args[0])
			}
		},
	}
}

func roleMain(ctx context.Context, e env, f *roleFlags, args []string, role string) int {
	if len(args) > 0 {
		fmt.Fprintf(e.stderr, "walletsync %s: unexpected arguments %q\n", role, args)
		return exitUsage
	}
	log, err := f.logger(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "walletsync %s: %v\n", role, err)
		return exitUsage
	}
	brokers := f.brokerList()
	var emb *kafka.Embedded
	if role == "run" && len(brokers) == 0 {
		dir := f.dataDir
		if dir != "" {
			if abs, err := filepath.Abs(dir); err == nil {
				dir = abs
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				fmt.Fprintf(e.stderr, "walletsync run: --data-dir: %v\n", err)
				return exitFail
			}
		}
		emb, err = kafka.StartEmbedded(kafka.EmbeddedConfig{DataDir: dir, Brokers: f.embeddedBrokers, Listen: f.kafkaListen, MinFreeBytes: f.minFreeBytes})
		if err != nil {
			fmt.Fprintf(e.stderr, "walletsync run: %v\n", err)
			return exitFail
		}
		defer emb.Close()
		brokers = emb.Brokers()
		log.Info("embedded Kafka started", "dataDir", dir, "brokers", brokers)
		if len(emb.CrashAborts) > 0 {
			log.Warn("embedded Kafka: transactions a crash left open were ended with an abort marker", "partitions", emb.CrashAborts)
		}
	}
	if len(brokers) == 0 {
		fmt.Fprintf(e.stderr, "walletsync %s: --brokers is required\n", role)
		return exitUsage
	}
	n, err := newNode(log, brokers)
	if err != nil {
		fmt.Fprintf(e.stderr, "walletsync %s: %v\n", role, err)
		return exitFail
	}
	if emb != nil {
		n.checks = append(n.checks, readyCheck{"embedded Kafka", emb.DiskErr})
	}
	var setupErr error
	switch role {
	case "run":
		if setupErr = n.addIngest(f); setupErr == nil {
			if setupErr = n.addProcess(f); setupErr == nil && f.clickhouseDSN != "" {
				setupErr = n.addClickHouse(f)
			}
			if setupErr == nil {
				setupErr = n.addCRM(&f.crm, "")
			}
			if setupErr == nil && f.archiveDir != "" {
				setupErr = n.addArchive(f)
			}
			if setupErr == nil && f.passapi.url != "" {
				setupErr = n.addBackfill(f)
			}
			if setupErr == nil && f.demoRun != nil {
				n.comps = append(n.comps, f.demoRun)
			}
			if setupErr == nil {
				setupErr = n.addQuery(f)
			}
		}
	case "sink clickhouse":
		setupErr = n.addClickHouse(f)
	case "sink crm":
		setupErr = n.addCRM(&f.crm, f.crm.destination)
	case "sink parquet":
		setupErr = n.addArchive(f)
	case "backfill":
		setupErr = n.addBackfill(f)
	case "ingest":
		setupErr = n.addIngest(f)
	case "process":
		setupErr = n.addProcess(f)
	case "query":
		setupErr = n.addQuery(f)
	}
	if setupErr != nil {
		fmt.Fprintf(e.stderr, "walletsync %s: %v\n", role, setupErr)
		if ue := (*usageError)(nil); errors.As(setupErr, &ue) {
			return exitUsage
		}
		return exitFail
	}
	if err := n.spec.Check(); err != nil {
		fmt.Fprintf(e.stderr, "walletsync %s: the topology: %v\n", role, err)
		return exitFail
	}
	// Once the configuration is known to be good: the topics the
	// topology uses (the read API and the ClickHouse sink only read, and
	// leave creating them to the roles that write).
	if role != "query" && role != "sink clickhouse" {
		if err := n.ensureTopics(ctx, f); err != nil {
			fmt.Fprintf(e.stderr, "walletsync %s: %v\n", role, err)
			return exitFail
		}
	}
	if role == "process" {
		// No read API here, but readiness still watches the processors'
		// own progress.
		n.watchProgress(f, n.lag(f, nil))
	}
	if err := n.serve(ctx, f.http, e.ready); err != nil {
		fmt.Fprintf(e.stderr, "walletsync %s: %v\n", role, err)
		return exitFail
	}
	return exitOK
}

// parseAfterName parses the flags that follow a subcommand's name
// ("walletsync sink crm --destination hubspot"); nil when they are wrong
// (the flag package has said why).
func parseAfterName(fs *flag.FlagSet, args []string) []string {
	if len(args) < 2 {
		return args
	}
	if err := fs.Parse(args[1:]); err != nil {
		return nil
	}
	return append([]string{args[0]}, fs.Args()...)
}
