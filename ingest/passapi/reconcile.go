package passapi

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// RunsTopic holds one reconciliation report per run, keyed by run id:
// compacted, one partition, created by the backfill.
const RunsTopic = kafka.BackfillRunsTopic

// The drift kinds of the reconciliation report, as its JSON names them.
const (
	KindMissedInstall    = "missedInstall"
	KindMissedUninstall  = "missedUninstall"
	KindUnknownPass      = "unknownPass"
	KindIdentityResolved = "identityResolved"
	KindIdentityChanged  = "identityChanged"
)

// Kinds lists the drift kinds in the order a pass is classified: the first
// that matches wins.
var Kinds = []string{KindIdentityChanged, KindIdentityResolved, KindUnknownPass, KindMissedInstall, KindMissedUninstall}

// SampleSize bounds the customers the report names per kind.
const SampleSize = 100

// Drift counts the listed passes per drift kind.
type Drift struct {
	MissedInstall    int `json:"missedInstall"`
	MissedUninstall  int `json:"missedUninstall"`
	UnknownPass      int `json:"unknownPass"`
	IdentityResolved int `json:"identityResolved"`
	IdentityChanged  int `json:"identityChanged"`
}

// add counts one pass of kind.
func (d *Drift) add(kind string, n int) {
	switch kind {
	case KindMissedInstall:
		d.MissedInstall += n
	case KindMissedUninstall:
		d.MissedUninstall += n
	case KindUnknownPass:
		d.UnknownPass += n
	case KindIdentityResolved:
		d.IdentityResolved += n
	case KindIdentityChanged:
		d.IdentityChanged += n
	}
}

// Of is the count of one kind.
func (d Drift) Of(kind string) int {
	switch kind {
	case KindMissedInstall:
		return d.MissedInstall
	case KindMissedUninstall:
		return d.MissedUninstall
	case KindUnknownPass:
		return d.UnknownPass
	case KindIdentityResolved:
		return d.IdentityResolved
	case KindIdentityChanged:
		return d.IdentityChanged
	}
	return 0
}

// Total is the passes that drifted, of any kind.
func (d Drift) Total() int {
	return d.MissedInstall + d.MissedUninstall + d.UnknownPass + d.IdentityResolved + d.IdentityChanged
}

// RunReport is what one backfill run found, as kept on wallet.backfill.runs
// and served at /v1/backfill/runs: every listed pass is skipped (no
// customer by --customer-key), agreeing, or of exactly one drift kind.
type RunReport struct {
	RunID      string `json:"runId"`
	StartedAt  string `json:"startedAt"`
	FinishedAt string `json:"finishedAt,omitempty"` // set once done
	// DurationMs is the time spent running, summed over the attempts of
	// a resumed run (not the span from start to finish, which may hold a
	// night of waiting for the next schedule).
	DurationMs int64 `json:"durationMs"`
	Done       bool  `json:"done"`
	Resumed    bool  `json:"resumed"`
	Passes     int   `json:"passes"`
	Agreeing   int   `json:"agreeing"`
	Skipped    int   `json:"skipped"`
	Drift      Drift `json:"drift"`
	// Customers holds, per drift kind, up to SampleSize distinct
	// customerIds of its passes (for identityChanged, the new customer,
	// the one the Pass API names). Left out of the list's summaries.
	Customers map[string][]string `json:"customers,omitempty"`
}

// Summary is the report without its customer samples.
func (r RunReport) Summary() RunReport {
	r.Customers = nil
	return r
}

// Register bits of one (customer, pass): per platform, whether the fold
// has a register and whether it says installed.
const (
	appleReg uint8 = 1 << iota
	appleInstalled
	googleReg
	googleInstalled
)

func regBit(p walletsync.Platform) uint8 {
	switch p {
	case walletsync.PlatformApple:
		return appleReg
	case walletsync.PlatformGoogle:
		return googleReg
	}
	return 0
}

// custRegs is one customer's registers of a pass.
type custRegs struct {
	customer string
	bits     uint8
}

// known is what the pipeline knows of one pass at the run's start. A
// pass that appears in both topics costs one map entry: about 150 bytes
// with its key, so a million passes take some 150 MB for the run.
type known struct {
	holder   string // "" when no holder is known
	holderAt int64
	waiting  int32 // live waiting events
	regs     []custRegs
}

