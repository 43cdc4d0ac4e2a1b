// Package replay replays history: a topic's committed records into another
// topic, the Parquet archive into wallet.events, and a rebuild that folds
// every clean event into a fresh state with the current fold rules. Every
// replay can be run again after a failure. The CRM dead-letter replay lives
// with the CRM engine whose dead letters it reads (crm.Replay).
//
// Each replay returns a report of what it did; `walletsync replay` prints it
// as its JSON summary. A report is filled at the point the replay has
// something to count (its records flushed, its statuses written), so a zero
// report says the replay stopped before that, and its error says why.
package replay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/sinks/crm"
	"github.com/walletsync/walletsync/sinks/parquet"
	"github.com/walletsync/walletsync/wire"
)

// TopicConfig configures Topic.
type TopicConfig struct {
	Brokers []string
	From    string // the topic to copy
	To      string // the topic to copy into
	// FromOffset starts every partition at this offset (0 or negative: the
	// start of the log, as is any offset below it).
	FromOffset int64
	// Since, when set, starts each partition at its first record at or
	// after this time instead of FromOffset.
	Since time.Time
	// Progress, when set, is called every 10,000 records copied.
	Progress func(done, total int)
}

// TopicReport is what Topic copied, filled once the copy is flushed.
type TopicReport struct {
	From, To string
	Records  int64
}

// Topic copies cfg.From's committed records (key, value, headers,
// timestamp), in each partition from the start offset (or time) up to the
// end as it was when the replay began, into cfg.To.
func Topic(ctx context.Context, cfg TopicConfig) (TopicReport, error) {
	var rep TopicReport
	brokers, from, to, fromOffset, since := cfg.Brokers, cfg.From, cfg.To, cfg.FromOffset, cfg.Since
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "walletsync-replay"), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListCommittedOffsets(ctx, from)
	if err != nil {
		return rep, err
	}
	var starts kadm.ListedOffsets
	if !since.IsZero() {
		if starts, err = adm.ListOffsetsAfterMilli(ctx, since.UnixMilli(), from); err != nil {
			return rep, err
		}
	}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	bar := cfg.Progress
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
		return rep, err
	}
	rep.From, rep.To, rep.Records = from, to, copied
	return rep, errors.Join(readErr, prodErr.get())
}

// ArchiveConfig configures Archive.
type ArchiveConfig struct {
	Brokers []string
	Dir     string // the Parquet archive
	To      string // the topic to produce into (default wallet.events)
	// Progress, when set, is called after each batch read from the archive.
	Progress func(done, total int)
}

// ArchiveReport is what Archive produced, filled once it is flushed.
type ArchiveReport struct {
	Archive, To string
	Events      int
}

