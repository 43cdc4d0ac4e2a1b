package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/sinks/crm"
	"github.com/walletsync/walletsync/sinks/parquet"
	"github.com/walletsync/walletsync/wire"
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
					err = replayTopic(ctx, e, brokers, *fromTopic, *toTopic, *fromOffset, since, summary)
				case "archive":
					if len(brokers) == 0 || *archiveDir == "" {
						return usage("--brokers and --archive-dir are required")
					}
					target := *toTopic
					if target == "" {
						target = kafka.DefaultTopics().Events
					}
					err = replayArchive(ctx, e, brokers, *archiveDir, target, summary)
				case "rebuild":
					switch *from {
					case "archive":
						if *archiveDir == "" {
							return usage("--from archive needs --archive-dir")
						}
					case "topic":
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
					err = rebuild(ctx, e, brokers, *from, *archiveDir, *out, f.clickhouseDSN, dest, summary)
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

// replayTopic copies from's committed records, in each partition from the
// start offset (or time) up to the end as it was when the replay began.
func replayTopic(ctx context.Context, e env, brokers []string, from, to string, fromOffset int64, since time.Time, summary map[string]any) error {
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "walletsync-replay"), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, from)
	if err != nil {
		return err
	}
	var starts kadm.ListedOffsets
	if !since.IsZero() {
		if starts, err = adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), from); err != nil {
			return err
		}
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	bar := progressBar(e)
	var copied int64
	var prodErr firstErr
	var readErr error
	ends.Each(func(o kadm.ListedOffset) {
		if readErr != nil {
			return
		}
		start := fromOffset
		if s, ok := starts.Lookup(from, o.Partition); ok && s.Err == nil {
			start = s.Offset
		}
		_, readErr = kafka.ReadPartition(ctx, brokers, adm, from, o.Partition, start, func(r *kgo.Record) {
			copied++
			cl.Produce(ctx, &kgo.Record{Topic: to, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}, prodErr.promise)
			if bar != nil && copied%10_000 == 0 {
				bar(int(copied), int(total))
			}
		})
	})
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	summary["from"], summary["to"], summary["records"] = from, to, copied
	return errors.Join(readErr, prodErr.get())
}

// replayArchive produces every archived clean event into topic.
func replayArchive(ctx context.Context, e env, brokers []string, dir, topic string, summary map[string]any) error {
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "walletsync-replay"), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	bar := progressBar(e)
	var n int
	var prodErr firstErr
	// Reading and encoding on this goroutine, producing on another: the
	// two halves take about as long as each other.
	batches := make(chan []*kgo.Record, 8)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for recs := range batches {
			for _, r := range recs {
				cl.Produce(ctx, r, prodErr.promise)
			}
		}
	}()
	err = parquet.ScanEvents(dir, "", "", func(evs []walletsync.Event) error {
		// One allocation for the batch's values.
		var buf []byte
		recs := make([]*kgo.Record, len(evs))
		backing := make([]kgo.Record, len(evs))
		for i := range evs {
			start := len(buf)
			buf = wire.AppendEvent(buf, &evs[i])
			backing[i] = kgo.Record{Topic: topic, Key: []byte(evs[i].CustomerID), Value: buf[start:len(buf):len(buf)]}
			recs[i] = &backing[i]
			n++
		}
		select {
		case batches <- recs:
		case <-ctx.Done():
		}
		if bar != nil {
			bar(n, n)
		}
		return ctx.Err()
	})
	close(batches)
	<-produced
	if ferr := cl.Flush(ctx); err == nil {
		err = ferr
	}
	summary["archive"], summary["to"], summary["events"] = dir, topic, n
	return errors.Join(err, prodErr.get())
}

