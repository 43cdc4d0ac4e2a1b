package parquet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	pq "github.com/parquet-go/parquet-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/backoff"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// Datasets: the directories under the archive, one per topic.
const (
	EventsDataset = "events" // wallet.events.clean
	StatusDataset = "status" // wallet.status
)

// DefaultGroup is the consumer group the archiver commits its position to,
// so that /v1/pipeline counts it. The files, not the group, are the truth:
// at start the archiver resumes after the last offset its files cover.
const DefaultGroup = kafka.GroupArchive

// Config configures an Archiver.
type Config struct {
	Brokers []string
	Topics  kafka.Topics
	Dir     string
	Group   string
	// A roll writes the buffered records once they reach RollBytes
	// (default 64 MiB, estimated from the records' size), RollInterval
	// after the roll began (default 1 min), or once no record has come
	// for RollQuiet (default 1 s; negative: never): a burst is archived,
	// and its lag back to 0, a second after it ends, while steady traffic
	// still makes one file set per interval.
	RollBytes    int
	RollInterval time.Duration
	RollQuiet    time.Duration
	// A roll that fails (a full disk) is retried every RetryEvery
	// (default 5 s) with the same records; nothing more is read meanwhile.
	RetryEvery time.Duration
	// MinFreeBytes: a roll is refused (and retried) while the archive's
	// disk has less free space than this, so the archive never takes the
	// last bytes a broker on the same disk needs to end its transactions
	// (0: kafka.DefaultMinFreeBytes; negative: no reserve).
	MinFreeBytes int64
	Logger       *slog.Logger
	Metrics      *Metrics
}

// Archiver writes the archive.
type Archiver struct {
	cfg  Config
	log  *slog.Logger
	m    *Metrics
	disk *kafka.DiskGuard

	mu       sync.Mutex
	writeErr error // the last roll's failure, until a roll succeeds
}

// Err is why the archive cannot write now (a full disk), or nil: a roll
// failed and is being retried. Readiness reports it.
func (a *Archiver) Err() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.writeErr
}

func (a *Archiver) setErr(err error) {
	a.mu.Lock()
	a.writeErr = err
	a.mu.Unlock()
	if err != nil {
		a.m.writeFailing.Set(1)
	} else {
		a.m.writeFailing.Set(0)
	}
}

// The defaults of Config's zero values (also the command line's, but for
// walletsync run's shorter roll interval).
const (
	DefaultRollBytes    = 64 << 20
	DefaultRollInterval = time.Minute
	DefaultRollQuiet    = time.Second
	DefaultRetryEvery   = 5 * time.Second
)

// New checks the configuration.
func New(cfg Config) (*Archiver, error) {
	if cfg.Dir == "" {
		return nil, errors.New("archive: no directory")
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("archive: no brokers")
	}
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.RollBytes <= 0 {
		cfg.RollBytes = DefaultRollBytes
	}
	if cfg.RollInterval <= 0 {
		cfg.RollInterval = DefaultRollInterval
	}
	if cfg.RollQuiet == 0 {
		cfg.RollQuiet = DefaultRollQuiet
	}
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = DefaultRetryEvery
	}
	if cfg.MinFreeBytes == 0 {
		cfg.MinFreeBytes = kafka.DefaultMinFreeBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Archiver{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, disk: kafka.NewDiskGuard(cfg.Dir, cfg.MinFreeBytes)}, nil
}

// fileName is p<partition>-<first>-<last>-<k>of<n>.parquet: the offset
// range [first, last] of one partition, written as n files (one per day
// its records fall on), of which this is the k-th. A range with fewer
// than n files was cut short by a crash and is written again.
func fileName(part int32, first, last int64, k, n int) string {
	return fmt.Sprintf("p%d-%d-%d-%dof%d.parquet", part, first, last, k, n)
}

type fileRange struct {
	part        int32
	first, last int64
	n           int
}

