package passapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/ingest"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

// CheckpointTopic holds the backfill's cursor: compacted, one partition,
// one record per tenant.
const CheckpointTopic = kafka.BackfillTopic

// Platforms the Pass API reports providers for.
var platforms = []walletsync.Platform{walletsync.PlatformApple, walletsync.PlatformGoogle}

// Config configures a Backfill.
type Config struct {
	Client      *Client
	Brokers     []string
	Topics      kafka.Topics
	CustomerKey string // as ingest's --customer-key (default customerId)
	Replication int16  // of the checkpoint topic when created (default 1)
	Logger      *slog.Logger
	Metrics     *Metrics
}

// Backfill writes one observed event per (pass, platform).
type Backfill struct {
	cfg Config
	log *slog.Logger
	m   *Metrics
}

// NewBackfill checks the configuration.
func NewBackfill(cfg Config) (*Backfill, error) {
	if cfg.Client == nil || len(cfg.Brokers) == 0 {
		return nil, errors.New("backfill: a Pass API client and brokers are required")
	}
	if cfg.Topics == (kafka.Topics{}) {
		cfg.Topics = kafka.DefaultTopics()
	}
	if cfg.CustomerKey == "" {
		cfg.CustomerKey = ingest.DefaultCustomerKey
	}
	if cfg.Replication <= 0 {
		cfg.Replication = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	return &Backfill{cfg: cfg, log: cfg.Logger, m: cfg.Metrics}, nil
}

// Checkpoint is the cursor of a run: the next page to fetch. Observations
// carry the run's start as occurredAt, and their ids derive from the run
// id, so pages written again by a resumed run are duplicates the
// processors drop.
type Checkpoint struct {
	RunID        string `json:"runId"`
	StartedAt    int64  `json:"startedAt"`
	NextPage     int    `json:"nextPage"`
	Done         bool   `json:"done"`
	Passes       int    `json:"passes"`
	Observations int    `json:"observations"`
	// Issued counts the issued events written (passes with a creation
	// date); a checkpoint saved before they existed reads 0.
	Issued int `json:"issued"`
}

// Report is what one run did.
type Report struct {
	Checkpoint
	Resumed  bool
	Skipped  int
	Duration time.Duration
}

func (b *Backfill) key() []byte { return []byte("cursor:" + b.cfg.Client.cfg.Tenant) }

// RunOnce runs a backfill to its end: it resumes the last run if that one
// did not finish, else starts a new one.
func (b *Backfill) RunOnce(ctx context.Context) (rep Report, err error) {
	start := time.Now()
	defer func() {
		rep.Duration = time.Since(start)
		b.m.lastRun.Set(rep.Duration.Seconds())
		outcome := "ok"
		if err != nil {
			outcome = "failed"
		} else {
			b.m.lastSuccess.SetToCurrentTime()
		}
		b.m.runs.WithLabelValues(outcome).Inc()
	}()
	cl, err := kgo.NewClient(append(kafka.ClientOpts(b.cfg.Brokers, "walletsync-backfill"),
		kgo.ProducerLinger(5*time.Millisecond))...)
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if err := b.ensureCheckpointTopic(ctx, adm); err != nil {
		return rep, err
	}
	cp, found, err := b.load(ctx, adm)
	if err != nil {
		return rep, err
	}
	if found && !cp.Done {
		rep.Resumed = true
		b.log.Info("resuming the backfill run", "runId", cp.RunID, "page", cp.NextPage)
	} else {
		now := time.Now().UTC()
		cp = Checkpoint{RunID: now.Format("20060102T150405Z"), StartedAt: now.UnixMilli()}
		b.log.Info("backfill run started", "runId", cp.RunID)
	}
	for {
		passes, total, err := b.cfg.Client.Page(ctx, cp.NextPage)
		if err != nil {
			rep.Checkpoint = cp
			return rep, fmt.Errorf("backfill page %d: %w (the next run resumes there)", cp.NextPage, err)
		}
		var recs []*kgo.Record
		issued := 0
		for i := range passes {
			evs, err := b.observations(&passes[i], cp)
			if err != nil {
				rep.Skipped++
				b.m.skipped.Inc()
				b.log.Debug("pass skipped", "passId", passes[i].ID, "err", err)
				continue
			}
			for j := range evs {
				recs = append(recs, &kgo.Record{Topic: b.cfg.Topics.Events, Key: []byte(evs[j].CustomerID), Value: wire.AppendEvent(nil, &evs[j])})
				if evs[j].Type == walletsync.TypeIssued {
					b.m.issued.Inc()
					issued++
					continue
				}
				b.m.observations.WithLabelValues(evs[j].Platform.String(), fmt.Sprint(evs[j].Installed)).Inc()
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			rep.Checkpoint = cp
			return rep, fmt.Errorf("backfill: writing observations: %w", err)
		}
		b.m.passes.Add(float64(len(passes)))
		cp.Passes += len(passes)
		cp.Observations += len(recs) - issued
		cp.Issued += issued
		cp.NextPage++
		cp.Done = len(passes) < b.cfg.Client.cfg.PageSize || (total >= 0 && cp.Passes >= total)
		if err := b.save(ctx, cl, cp); err != nil {
			rep.Checkpoint = cp
			return rep, err
		}
		if cp.Done {
			rep.Checkpoint = cp
			b.log.Info("backfill run finished", "runId", cp.RunID, "passes", cp.Passes, "observations", cp.Observations, "skipped", rep.Skipped)
			return rep, nil
		}
	}
}

// observations turns a pass into one observed event per platform.
func (b *Backfill) observations(p *Pass, cp Checkpoint) ([]walletsync.Event, error) {
	customer, err := ingest.ResolveCustomer(p.Identifiers, b.cfg.CustomerKey)
	if err != nil {
		return nil, err
	}
	var out []walletsync.Event
	for _, pl := range platforms {
		h := sha256.Sum256([]byte(cp.RunID + "\x00" + p.ID + "\x00" + pl.String()))
		e := walletsync.Event{
			ID: "backfill-" + cp.RunID + "-" + hex.EncodeToString(h[:12]), Type: walletsync.TypeObserved, Platform: pl,
			CustomerID: customer, PassID: p.ID, PassType: p.PassType, OccurredAt: cp.StartedAt, Source: "backfill",
			Installed: p.Present[pl.String()],
		}
		if e.Installed {
			e.InstalledAt = p.Installed[pl.String()]
		}
		if err := e.Validate(); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if p.CreatedAt != 0 {
		// One issued event per pass, the same id every run: a pass is
		// created once, so every night's copy is a duplicate.
		h := sha256.Sum256([]byte("created\x00" + p.ID))
		e := walletsync.Event{ID: "backfill-created-" + hex.EncodeToString(h[:12]), Type: walletsync.TypeIssued,
			CustomerID: customer, PassID: p.ID, PassType: p.PassType, OccurredAt: p.CreatedAt, Source: "backfill"}
		if e.Validate() == nil { // a creation date outside the contract's range is left out, not the pass
			out = append(out, e)
		}
	}
	return out, nil
}

func (b *Backfill) ensureCheckpointTopic(ctx context.Context, adm *kadm.Client) error {
	_, err := adm.CreateTopic(ctx, 1, b.cfg.Replication, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, CheckpointTopic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("backfill: creating %s: %w", CheckpointTopic, err)
	}
	return nil
}

func (b *Backfill) load(ctx context.Context, adm *kadm.Client) (Checkpoint, bool, error) {
	var cp Checkpoint
	found := false
	var err error
	for try := 0; try < 50; try++ {
		_, err = kafka.ReadPartition(ctx, b.cfg.Brokers, adm, CheckpointTopic, 0, -1, func(r *kgo.Record) {
			if string(r.Key) == string(b.key()) && json.Unmarshal(r.Value, &cp) == nil {
				found = true
			}
		})
		if err == nil {
			return cp, found, nil
		}
		// A topic just created may not be listed yet.
		time.Sleep(100 * time.Millisecond)
	}
	return cp, false, fmt.Errorf("backfill: reading the checkpoint: %w", err)
}

func (b *Backfill) save(ctx context.Context, cl *kgo.Client, cp Checkpoint) error {
	v, _ := json.Marshal(cp)
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: CheckpointTopic, Partition: 0, Key: b.key(), Value: v}).FirstErr(); err != nil {
		return fmt.Errorf("backfill: saving the checkpoint: %w", err)
	}
	return nil
}

// DefaultSchedule is the backfill's cron schedule unless told otherwise:
// every night at 03:00 UTC.
const DefaultSchedule = "0 3 * * *"

// Schedule runs the backfill on a cron schedule (UTC, five fields;
// "" is DefaultSchedule) until ctx ends; a run still going when the next
// is due makes that one skip.
func (b *Backfill) Schedule(ctx context.Context, spec string) error {
	if spec == "" {
		spec = DefaultSchedule
	}
	if _, err := cron.ParseStandard(spec); err != nil {
		return fmt.Errorf("--backfill-schedule: %w", err)
	}
	c := cron.New(cron.WithLocation(time.UTC), cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	if _, err := c.AddFunc(spec, func() {
		if _, err := b.RunOnce(ctx); err != nil && ctx.Err() == nil {
			b.log.Error("backfill run failed", "err", err)
		}
	}); err != nil {
		return err
	}
	c.Start()
	<-ctx.Done()
	<-c.Stop().Done()
	return nil
}