// rebuild folds every clean event into a fresh state and writes it out.
func rebuild(ctx context.Context, e env, brokers []string, from, dir, out, chDSN string, dest crm.Destination, summary map[string]any) error {
	fold := walletsync.NewFold()
	// Kept only to load ClickHouse, with what each event did to its
	// register's installed state, as the processors report it.
	var events []walletsync.Event
	var base []walletsync.BaseChange
	keep := chDSN != ""
	n := 0
	apply := func(ev *walletsync.Event) {
		bc := fold.ApplyBase(ev).Base
		n++
		if keep {
			events = append(events, *ev)
			base = append(base, bc)
		}
	}
	switch from {
	case "archive":
		err := parquet.ScanEvents(dir, "", "", func(evs []walletsync.Event) error {
			for i := range evs {
				apply(&evs[i])
			}
			return ctx.Err()
		})
		if err != nil {
			return err
		}
	case "topic":
		cl, err := kgo.NewClient(kafka.ClientOpts(brokers, "walletsync-rebuild")...)
		if err != nil {
			return err
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		topic := kafka.DefaultTopics().Clean
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return err
		}
		var dec wire.Decoder
		var readErr error
		ends.Each(func(o kadm.ListedOffset) {
			if readErr == nil {
				_, readErr = kafka.ReadPartition(ctx, brokers, adm, topic, o.Partition, -1, func(r *kgo.Record) {
					if ev, err := dec.Parse(r.Value); err == nil {
						apply(&ev)
					}
				})
			}
		})
		if readErr != nil {
			return readErr
		}
	}
	statuses := fold.Statuses()
	slices.SortFunc(statuses, func(a, b walletsync.Status) int { return strings.Compare(a.CustomerID, b.CustomerID) })
	w := e.stdout
	if out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriter(w)
	var line []byte
	for i := range statuses {
		line = wire.AppendStatus(line[:0], &statuses[i], false)
		line = append(line, '\n')
		bw.Write(line)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	summary["from"], summary["events"], summary["customers"] = from, n, len(statuses)
	if chDSN != "" {
		conn, err := dialClickHouse(chDSN)
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := chsink.Migrate(ctx, conn); err != nil {
			return err
		}
		// A rebuild loaded again into the same database (after one that
		// failed half-way, say) inserts rows that are already there; marking
		// their months first keeps daily counting each event once (see the
		// sink's dirty months). A fresh database needs no marks.
		var existing uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events").Scan(&existing); err != nil {
			return fmt.Errorf("loading ClickHouse: %w", err)
		}
		if existing > 0 {
			if err := chsink.MarkDirty(ctx, conn, chsink.EventMonths(events)); err != nil {
				return fmt.Errorf("loading ClickHouse: %w", err)
			}
		}
		for i := 0; i < len(events); i += 100_000 {
			if err := chsink.InsertEvents(ctx, conn, events[i:min(i+100_000, len(events))], base[i:min(i+100_000, len(events))]); err != nil {
				return fmt.Errorf("loading ClickHouse: %w", err)
			}
		}
		for i := 0; i < len(statuses); i += 100_000 {
			if err := chsink.InsertStatuses(ctx, conn, statuses[i:min(i+100_000, len(statuses))]); err != nil {
				return fmt.Errorf("loading ClickHouse: %w", err)
			}
		}
		summary["clickhouse"] = "loaded"
	}
	if dest != nil {
		if err := crm.Send(ctx, dest, "rebuild-"+time.Now().UTC().Format("20060102T150405")+":", statuses, 5, progressBar(e)); err != nil {
			return fmt.Errorf("sending to %s: %w", dest.Name(), err)
		}
		summary["crm"] = dest.Name()
	}
	return nil
}

// firstErr keeps the first error that produce callbacks (on the client's
// goroutines) report.
type firstErr struct {
	mu  sync.Mutex
	err error
}

func (f *firstErr) promise(_ *kgo.Record, err error) {
	if err != nil {
		f.mu.Lock()
		if f.err == nil {
			f.err = err
		}
		f.mu.Unlock()
	}
}

func (f *firstErr) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}