// Archive produces every archived clean event, as canonical JSON keyed by
// customerId, into cfg.To: the processors fold it again, and drop the
// eventIds they still remember, so replaying twice changes no status.
func Archive(ctx context.Context, cfg ArchiveConfig) (ArchiveReport, error) {
	var rep ArchiveReport
	brokers, dir, topic := cfg.Brokers, cfg.Dir, cfg.To
	if topic == "" {
		topic = kafka.DefaultTopics().Events
	}
	cl, err := kgo.NewClient(append(kafka.ClientOpts(brokers, "walletsync-replay"), kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	bar := cfg.Progress
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
	rep.Archive, rep.To, rep.Events = dir, topic, n
	return rep, errors.Join(err, prodErr.get())
}

// Where a rebuild reads the clean events (RebuildConfig.From).
const (
	FromArchive = "archive" // the Parquet archive in RebuildConfig.Dir
	FromTopic   = "topic"   // RebuildConfig.Topic on RebuildConfig.Brokers
)

// RebuildConfig configures Rebuild.
type RebuildConfig struct {
	From    string // FromArchive or FromTopic
	Dir     string // FromArchive: the Parquet archive
	Brokers []string
	Topic   string // FromTopic: the clean events' topic (default wallet.events.clean)
	// Out is the file the statuses are written to; "" or "-": Stdout. It is
	// created once every event is folded, so a rebuild that cannot read its
	// events leaves no file behind.
	Out    string
	Stdout io.Writer // default os.Stdout
	// ClickHouse, when set, opens the ClickHouse the events and statuses
	// are loaded into; the rebuild closes it. It is called once the
	// statuses are written, so a rebuild whose ClickHouse is misconfigured
	// or unreachable has still written them.
	ClickHouse func() (driver.Conn, error)
	// CRM, when set, is sent every status, with idempotency keys of this
	// rebuild's own.
	CRM crm.Destination
	// Progress, when set, is called as the statuses are sent to CRM.
	Progress func(done, total int)
	// AllUninstalls turns the device-removal rule off, as the processors'
	// setting of the same name.
	AllUninstalls bool
}

// RebuildReport is what Rebuild did, filled once the statuses are written.
type RebuildReport struct {
	From       string
	Events     int    // events folded
	Customers  int    // statuses written
	ClickHouse bool   // the events and statuses were loaded into ClickHouse
	CRM        string // the destination every status was sent to
}

// Rebuild folds every clean event into a fresh state with the current fold
// rules, writes the statuses as NDJSON sorted by customerId (as
// `walletsync fold` prints them), and when asked loads the events and
// statuses into ClickHouse and sends every status to a CRM.
func Rebuild(ctx context.Context, cfg RebuildConfig) (RebuildReport, error) {
	var rep RebuildReport
	brokers, from, dir, out, dest := cfg.Brokers, cfg.From, cfg.Dir, cfg.Out, cfg.CRM
	if from != FromArchive && from != FromTopic {
		return rep, fmt.Errorf("rebuild from %q: want %s or %s", from, FromArchive, FromTopic)
	}
	fold := walletsync.NewFold()
	if cfg.AllUninstalls {
		fold.AllUninstalls()
	}
	// Kept only to load ClickHouse, with what each event did to its
	// register's installed state, as the processors report it.
	var events []walletsync.Event
	var base []walletsync.BaseChange
	keep := cfg.ClickHouse != nil
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
	case FromArchive:
		err := parquet.ScanEvents(dir, "", "", func(evs []walletsync.Event) error {
			for i := range evs {
				apply(&evs[i])
			}
			return ctx.Err()
		})
		if err != nil {
			return rep, err
		}
	case FromTopic:
		cl, err := kgo.NewClient(kafka.ClientOpts(brokers, "walletsync-rebuild")...)
		if err != nil {
			return rep, err
		}
		defer cl.Close()
		adm := kadm.NewClient(cl)
		topic := cfg.Topic
		if topic == "" {
			topic = kafka.DefaultTopics().Clean
		}
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return rep, err
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
			return rep, readErr
		}
	}
	statuses := fold.Statuses()
	slices.SortFunc(statuses, func(a, b walletsync.Status) int { return strings.Compare(a.CustomerID, b.CustomerID) })
	w := cfg.Stdout
	if w == nil {
		w = os.Stdout
	}
	if out != "" && out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return rep, err
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
		return rep, err
	}
	rep.From, rep.Events, rep.Customers = from, n, len(statuses)
	if cfg.ClickHouse != nil {
		conn, err := cfg.ClickHouse()
		if err != nil {
			return rep, err
		}
		defer conn.Close()
		if _, err := chsink.Migrate(ctx, conn); err != nil {
			return rep, err
		}
		// A rebuild loaded again into the same database (after one that
		// failed half-way, say) inserts rows that are already there; marking
		// their months first keeps daily counting each event once (see the
		// sink's dirty months). A fresh database needs no marks.
		var existing uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM wallet_events").Scan(&existing); err != nil {
			return rep, fmt.Errorf("loading ClickHouse: %w", err)
		}
		if existing > 0 {
			if err := chsink.MarkDirty(ctx, conn, chsink.EventMonths(events)); err != nil {
				return rep, fmt.Errorf("loading ClickHouse: %w", err)
			}
		}
		for i := 0; i < len(events); i += 100_000 {
			if err := chsink.InsertEvents(ctx, conn, events[i:min(i+100_000, len(events))], base[i:min(i+100_000, len(events))]); err != nil {
				return rep, fmt.Errorf("loading ClickHouse: %w", err)
			}
		}
		for i := 0; i < len(statuses); i += 100_000 {
			if err := chsink.InsertStatuses(ctx, conn, statuses[i:min(i+100_000, len(statuses))]); err != nil {
				return rep, fmt.Errorf("loading ClickHouse: %w", err)
			}
		}
		rep.ClickHouse = true
	}
	if dest != nil {
		// The keys' prefix keeps them apart from those the sink sent for the
		// same versions, which the CRM may still remember.
		if err := crm.Send(ctx, dest, "rebuild-"+time.Now().UTC().Format("20060102T150405")+":", statuses, 5, cfg.Progress); err != nil {
			return rep, fmt.Errorf("sending to %s: %w", dest.Name(), err)
		}
		rep.CRM = dest.Name()
	}
	return rep, nil
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