// snapshot is the pipeline's view of every pass, by passId.
type snapshot struct {
	passes map[string]*known
}

func (s *snapshot) get(pass string) *known {
	k := s.passes[pass]
	if k == nil {
		k = &known{}
		s.passes[pass] = k
	}
	return k
}

// holderOf is the pass's known holder, "" when none.
func (s *snapshot) holderOf(pass string) string {
	if k := s.passes[pass]; k != nil {
		return k.holder
	}
	return ""
}

// snapshot reads every partition of wallet.passes and wallet.state as they are
// committed now.
func (b *Backfill) snapshot(ctx context.Context, adm *kadm.Client) (*snapshot, error) {
	s := &snapshot{passes: map[string]*known{}}
	// wallet.passes: the holder of each pass by the resolver's rule (the
	// later At wins, the later offset on a tie; a tombstone deletes), and
	// the waiting keys that are live.
	waiting := map[string]struct{}{}
	err := b.readTopic(ctx, adm, b.cfg.Topics.Passes, func(r *kgo.Record) {
		pass, _, isWaiting := wire.SplitPassKey(r.Key)
		switch {
		case isWaiting && r.Value == nil:
			delete(waiting, string(r.Key))
		case isWaiting:
			waiting[string(r.Key)] = struct{}{}
		case r.Value == nil:
			if k := s.passes[pass]; k != nil {
				k.holder, k.holderAt = "", 0
			}
		default:
			h, err := wire.ParseHolder(r.Value)
			if err != nil || h.PassID != pass {
				return
			}
			if k := s.get(pass); k.holder == "" || h.At >= k.holderAt {
				k.holder, k.holderAt = h.CustomerID, h.At
			}
		}
	})
	if err != nil {
		return nil, err
	}
	for key := range waiting {
		pass, _, _ := wire.SplitPassKey([]byte(key))
		s.get(pass).waiting++
	}
	clear(waiting)
	// The fold's registers as the processors have them now: per partition,
	// wallet.state's records (written at checkpoints), then the clean
	// events committed after the partition's last checkpoint folded again,
	// as a processor taking the partition over does. wallet.state alone
	// lags by up to a checkpoint interval, and the passes changed in it
	// would read as drift. One partition's fold is held at a time.
	err = b.eachStatePartition(ctx, adm, func(f *walletsync.Fold, customers map[string]struct{}) {
		for customer := range customers {
			var out []custRegsOfPass
			for _, reg := range f.Registers(customer) {
				bit := regBit(reg.Platform)
				if bit == 0 {
					continue
				}
				v := bit
				if installed, _, _ := reg.State(); installed {
					v |= bit << 1
				}
				j := 0
				for j < len(out) && out[j].pass != reg.PassID {
					j++
				}
				if j == len(out) {
					out = append(out, custRegsOfPass{pass: reg.PassID})
				}
				out[j].bits |= v
			}
			for _, r := range out {
				k := s.get(r.pass)
				k.regs = append(k.regs, custRegs{customer: customer, bits: r.bits})
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// eachStatePartition rebuilds, one partition at a time, the fold of
// wallet.state plus the clean events after the partition's last checkpoint
// marker, and hands it over with the customers it holds.
func (b *Backfill) eachStatePartition(ctx context.Context, adm *kadm.Client, fn func(*walletsync.Fold, map[string]struct{})) error {
	t := b.cfg.Topics
	details, err := adm.ListTopics(ctx, t.State)
	if err != nil {
		return fmt.Errorf("backfill: listing %s: %w", t.State, err)
	}
	d, ok := details[t.State]
	if !ok || d.Err != nil {
		return nil
	}
	for part := range d.Partitions {
		f := walletsync.NewFold()
		customers := map[string]struct{}{}
		replayFrom := int64(-1)
		if _, err := kafka.ReadPartition(ctx, b.cfg.Brokers, adm, t.State, part, -1, func(r *kgo.Record) {
			if string(r.Key) == wire.CheckpointKey {
				if off, err := wire.ParseCheckpoint(r.Value); err == nil {
					replayFrom = off
				}
				return
			}
			if r.Value == nil {
				f.Restore(walletsync.Status{CustomerID: string(r.Key)}, nil)
				delete(customers, string(r.Key))
				return
			}
			st, regs, err := wire.ParseStateRecord(r.Value)
			if err != nil {
				return
			}
			f.Restore(st, regs)
			customers[st.CustomerID] = struct{}{}
		}); err != nil {
			return fmt.Errorf("backfill: reading %s: %w", t.State, err)
		}
		if replayFrom >= 0 {
			var dec wire.Decoder
			if _, err := kafka.ReadPartition(ctx, b.cfg.Brokers, adm, t.Clean, part, replayFrom, func(r *kgo.Record) {
				ev, _, err := dec.ParseLean(r.Value)
				if err != nil {
					return
				}
				f.ApplyBase(&ev)
				customers[ev.CustomerID] = struct{}{}
			}); err != nil {
				return fmt.Errorf("backfill: reading %s: %w", t.Clean, err)
			}
		}
		fn(f, customers)
	}
	return nil
}

type custRegsOfPass struct {
	pass string
	bits uint8
}

// readTopic reads every partition of a topic; one not created yet reads
// as empty.
func (b *Backfill) readTopic(ctx context.Context, adm *kadm.Client, topic string, fn func(*kgo.Record)) error {
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("backfill: listing %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		return nil
	}
	for p := range d.Partitions {
		if _, err := kafka.ReadPartition(ctx, b.cfg.Brokers, adm, topic, p, -1, fn); err != nil {
			return fmt.Errorf("backfill: reading %s: %w", topic, err)
		}
	}
	return nil
}

// classify says what one listed pass whose customer resolved is: a drift
// kind, or "" when it agrees. The first rule that matches wins.
func (s *snapshot) classify(p *Pass, customer string) string {
	k := s.passes[p.ID]
	if k == nil {
		k = &known{}
	}
	switch {
	case k.holder != "" && k.holder != customer:
		return KindIdentityChanged
	case k.holder == "" && k.waiting > 0:
		return KindIdentityResolved
	case k.holder == "" && len(k.regs) == 0:
		return KindUnknownPass
	}
	var bits uint8
	for _, r := range k.regs {
		if r.customer == customer {
			bits = r.bits
			break
		}
	}
	for _, pl := range platforms {
		present, installed := p.Present[pl.String()], bits&(regBit(pl)<<1) != 0
		if present && !installed {
			return KindMissedInstall
		}
	}
	for _, pl := range platforms {
		present, installed := p.Present[pl.String()], bits&(regBit(pl)<<1) != 0
		if !present && installed {
			return KindMissedUninstall
		}
	}
	return ""
}

// Tally is a run's counts so far: kept in the checkpoint, so that a
// resumed run continues them.
type Tally struct {
	Agreeing  int                 `json:"agreeing"`
	Skipped   int                 `json:"skipped"`
	Drift     Drift               `json:"drift"`
	Customers map[string][]string `json:"customers,omitempty"`
	// ElapsedMs is the time the run's attempts have spent so far.
	ElapsedMs int64 `json:"elapsedMs"`
}

// count adds one pass of kind ("" is agreeing) and its customer to the
// sample.
func (t *Tally) count(kind, customer string) {
	if kind == "" {
		t.Agreeing++
		return
	}
	t.Drift.add(kind, 1)
	if t.Customers == nil {
		t.Customers = map[string][]string{}
	}
	sample := t.Customers[kind]
	if len(sample) >= SampleSize {
		return
	}
	for _, c := range sample {
		if c == customer {
			return
		}
	}
	t.Customers[kind] = append(sample, customer)
}

// report is the checkpoint as a RunReport.
func (cp *Checkpoint) report(now time.Time) RunReport {
	r := RunReport{RunID: cp.RunID, StartedAt: wire.FormatTime(cp.StartedAt), DurationMs: cp.ElapsedMs, Done: cp.Done, Resumed: cp.Resumed,
		Passes: cp.Passes, Agreeing: cp.Agreeing, Skipped: cp.Skipped, Drift: cp.Drift, Customers: map[string][]string{}}
	for _, k := range Kinds {
		r.Customers[k] = append([]string{}, cp.Customers[k]...)
	}
	if cp.Done {
		r.FinishedAt = wire.FormatTime(now.UnixMilli())
	}
	return r
}
