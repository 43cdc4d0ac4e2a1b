package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/internal/httpjson"
	"github.com/walletsync/walletsync/internal/kafka"
)

// DefaultRunsLimit is how many runs GET /v1/backfill/runs lists unless
// ?limit= says otherwise: three months of nightly runs.
const DefaultRunsLimit = 100

// Runs serves the backfill's reconciliation reports from
// wallet.backfill.runs (compacted, one partition, one record per run).
// It reads the topic on each request rather than following it: a few
// hundred small records, read when an operator looks, the morning after.
type Runs struct {
	brokers  []string
	topic    string
	token    string
	log      *slog.Logger
	cl       *kgo.Client
	adm      *kadm.Client
	deadline time.Duration
}

// NewRuns reads topic (passapi.RunsTopic when "") on brokers; token is
// --api-token (empty: open). Close it when done.
func NewRuns(brokers []string, topic, token string, log *slog.Logger) (*Runs, error) {
	if topic == "" {
		topic = passapi.RunsTopic
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cl, err := kgo.NewClient(kafka.ClientOpts(brokers, "walletsync-runs")...)
	if err != nil {
		return nil, err
	}
	return &Runs{brokers: brokers, topic: topic, token: token, log: log, cl: cl, adm: kadm.NewClient(cl), deadline: 10 * time.Second}, nil
}

// Close releases the Kafka client.
func (rs *Runs) Close() { rs.cl.Close() }

// Handle adds the routes to mux.
func (rs *Runs) Handle(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/backfill/runs", rs.list)
	mux.HandleFunc("GET /v1/backfill/runs/{id}", rs.get)
}

// All reads every run's last report, newest first (by start, then id).
func (rs *Runs) All(ctx context.Context) ([]passapi.RunReport, error) {
	details, err := rs.adm.ListTopics(ctx, rs.topic)
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", rs.topic, err)
	}
	if d, ok := details[rs.topic]; !ok || d.Err != nil {
		return nil, nil // no backfill has run yet
	}
	byID := map[string]passapi.RunReport{}
	if _, err := kafka.ReadPartition(ctx, rs.brokers, rs.adm, rs.topic, 0, -1, func(r *kgo.Record) {
		if r.Value == nil {
			delete(byID, string(r.Key))
			return
		}
		var rep passapi.RunReport
		if err := json.Unmarshal(r.Value, &rep); err != nil {
			rs.log.Warn("unreadable backfill report", "key", string(r.Key), "err", err)
			return
		}
		byID[string(r.Key)] = rep
	}); err != nil {
		return nil, err
	}
	out := make([]passapi.RunReport, 0, len(byID))
	for _, r := range byID {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b passapi.RunReport) int {
		return cmp.Or(cmp.Compare(b.StartedAt, a.StartedAt), cmp.Compare(b.RunID, a.RunID))
	})
	return out, nil
}

func (rs *Runs) read(w http.ResponseWriter, r *http.Request) ([]passapi.RunReport, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), rs.deadline)
	defer cancel()
	runs, err := rs.All(ctx)
	if err != nil {
		rs.log.Error("reading the backfill reports failed", "err", err)
		w.Header().Set("Retry-After", "5")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "the backfill reports could not be read from Kafka; try again")
		return nil, false
	}
	return runs, true
}

// list answers {"runs":[…]}: the newest runs first, without their
// customer samples (GET /v1/backfill/runs/{id} has them).
func (rs *Runs) list(w http.ResponseWriter, r *http.Request) {
	if !httpjson.CheckBearer(w, r, rs.token) {
		return
	}
	limit := DefaultRunsLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			httpjson.WriteError(w, http.StatusBadRequest, "limit: a positive integer")
			return
		}
		limit = n
	}
	runs, ok := rs.read(w, r)
	if !ok {
		return
	}
	out := make([]passapi.RunReport, 0, min(limit, len(runs)))
	for _, run := range runs[:min(limit, len(runs))] {
		out = append(out, run.Summary())
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"runs": out})
}

func (rs *Runs) get(w http.ResponseWriter, r *http.Request) {
	if !httpjson.CheckBearer(w, r, rs.token) {
		return
	}
	id := r.PathValue("id")
	runs, ok := rs.read(w, r)
	if !ok {
		return
	}
	for _, run := range runs {
		if run.RunID == id {
			httpjson.WriteJSON(w, http.StatusOK, run)
			return
		}
	}
	httpjson.WriteError(w, http.StatusNotFound, "no backfill run with this id")
}
