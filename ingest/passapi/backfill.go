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
	// Resumed: an attempt of this run resumed it.
	Resumed bool `json:"resumed"`
	// The reconciliation's counts so far (a checkpoint saved before
	// they existed reads zeros, and its report counts from there).
	Tally
}

// Report is what one call of RunOnce did: the run's checkpoint (its
// counts are the run's, over all its attempts), the reconciliation report
// as written to wallet.backfill.runs, and how long this call took.
type Report struct {
	Checkpoint
	Run      RunReport
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
		kgo.ProducerLinger(5*time.Millisecond),
		// A broker that stays away fails the run (the next one resumes at
		// its page) instead of holding it for ever; one back within the
		// timeout lets it carry on.
		kgo.RecordDeliveryTimeout(kafkaTimeout))...)
	if err != nil {
		return rep, err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, topic := range []string{CheckpointTopic, RunsTopic} {
		if err := b.ensureTopic(ctx, adm, topic); err != nil {
			return rep, err
		}
	}
	cp, found, err := b.load(ctx, adm)
	if err != nil {
		return rep, err
	}
	if found && !cp.Done {
		cp.Resumed = true
		b.log.Info("resuming the backfill run", "runId", cp.RunID, "page", cp.NextPage)
	} else {
		now := time.Now().UTC()
		id := now.Format("20060102T150405Z")
		if found && id == cp.RunID {
			// A second run within the same second would take the first's
			// id: its observations would be the first's duplicates and
			// its report would overwrite the first's.
			id = now.Format("20060102T150405.000Z")
		}
		cp = Checkpoint{RunID: id, StartedAt: now.UnixMilli()}
		b.log.Info("backfill run started", "runId", cp.RunID)
	}
	// What the pipeline knows now, to reconcile each listed pass with. A
	// resumed run reads it again: its earlier pages' passes are counted
	// already, and the rest are compared with the latest view.
	snap, err := b.snapshot(ctx, adm)
	if err != nil {
		rep.Checkpoint = cp
		return rep, err
	}
	elapsed := cp.ElapsedMs
	type counted struct{ kind, customer string }
	for {
		passes, total, err := b.cfg.Client.Page(ctx, cp.NextPage)
		if err != nil {
			rep.Checkpoint = cp
			return rep, fmt.Errorf("backfill page %d: %w (the next run resumes there)", cp.NextPage, err)
		}
		var recs []*kgo.Record
		var kinds []counted
		issued, skipped, observed := 0, 0, 0
		for i := range passes {
			p := &passes[i]
			customer, err := ingest.ResolveCustomer(p.Identifiers, b.cfg.CustomerKey)
			var evs []walletsync.Event
			if err == nil {
				evs, err = b.observations(p, customer, cp)
			}
			if err != nil {
				skipped++
				b.log.Debug("pass skipped", "passId", p.ID, "err", err)
				continue
			}
			kinds = append(kinds, counted{snap.classify(p, customer), customer})
			if snap.holderOf(p.ID) != customer {
				// The Pass API teaches who holds the pass: the resolver
				// folds the events waiting for it, and a pass that
				// changed hands goes to its new customer from now on.
				// Written again by a resumed run: a duplicate.
				h := wire.Holder{PassID: p.ID, CustomerID: customer, At: cp.StartedAt, Source: "backfill"}
				recs = append(recs, &kgo.Record{Topic: b.cfg.Topics.Passes, Key: wire.HolderKey(p.ID), Value: wire.AppendHolder(nil, &h)})
			}
			for j := range evs {
				recs = append(recs, &kgo.Record{Topic: b.cfg.Topics.Events, Key: []byte(evs[j].CustomerID), Value: wire.AppendEvent(nil, &evs[j])})
				if evs[j].Type == walletsync.TypeIssued {
					b.m.issued.Inc()
					issued++
					continue
				}
				b.m.observations.WithLabelValues(evs[j].Platform.String(), fmt.Sprint(evs[j].Installed)).Inc()
				observed++
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			rep.Checkpoint = cp
			return rep, fmt.Errorf("backfill: writing observations: %w", err)
		}
		b.m.passes.Add(float64(len(passes)))
		b.m.skipped.Add(float64(skipped))
		cp.Passes += len(passes)
		cp.Observations += observed
		cp.Issued += issued
		cp.Skipped += skipped
		// The counts go into the checkpoint only now that the page is
		// written, so that a page written again is counted once.
		// Duplicated customers in the samples cannot occur: count keeps
		// them distinct.
		cp.Customers = cloneSamples(cp.Customers)
		for _, c := range kinds {
			cp.count(c.kind, c.customer)
			if c.kind == "" {
				b.m.agreeing.Inc()
			} else {
				b.m.drift.WithLabelValues(c.kind).Inc()
			}
		}
		cp.NextPage++
		cp.Done = len(passes) < b.cfg.Client.cfg.PageSize || (total >= 0 && cp.Passes >= total)
		cp.ElapsedMs = elapsed + time.Since(start).Milliseconds()
		run := cp.report(time.Now())
		if err := b.save(ctx, cl, cp, run); err != nil {
			rep.Checkpoint = cp
			return rep, err
		}
		rep.Checkpoint, rep.Run = cp, run
		if cp.Done {
			for _, k := range Kinds {
				b.m.lastDrift.WithLabelValues(k).Set(float64(cp.Drift.Of(k)))
			}
			b.log.Info("backfill run finished", "runId", cp.RunID, "passes", cp.Passes, "observations", cp.Observations, "skipped", cp.Skipped,
				"agreeing", cp.Agreeing, "drift", cp.Drift.Total())
			return rep, nil
		}
	}
}

// cloneSamples copies the samples, so that a checkpoint handed out
// earlier does not change under its holder.
func cloneSamples(m map[string][]string) map[string][]string {
	out := make(map[string][]string, len(m))
	for k, v := range m {
		out[k] = append([]string(nil), v...)
	}
	return out
}

// observations turns a pass of customer into one observed event per
// platform.
func (b *Backfill) observations(p *Pass, customer string, cp Checkpoint) ([]walletsync.Event, error) {
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

// ensureTopic creates one of the backfill's own topics: compacted, one
// partition (one record per tenant, or per run).
func (b *Backfill) ensureTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	_, err := adm.CreateTopic(ctx, 1, b.cfg.Replication, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, topic)
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("backfill: creating %s: %w", topic, err)
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

// save writes the checkpoint and the run's report. Not atomic: a crash
// between the two leaves a report a page behind its checkpoint, which the
// next page's (or the resumed run's) report overwrites.
func (b *Backfill) save(ctx context.Context, cl *kgo.Client, cp Checkpoint, run RunReport) error {
	v, _ := json.Marshal(cp)
	r, _ := json.Marshal(run)
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: CheckpointTopic, Partition: 0, Key: b.key(), Value: v},
		&kgo.Record{Topic: RunsTopic, Partition: 0, Key: []byte(cp.RunID), Value: r}).FirstErr(); err != nil {
		return fmt.Errorf("backfill: saving the checkpoint and the report: %w", err)
	}
	return nil
}

// kafkaTimeout bounds how long a page's records may wait for Kafka.
const kafkaTimeout = 2 * time.Minute

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