func parseFileName(name string) (fileRange, int, bool) {
	base, ok := strings.CutSuffix(name, ".parquet")
	if !ok || !strings.HasPrefix(base, "p") {
		return fileRange{}, 0, false
	}
	f := strings.Split(base[1:], "-")
	if len(f) != 4 {
		return fileRange{}, 0, false
	}
	kn := strings.Split(f[3], "of")
	p, e1 := strconv.ParseInt(f[0], 10, 32)
	first, e2 := strconv.ParseInt(f[1], 10, 64)
	last, e3 := strconv.ParseInt(f[2], 10, 64)
	if len(kn) != 2 || errors.Join(e1, e2, e3) != nil {
		return fileRange{}, 0, false
	}
	k, e4 := strconv.Atoi(kn[0])
	n, e5 := strconv.Atoi(kn[1])
	if e4 != nil || e5 != nil {
		return fileRange{}, 0, false
	}
	return fileRange{int32(p), first, last, n}, k, true
}

// Files lists a dataset's complete files, by day, sorted, leaving alone
// what a crash left behind (ranges cut short, temp files).
func Files(dir, dataset string) (map[string][]string, error) {
	files, _, err := scanFiles(dir, dataset, false)
	return files, err
}

// RepairFiles deletes what a crash left behind in a dataset — the files of
// ranges it cut short and leftover temp files — and returns, per
// partition, the offset after the last range the complete files cover:
// where the archiver resumes.
func RepairFiles(dir, dataset string) (resume map[int32]int64, err error) {
	_, resume, err = scanFiles(dir, dataset, true)
	return resume, err
}

// scanFiles reads a dataset's files; with repair it deletes the leftovers
// of a crash.
func scanFiles(dir, dataset string, repair bool) (files map[string][]string, resume map[int32]int64, err error) {
	root := filepath.Join(dir, dataset)
	days, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return map[string][]string{}, map[int32]int64{}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	type loc struct{ day, path string }
	ranges := map[fileRange][]loc{}
	for _, d := range days {
		day, ok := strings.CutPrefix(d.Name(), "day=")
		if !d.IsDir() || !ok {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(root, d.Name()))
		if err != nil {
			return nil, nil, err
		}
		for _, e := range ents {
			p := filepath.Join(root, d.Name(), e.Name())
			if strings.HasPrefix(e.Name(), ".tmp-") {
				if repair {
					_ = os.Remove(p)
				}
				continue
			}
			r, _, ok := parseFileName(e.Name())
			if ok {
				ranges[r] = append(ranges[r], loc{day, p})
			}
		}
	}
	files, resume = map[string][]string{}, map[int32]int64{}
	for r, locs := range ranges {
		if len(locs) != r.n {
			if repair {
				for _, l := range locs {
					_ = os.Remove(l.path)
				}
			}
			continue
		}
		for _, l := range locs {
			files[l.day] = append(files[l.day], l.path)
		}
		resume[r.part] = max(resume[r.part], r.last+1)
	}
	for _, fs := range files {
		sort.Strings(fs)
	}
	return files, resume, nil
}

// partBuf is what one partition of one topic buffered since the last roll.
type partBuf struct {
	first, last int64 // offsets read, control records included; first < 0: none
	events      map[string][]EventRow
	statuses    map[string][]StatusRow
}

