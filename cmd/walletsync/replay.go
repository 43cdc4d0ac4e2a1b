package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/walletsync/walletsync/replay"
	"github.com/walletsync/walletsync/sinks/crm"
)

func replayCommand() command {
	return command{
		name:    "replay",
		args:    "topic|archive|rebuild|crm-dlq",
		summary: "replay history: a topic into another, the archive into wallet.events, a full rebuild, a CRM's dead letters",
		help: `
walletsync replay topic --from-topic T --to-topic U [--from-offset N | --from-time RFC3339]
    copies the committed records of T (key, value, headers, timestamp) from
    that offset or time in every partition up to T's end when the replay
    started, into U.
walletsync replay archive --archive-dir DIR [--to-topic wallet.events]
    produces every archived clean event, as canonical JSON keyed by
    customerId, into wallet.events: the processors fold it again, and drop
    the eventIds they still remember (--dedupe-window), so replaying twice
    changes no status.
walletsync replay rebuild --from archive|topic [--archive-dir DIR] [--out FILE]
                          [--clickhouse DSN] [--destination NAME …]
    folds every clean event (from the archive, or from wallet.events.clean)
    into a fresh state with the current fold rules, prints the statuses as
    NDJSON sorted by customerId (as "walletsync fold"), and when asked loads
    the events and statuses into ClickHouse and sends every status to a CRM.
walletsync replay crm-dlq --destination NAME
    sends the current status of every customer NAME's sink dead-lettered,
    once (the replay's position is kept in a consumer group).

Every replay shows a progress bar on a terminal and prints a JSON summary;
exit 1 when it failed (a replay can always be run again), 2 on bad usage.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			f := &roleFlags{}
			c := &f.crm
			f.kafkaFlags(fs, "Kafka `brokers` (host:port,…)")
			f.clickhouseFlags(fs, "rebuild: also load events and statuses into this ClickHouse `DSN`")
			c.register(fs)
			fs.StringVar(&c.destination, "destination", "", "crm-dlq: the CRM sink whose dead letters to send; rebuild: send every status to this CRM (webhook, actito or hubspot)")
			fromTopic := fs.String("from-topic", "", "topic: the topic to copy")
			toTopic := fs.String("to-topic", "", "topic: the topic to copy into; archive: the topic to replay into (default wallet.events)")
			fromOffset := fs.Int64("from-offset", -1, "topic: start at this offset in every partition (default: the start)")
			fromTime := fs.String("from-time", "", "topic: start at the first record at or after this time (RFC 3339)")
			archiveDir := fs.String("archive-dir", "", "archive, rebuild: the Parquet archive `directory`")
			from := fs.String("from", "", "rebuild: read the events from the archive or the topic (wallet.events.clean)")
			out := fs.String("out", "-", "rebuild: write the statuses to this `file` (- for stdout)")
			deviceRemovals := deviceRemovalsFlag(fs)
			return func(ctx context.Context, e env, args []string) int {
				if args = parseAfterName(fs, args); args == nil {
					return exitUsage
				}
				if len(args) != 1 {
					fmt.Fprintln(e.stderr, "walletsync replay: name what to replay: topic, archive, rebuild or crm-dlq")
					return exitUsage
				}
				usage := func(msg string) int {
					fmt.Fprintf(e.stderr, "walletsync replay %s: %s\n", args[0], msg)
					return exitUsage
				}
				brokers := f.brokerList()
				// The summary shows what the replay's report says; a zero report
				// (a replay that stopped before it had anything to count) adds
				// nothing to the error.
				summary := map[string]any{"replay": args[0]}
				var err error
				switch args[0] {
				case "topic":
					if len(brokers) == 0 || *fromTopic == "" || *toTopic == "" {
						return usage("--brokers, --from-topic and --to-topic are required")
					}
					if *fromTopic == *toTopic {
						return usage("--from-topic and --to-topic must differ")
					}
					var since time.Time
					if *fromTime != "" {
						if since, err = time.Parse(time.RFC3339, *fromTime); err != nil {
							return usage("--from-time: want RFC 3339, e.g. 2026-03-01T00:00:00Z")
						}
					}
					var rep replay.TopicReport
					rep, err = replay.Topic(ctx, replay.TopicConfig{Brokers: brokers, From: *fromTopic, To: *toTopic,
						FromOffset: *fromOffset, Since: since, Progress: progressBar(e)})
					if rep != (replay.TopicReport{}) {
						summary["from"], summary["to"], summary["records"] = rep.From, rep.To, rep.Records
					}
				case "archive":
					if len(brokers) == 0 || *archiveDir == "" {
						return usage("--brokers and --archive-dir are required")
					}
					var rep replay.ArchiveReport
					rep, err = replay.Archive(ctx, replay.ArchiveConfig{Brokers: brokers, Dir: *archiveDir, To: *toTopic, Progress: progressBar(e)})
					if rep != (replay.ArchiveReport{}) {
						summary["archive"], summary["to"], summary["events"] = rep.Archive, rep.To, rep.Events
					}
				case "rebuild":
					switch *from {
					case replay.FromArchive:
						if *archiveDir == "" {
							return usage("--from archive needs --archive-dir")
						}
					case replay.FromTopic:
						if len(brokers) == 0 {
							return usage("--from topic needs --brokers")
						}
					default:
						return usage("--from must be archive or topic")
					}
					var dest crm.Destination
					if c.destination != "" {
						ds, derr := c.destinations(c.destination)
						if derr != nil {
							return usage(derr.Error())
						}
						dest = ds[0]
					}
					cfg := replay.RebuildConfig{From: *from, Dir: *archiveDir, Brokers: brokers, Out: *out, Stdout: e.stdout,
						CRM: dest, Progress: progressBar(e), AllUninstalls: !*deviceRemovals}
					if f.clickhouseDSN != "" {
						cfg.ClickHouse = func() (driver.Conn, error) { return dialClickHouse(f.clickhouseDSN) }
					}
					var rep replay.RebuildReport
					rep, err = replay.Rebuild(ctx, cfg)
					if rep != (replay.RebuildReport{}) {
						summary["from"], summary["events"], summary["customers"] = rep.From, rep.Events, rep.Customers
					}
					if rep.ClickHouse {
						summary["clickhouse"] = "loaded"
					}
					if rep.CRM != "" {
						summary["crm"] = rep.CRM
					}
				case "crm-dlq":
					if len(brokers) == 0 || c.destination == "" {
						return usage("--brokers and --destination are required")
					}
					ds, derr := c.destinations(c.destination)
					if derr != nil {
						return usage(derr.Error())
					}
					var rep crm.ReplayReport
					rep, err = crm.Replay(ctx, crm.ReplayConfig{Brokers: brokers, Progress: progressBar(e)}, ds[0])
					summary["destination"], summary["read"], summary["otherDestinations"] = ds[0].Name(), rep.Read, rep.Skipped
					summary["customers"], summary["delivered"], summary["forgotten"] = rep.Customers, rep.Delivered, rep.Missing
				default:
					return usage("unknown; want topic, archive, rebuild or crm-dlq")
				}
				if err != nil {
					summary["error"] = err.Error()
				}
				b, _ := json.Marshal(summary)
				fmt.Fprintln(e.stderr, string(b))
				if err != nil {
					return exitFail
				}
				return exitOK
			}
		},
	}
}