// Run archives until ctx ends; what is buffered then is written first.
func (a *Archiver) Run(ctx context.Context) error {
	t := a.cfg.Topics
	start := map[string]map[int32]kgo.Offset{}
	for _, ds := range []struct{ topic, dataset string }{{t.Clean, EventsDataset}, {t.Status, StatusDataset}} {
		resume, err := RepairFiles(a.cfg.Dir, ds.dataset)
		if err != nil {
			return fmt.Errorf("archive: scanning %s: %w", ds.dataset, err)
		}
		start[ds.topic] = map[int32]kgo.Offset{}
		for p, o := range resume {
			start[ds.topic][p] = kgo.NewOffset().At(o)
		}
	}
	admCl, err := kgo.NewClient(kafka.ClientOpts(a.cfg.Brokers, "walletsync-archive-admin")...)
	if err != nil {
		return err
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	details, err := adm.ListTopics(ctx, t.Clean, t.Status)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	a.commitResume(ctx, adm, start)
	for topic, d := range details {
		if d.Err != nil {
			return fmt.Errorf("archive: topic %s: %w", topic, d.Err)
		}
		for p := range d.Partitions {
			if _, ok := start[topic][p]; !ok {
				start[topic][p] = kgo.NewOffset().AtStart()
			}
		}
	}
	cl, err := kgo.NewClient(append(kafka.ClientOpts(a.cfg.Brokers, "walletsync-archive"),
		kgo.ConsumePartitions(start),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()

	// A roll that fails (a full disk, a read-only remount) is retried until
	// it succeeds or ctx ends: a disk that fills must make the archive
	// wait, not end the process. Nothing more is read meanwhile. Stopping
	// mid-retry loses nothing: the files are the truth, so the next start
	// reads those records again.
	err = kafka.ConsumeBatches(ctx, cl, &roller{a: a, bufs: a.newBufs()}, kafka.ConsumeConfig{
		Commit: func(ctx context.Context, offs kafka.Offsets) {
			commit := kadm.Offsets{}
			for topic, parts := range offs {
				for p, o := range parts {
					commit.Add(kadm.Offset{Topic: topic, Partition: p, At: o.Offset, LeaderEpoch: o.Epoch})
				}
			}
			if err := adm.CommitAllOffsets(context.WithoutCancel(ctx), a.cfg.Group, commit); err != nil {
				// The files are the truth; the group only reports lag.
				a.log.Warn("archive: committing the group position failed", "err", err)
			}
		},
		Retry:         backoff.Policy{Base: a.cfg.RetryEvery, Max: a.cfg.RetryEvery},
		FlushOnStop:   true,
		Logger:        a.log,
		FetchErrorMsg: "archive fetch error",
	})
	if werr := a.Err(); werr != nil {
		a.log.Warn("archive: stopped with a roll unwritten; the next start reads its records again", "err", werr)
	}
	return err
}

// rollBufs are the records of one roll, by topic and partition.
type rollBufs map[string]map[int32]*partBuf

func (a *Archiver) newBufs() rollBufs {
	return rollBufs{a.cfg.Topics.Clean: {}, a.cfg.Topics.Status: {}}
}

// roller is the archive's side of kafka.ConsumeBatches: a roll is due once
// its records reach RollBytes, RollInterval after it began, or RollQuiet
// after its last record.
type roller struct {
	a    *Archiver
	bufs rollBufs
	size int
	// rollStart is when the roll in hand began: when the loop first looks
	// at it after Take, which (the loop is not pipelined) is once the roll
	// before it is written and committed. Zero until then.
	rollStart  time.Time
	lastRecord time.Time // of the current roll; zero: none yet
	fresh      bool      // records came since Due last looked: lastRecord is the poll's time
}

func (ro *roller) began(now time.Time) time.Time {
	if ro.rollStart.IsZero() {
		ro.rollStart = now
	}
	return ro.rollStart
}

func (ro *roller) Add(r *kgo.Record) {
	a, t := ro.a, ro.a.cfg.Topics
	ro.fresh = true
	b := ro.bufs[r.Topic][r.Partition]
	if b == nil {
		b = &partBuf{first: -1, events: map[string][]EventRow{}, statuses: map[string][]StatusRow{}}
		ro.bufs[r.Topic][r.Partition] = b
	}
	if b.first < 0 {
		b.first = r.Offset
	}
	b.last = r.Offset
	if r.Attrs.IsControl() || r.Value == nil {
		return
	}
	ro.size += len(r.Value) + 64
	if r.Topic == t.Clean {
		ev, err := wire.ParseEvent(r.Value)
		if err != nil {
			a.m.skipped.Inc()
			a.log.Warn("unreadable clean event skipped", "partition", r.Partition, "offset", r.Offset, "err", err)
			return
		}
		day := Day(ev.OccurredAt)
		b.events[day] = append(b.events[day], EventToRow(&ev, r.Partition, r.Offset))
		return
	}
	st, err := wire.ParseStatus(r.Value)
	if err != nil {
		a.m.skipped.Inc()
		return
	}
	day := StatusDay(&st)
	b.statuses[day] = append(b.statuses[day], StatusToRow(&st, r.Partition, r.Offset))
}

func (ro *roller) Room() int { return 0 }

func (ro *roller) Deadline() time.Time {
	due := ro.began(time.Now()).Add(ro.a.cfg.RollInterval)
	if ro.a.cfg.RollQuiet > 0 && !ro.lastRecord.IsZero() {
		due = minTime(due, ro.lastRecord.Add(ro.a.cfg.RollQuiet))
	}
	return due
}

func (ro *roller) Due(now time.Time) bool {
	if ro.fresh {
		ro.lastRecord, ro.fresh = now, false
	}
	quiet := ro.a.cfg.RollQuiet > 0 && !ro.lastRecord.IsZero() && !now.Before(ro.lastRecord.Add(ro.a.cfg.RollQuiet))
	return ro.size >= ro.a.cfg.RollBytes || !now.Before(ro.began(now).Add(ro.a.cfg.RollInterval)) || quiet
}

func (ro *roller) Take() rollBufs {
	bufs := ro.bufs
	ro.bufs, ro.size = ro.a.newBufs(), 0
	ro.rollStart, ro.lastRecord, ro.fresh = time.Time{}, time.Time{}, false
	return bufs
}

// Flush writes a roll, reporting a failure in Err until a roll succeeds.
// The write is not cut short when ctx ends: what is buffered at a stop is
// written first.
func (ro *roller) Flush(_ context.Context, bufs rollBufs, _ int) (kafka.Offsets, error) {
	a := ro.a
	offs, err := a.roll(bufs)
	if err == nil {
		if a.Err() != nil {
			a.log.Info("archive: writing again")
		}
		a.setErr(nil)
		return offs, nil
	}
	if a.Err() == nil {
		a.log.Error("archive: a roll failed; retrying it, reading nothing more meanwhile", "err", err, "retryEvery", a.cfg.RetryEvery.String())
	}
	a.setErr(err)
	a.m.rollFailures.Inc()
	return nil, err
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// commitResume commits the group's position where the files end, where the
// group has not got that far. A crash between a roll's files and its
// commit leaves the group behind the files; the archiver resumes after
// the files, and a partition that then gets nothing new would never commit
// and report lag for ever, although its files are complete.
func (a *Archiver) commitResume(ctx context.Context, adm *kadm.Client, start map[string]map[int32]kgo.Offset) {
	committed, err := adm.FetchOffsets(ctx, a.cfg.Group)
	if err != nil {
		a.log.Warn("archive: reading the group position failed", "err", err)
		return
	}
	commit := kadm.Offsets{}
	for topic, parts := range start {
		for p, o := range parts {
			at := o.EpochOffset().Offset
			if at <= 0 {
				continue
			}
			if c, ok := committed.Lookup(topic, p); ok && c.Err == nil && c.At >= at {
				continue
			}
			commit.Add(kadm.Offset{Topic: topic, Partition: p, At: at, LeaderEpoch: -1})
		}
	}
	if len(commit) == 0 {
		return
	}
	if err := adm.CommitAllOffsets(ctx, a.cfg.Group, commit); err != nil {
		a.log.Warn("archive: committing the position of the files failed", "err", err)
	}
}

// roll writes every buffered range and returns the group position after
// them.
func (a *Archiver) roll(bufs rollBufs) (kafka.Offsets, error) {
	start := time.Now()
	for _, parts := range bufs {
		for _, b := range parts {
			if b.first < 0 {
				continue
			}
			if err := a.disk.Err(); err != nil {
				return nil, fmt.Errorf("archive: %w", err)
			}
			break
		}
	}
	commit := kafka.Offsets{}
	for topic, parts := range bufs {
		for p, b := range parts {
			if b.first < 0 {
				continue
			}
			var err error
			if topic == a.cfg.Topics.Clean {
				err = writeRange(a.cfg.Dir, EventsDataset, p, b.first, b.last, b.events, a.m)
			} else {
				err = writeRange(a.cfg.Dir, StatusDataset, p, b.first, b.last, b.statuses, a.m)
			}
			if err != nil {
				return nil, fmt.Errorf("archive: %w", err)
			}
			if commit[topic] == nil {
				commit[topic] = map[int32]kgo.EpochOffset{}
			}
			commit[topic][p] = kgo.EpochOffset{Epoch: -1, Offset: b.last + 1}
		}
	}
	if len(commit) == 0 {
		return nil, nil
	}
	a.m.rollSeconds.Observe(time.Since(start).Seconds())
	return commit, nil
}

// writeRange writes one partition's range as one file per day: each to a
// temp name first, then all renamed, so a reader never sees half a file.
func writeRange[T any](dir, dataset string, part int32, first, last int64, byDay map[string][]T, m *Metrics) error {
	days := make([]string, 0, len(byDay))
	for d := range byDay {
		days = append(days, d)
	}
	sort.Strings(days)
	type pending struct{ tmp, final string }
	var ps []pending
	for i, day := range days {
		dd := filepath.Join(dir, dataset, "day="+day)
		if err := os.MkdirAll(dd, 0o755); err != nil {
			return err
		}
		name := fileName(part, first, last, i+1, len(days))
		tmp := filepath.Join(dd, ".tmp-"+name)
		if err := writeFile(tmp, byDay[day], part, first, last); err != nil {
			return err
		}
		ps = append(ps, pending{tmp, filepath.Join(dd, name)})
		m.rows.WithLabelValues(dataset).Add(float64(len(byDay[day])))
	}
	for _, p := range ps {
		if err := os.Rename(p.tmp, p.final); err != nil {
			return err
		}
		m.files.WithLabelValues(dataset).Inc()
	}
	return nil
}

func writeFile[T any](path string, rows []T, part int32, first, last int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := pq.NewGenericWriter[T](f, pq.Compression(&pq.Zstd),
		pq.KeyValueMetadata("walletsync.partition", strconv.Itoa(int(part))),
		pq.KeyValueMetadata("walletsync.first_offset", strconv.FormatInt(first, 10)),
		pq.KeyValueMetadata("walletsync.last_offset", strconv.FormatInt(last, 10)))
	if _, err := w.Write(rows); err != nil {
		f.Close()
		return err
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteEvents writes events as one archived range of partition part, the
// way the archiver would have from offsets first onwards; tests and
// benchmarks build archives with it.
func WriteEvents(dir string, part int32, first int64, events []walletsync.Event) error {
	return writeItems(dir, EventsDataset, part, first, events, func(e *walletsync.Event) string { return Day(e.OccurredAt) }, EventToRow)
}

// WriteStatuses writes status versions the same way.
func WriteStatuses(dir string, part int32, first int64, statuses []walletsync.Status) error {
	return writeItems(dir, StatusDataset, part, first, statuses, StatusDay, StatusToRow)
}

func writeItems[I, R any](dir, dataset string, part int32, first int64, items []I, day func(*I) string, row func(*I, int32, int64) R) error {
	byDay := map[string][]R{}
	for i := range items {
		d := day(&items[i])
		byDay[d] = append(byDay[d], row(&items[i], part, first+int64(i)))
	}
	return writeRange(dir, dataset, part, first, first+int64(len(items))-1, byDay, NewMetrics(prometheus.NewRegistry()))
}
