package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/api"
	"github.com/walletsync/walletsync/ingest"
	"github.com/walletsync/walletsync/internal/httpjson"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/pipeline"
	"github.com/walletsync/walletsync/processors"
	chquery "github.com/walletsync/walletsync/queries/clickhouse"
	"github.com/walletsync/walletsync/queries/embedded"
	chsink "github.com/walletsync/walletsync/sinks/clickhouse"
	"github.com/walletsync/walletsync/sinks/parquet"
)

// listFlag is a repeatable flag; one value may also hold several separated
// by commas, which is how the environment variable carries a list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// secret reads a secret flag's value: the value itself, or with a leading
// "@" the contents of that file (trimmed), so secrets need not sit in the
// process list or the environment.
func secret(v string) (string, error) {
	path, ok := strings.CutPrefix(v, "@")
	if !ok {
		return v, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading secret file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// roleFlags are the flags of the long-running roles; each command takes the
// subset it needs.
type roleFlags struct {
	http, brokers, dataDir, logLevel    string
	partitions                          int
	replication                         int
	customerKey, connectorKey, apiToken string
	webhookSecrets                      listFlag
	dedupeWindow, produceTimeout, skew  time.Duration
	deviceRemovals                      bool
	checkpointEvery                     time.Duration
	checkpointEvents                    int
	unmatchedExpiry                     time.Duration
	transactionalID, group              string
	embeddedBrokers                     int
	kafkaListen                         string
	progressDeadline                    time.Duration
	clickhouseDSN                       string
	from, to, by, format                string
	batchRows                           int
	batchInterval                       time.Duration
	verifyEvery, verifySettle           time.Duration
	crm                                 crmFlags
	passapi                             passAPIFlags
	sim                                 simulateFlags
	demo                                bool
	demoRun                             func(context.Context) error
	archiveDir                          string
	archiveRoll                         time.Duration
	archiveRollBytes                    int
	archiveRollQuiet                    time.Duration
	minFreeBytes                        int64
}

func (f *roleFlags) archiveFlags(fs *flag.FlagSet, dirHelp string, roll time.Duration) {
	fs.StringVar(&f.archiveDir, "archive-dir", "", dirHelp)
	fs.DurationVar(&f.archiveRoll, "archive-roll-interval", roll, "Parquet archive: write a file set at least this often")
	fs.IntVar(&f.archiveRollBytes, "archive-roll-bytes", parquet.DefaultRollBytes, "Parquet archive: or once this many bytes of records are buffered")
	fs.Int64Var(&f.minFreeBytes, "min-free-bytes", kafka.DefaultMinFreeBytes, "space the archive (and run's embedded broker) leave free on their disk: below it rolls and new records are refused, so that open transactions can still be ended (negative: no reserve)")
	fs.DurationVar(&f.archiveRollQuiet, "archive-roll-quiet", parquet.DefaultRollQuiet, "Parquet archive: or once no record has come for this long, so a burst is archived (and its lag back to 0) soon after it ends (negative: never)")
}

func (f *roleFlags) clickhouseFlags(fs *flag.FlagSet, help string) {
	fs.StringVar(&f.clickhouseDSN, "clickhouse", "", help)
	fs.IntVar(&f.batchRows, "clickhouse-batch-rows", chsink.DefaultBatchRows, "ClickHouse sink: insert when this many records are buffered")
	fs.DurationVar(&f.batchInterval, "clickhouse-batch-interval", chsink.DefaultBatchInterval, "ClickHouse sink: or when the oldest buffered record is this old")
	fs.DurationVar(&f.verifyEvery, "clickhouse-verify-every", chsink.DefaultVerifyEvery, "ClickHouse sink: check months marked dirty this often and clear those with one row per event (negative: never)")
	fs.DurationVar(&f.verifySettle, "clickhouse-verify-settle", chsink.DefaultVerifySettle, "ClickHouse sink: how long after its dirty mark an insert may still land (at least the 2 min insert timeout plus a minute)")
}

func (f *roleFlags) kafkaFlags(fs *flag.FlagSet, brokersHelp string) {
	fs.StringVar(&f.brokers, "brokers", "", brokersHelp)
	fs.IntVar(&f.partitions, "partitions", 6, "partitions of each topic when walletsync creates it (all topics must have the same count)")
	fs.IntVar(&f.replication, "replication", 1, "replication factor of topics walletsync creates (3 on a production cluster)")
}

func (f *roleFlags) common(fs *flag.FlagSet, defaultHTTP string) {
	fs.StringVar(&f.http, "http", defaultHTTP, "HTTP listen `address` for the API, /metrics, /healthz and /readyz")
	fs.StringVar(&f.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.DurationVar(&f.progressDeadline, "progress-deadline", api.DefaultProgressDeadline, "how long a consumer of this process may have lag without moving before /readyz reports it stalled (logged with what it waits for)")
}

func (f *roleFlags) ingestFlags(fs *flag.FlagSet) {
	fs.StringVar(&f.customerKey, "customer-key", ingest.DefaultCustomerKey, "identifier that names the customer in webhook and connector payloads (e.g. y2.customerId, or email: trimmed and lower-cased)")
	fs.Var(&f.webhookSecrets, "webhook-secret", "the `secret` (signatureSecret) of the Wallet Crew webhook; repeat, or separate by commas, to accept several during a rotation; @FILE reads one per line")
	fs.StringVar(&f.connectorKey, "connector-api-key", "", "X-API-KEY the Wallet Crew custom connector sends; @FILE reads it from a file")
	fs.DurationVar(&f.produceTimeout, "produce-timeout", 10*time.Second, "how long a request waits for Kafka's acknowledgement before answering 503")
	fs.DurationVar(&f.skew, "max-skew", ingest.DefaultSkew, "how far in the future an occurredAt may be (clock skew) before the event is rejected")
}

func (f *roleFlags) tokenFlag(fs *flag.FlagSet) {
	fs.StringVar(&f.apiToken, "api-token", "", "bearer token required by /v1/events and the read API; @FILE reads it from a file; empty: open")
}

func (f *roleFlags) processFlags(fs *flag.FlagSet) {
	fs.DurationVar(&f.dedupeWindow, "dedupe-window", walletsync.DefaultDedupeWindow, "how long event ids are remembered for dedupe")
	fs.BoolVar(&f.deviceRemovals, "device-removals", true, deviceRemovalsUsage)
	fs.StringVar(&f.transactionalID, "transactional-id", processors.DefaultTransactionalID(), "Kafka transactional id of this processor: unique per running processor, stable across its restarts")
	fs.StringVar(&f.group, "group", processors.DefaultGroup, "consumer group of the processors")
	fs.DurationVar(&f.checkpointEvery, "checkpoint-every", processors.DefaultCheckpointEvery, "longest a changed customer waits before its state is checkpointed to wallet.state")
	fs.IntVar(&f.checkpointEvents, "checkpoint-events", processors.DefaultCheckpointEvents, "events per partition after which a checkpoint is written (bounds what a member taking over replays)")
	fs.DurationVar(&f.unmatchedExpiry, "unmatched-expiry", processors.DefaultExpiry, "how long an event that names its pass but no customer waits on wallet.passes for the pass's customer before it goes to wallet.events.dlq")
}

// deviceRemovalsUsage is the --device-removals flag's, for every command
// that folds.
const deviceRemovalsUsage = "an uninstall whose registration counts say another device of the platform still holds the pass " +
	"(activeCount ≥ 1, totalCount > activeCount) leaves the pass installed (SPEC §3); false: every uninstall counts"

func deviceRemovalsFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("device-removals", true, deviceRemovalsUsage)
}

func (f *roleFlags) logger(e env) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: lvl})), nil
}

func (f *roleFlags) brokerList() []string {
	var out []string
	for _, b := range strings.Split(f.brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// node is one process's running parts: components run together and the
// first to fail stops the others.
type node struct {
	log     *slog.Logger
	reg     *prometheus.Registry
	mux     *http.ServeMux
	admin   *kgo.Client
	adm     *kadm.Client
	brokers []string
	comps   []func(context.Context) error
	closers []func()
	// spec is the topology of what this process runs, built as the
	// components are added.
	spec   *pipeline.Spec
	chConn driver.Conn // set once --clickhouse is opened

	// Readiness: checks of the components, the progress watch, the
	// consumers whose stall makes this process unready (gate) and what
	// the consumers running here are doing.
	checks   []readyCheck
	progress *api.Progress
	gate     []string
	doing    map[string]func() string
}

func newNode(log *slog.Logger, brokers []string) (*node, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	cl, err := kgo.NewClient(kafka.ClientOpts(brokers, "walletsync-admin")...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	n := &node{log: log, reg: reg, mux: http.NewServeMux(), admin: cl, adm: kadm.NewClient(cl), brokers: brokers,
		spec: pipeline.New(kafka.DefaultTopics()), doing: map[string]func() string{}}
	n.closers = append(n.closers, cl.Close)
	n.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	n.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { httpjson.WriteJSON(w, 200, map[string]bool{"ok": true}) })
	n.mux.HandleFunc("GET /readyz", n.readyz)
	return n, nil
}

// readyCheck is one reason a process may not be ready: nil when it is.
type readyCheck struct {
	name  string
	check func() error
}

// readiness is the body of GET /readyz.
type readiness struct {
	Ready bool `json:"ready"`
	// Reasons say, per component, why the process is not ready.
	Reasons map[string]string `json:"reasons,omitempty"`
	// Degraded are consumers that stall without making the process
	// unready: sinks towards systems outside it (a CRM, ClickHouse), whose
	// outage must not stop intake, since events wait safely in Kafka.
	Degraded map[string]string `json:"degraded,omitempty"`
}

// readyz answers 200 only when events posted now will be folded: Kafka
// answers, the pipeline's lag can be measured, no consumer of this process
// is stalled (lag and no progress for --progress-deadline), ingest's
// writes are accepted and the archive's are too.
func (n *node) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	rd := readiness{Reasons: map[string]string{}}
	if err := n.admin.Ping(ctx); err != nil {
		rd.Reasons["kafka"] = "unreachable: " + err.Error()
	}
	if n.progress != nil {
		problems, degraded := n.progress.Problems(n.gate...)
		maps.Copy(rd.Reasons, problems)
		if len(degraded) > 0 {
			rd.Degraded = degraded
		}
	}
	for _, c := range n.checks {
		if err := c.check(); err != nil {
			rd.Reasons[c.name] = err.Error()
		}
	}
	rd.Ready = len(rd.Reasons) == 0
	if !rd.Ready {
		w.Header().Set("Retry-After", "5")
		httpjson.WriteJSON(w, http.StatusServiceUnavailable, rd)
		return
	}
	httpjson.WriteJSON(w, 200, rd)
}

// lag measures the consumers of the topology: the processors' group, the
// sink groups this process runs and those it finds on the cluster
// (pipeline.SinkOf), so that a standalone query reports what run reports
// for the same deployment.
func (n *node) lag(f *roleFlags, view *api.StatusView) *api.Lag {
	t := n.spec.Topics
	lag := api.NewLag(n.adm, t.Events, t.Status, f.processGroup(), view, t.Clean, t.Status, t.State, t.DLQ)
	lag.Brokers = n.brokers
	for g, topics := range n.spec.SinkGroups() {
		lag.AddGroup(g, topics...)
	}
	lag.Discover = func(group string) ([]string, bool) {
		c, ok := pipeline.SinkOf(t, group)
		return c.Reads, ok
	}
	return lag
}

// watchProgress starts the progress watch of the consumers lag measures;
// the topology's local components (the processors, the archive, the status
// view) gate readiness.
func (n *node) watchProgress(f *roleFlags, lag *api.Lag) {
	for _, c := range n.spec.Components {
		if !c.Local {
			continue
		}
		if c.Group != "" {
			n.gate = append(n.gate, c.Group)
		} else if c.Name == pipeline.ViewName {
			n.gate = append(n.gate, api.ViewConsumer)
		}
	}
	n.progress = &api.Progress{Lag: lag, Deadline: f.progressDeadline, Logger: n.log, Doing: n.doing}
	n.comps = append(n.comps, n.progress.Run)
}

func (n *node) ensureTopics(ctx context.Context, f *roleFlags) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return kafka.EnsureTopics(ctx, n.adm, n.spec.Topics, kafka.Layout{Partitions: int32(f.partitions), Replication: int16(f.replication)})
}

func (n *node) addIngest(f *roleFlags) error {
	secrets := []string{}
	for _, s := range f.webhookSecrets {
		v, err := secret(s)
		if err != nil {
			return flagErrorf("--webhook-secret: %w", err)
		}
		for _, line := range strings.Split(v, "\n") {
			if line = strings.TrimSpace(line); line != "" {
				secrets = append(secrets, line)
			}
		}
	}
	connKey, err := secret(f.connectorKey)
	if err != nil {
		return flagErrorf("--connector-api-key: %w", err)
	}
	token, err := secret(f.apiToken)
	if err != nil {
		return flagErrorf("--api-token: %w", err)
	}
	prod, err := kgo.NewClient(append(kafka.ClientOpts(n.brokers, "walletsync-ingest"), ingest.ProducerOpts(max(f.produceTimeout-time.Second, time.Second))...)...)
	if err != nil {
		return err
	}
	n.closers = append(n.closers, prod.Close)
	pub := ingest.NewKafkaPublisher(prod, kafka.DefaultTopics().Events, f.produceTimeout)
	srv := ingest.NewServer(ingest.Config{
		CustomerKey: f.customerKey, WebhookSecrets: secrets, ConnectorAPIKey: connKey, APIToken: token,
		MaxSkew: f.skew, Logger: n.log, Metrics: ingest.NewMetrics(n.reg),
	}, pub)
	n.checks = append(n.checks, readyCheck{"ingest", pub.Err})
	srv.Handle(n.mux)
	f.apiToken = token
	n.spec.Ingest()
	return nil
}

func (n *node) addProcess(f *roleFlags) error {
	if f.checkpointEvery <= 0 || f.checkpointEvents <= 0 {
		return flagErrorf("--checkpoint-every and --checkpoint-events must be positive, got %v and %d", f.checkpointEvery, f.checkpointEvents)
	}
	p, err := processors.New(processors.Config{
		Brokers: n.brokers, Topics: kafka.DefaultTopics(), Group: f.group, TransactionalID: f.transactionalID,
		DedupeWindow: f.dedupeWindow, AllUninstalls: !f.deviceRemovals, CheckpointEvery: f.checkpointEvery, CheckpointEvents: f.checkpointEvents,
		Logger: n.log, Metrics: processors.NewMetrics(n.reg),
	})
	if err != nil {
		return err
	}
	n.comps = append(n.comps, p.Run)
	n.spec.Process(f.processGroup())
	n.doing[f.processGroup()] = p.Doing
	// The resolver runs wherever the processors do: it feeds them the
	// events that waited for their pass's customer.
	r, err := processors.NewResolver(processors.ResolverConfig{
		Brokers: n.brokers, Topics: kafka.DefaultTopics(), TransactionalID: f.transactionalID + "-resolve", Expiry: f.unmatchedExpiry,
		Logger: n.log, Metrics: processors.NewResolverMetrics(n.reg),
	})
	if err != nil {
		return err
	}
	n.comps = append(n.comps, r.Run)
	n.spec.Resolve()
	return nil
}

func (f *roleFlags) processGroup() string {
	if f.group == "" {
		return processors.DefaultGroup
	}
	return f.group
}

// openClickHouse connects to --clickhouse once per process.
func (n *node) openClickHouse(f *roleFlags) (driver.Conn, error) {
	if n.chConn != nil {
		return n.chConn, nil
	}
	conn, err := dialClickHouse(f.clickhouseDSN)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, func() { conn.Close() })
	n.chConn = conn
	return conn, nil
}

// dialClickHouse opens a --clickhouse value: a DSN, or @FILE holding one
// (a DSN may carry a password). The connection is made lazily, so an
// unreachable server shows at the first use.
func dialClickHouse(value string) (driver.Conn, error) {
	dsn, err := secret(value)
	if err != nil {
		return nil, flagErrorf("--clickhouse: %w", err)
	}
	opts, err := clickhouse.ParseDSN(dsn)
	if err != nil {
		return nil, flagErrorf("--clickhouse: %w", err)
	}
	opts.DialTimeout = 5 * time.Second
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, flagErrorf("--clickhouse: %w", err)
	}
	return conn, nil
}

func (n *node) addClickHouse(f *roleFlags) error {
	conn, err := n.openClickHouse(f)
	if err != nil {
		return err
	}
	t := kafka.DefaultTopics()
	sink := chsink.NewSink(chsink.SinkConfig{
		Brokers: n.brokers, Topics: t, BatchRows: f.batchRows, BatchInterval: f.batchInterval,
		VerifyEvery: f.verifyEvery, VerifySettle: f.verifySettle,
		Logger: n.log, Metrics: chsink.NewSinkMetrics(n.reg),
	}, conn)
	n.comps = append(n.comps, sink.Run)
	n.spec.ClickHouse()
	return nil
}

// addArchive runs the Parquet archiver into f.archiveDir.
func (n *node) addArchive(f *roleFlags) error {
	t := kafka.DefaultTopics()
	a, err := parquet.New(parquet.Config{Brokers: n.brokers, Topics: t, Dir: f.archiveDir, RollInterval: f.archiveRoll,
		RollBytes: f.archiveRollBytes, RollQuiet: f.archiveRollQuiet, MinFreeBytes: f.minFreeBytes, Logger: n.log, Metrics: parquet.NewMetrics(n.reg)})
	if err != nil {
		return err
	}
	n.comps = append(n.comps, a.Run)
	n.spec.Archive()
	// The archive writes to this process's own disk: a failing write (a
	// full disk) is this process's problem, unlike a remote sink's.
	n.checks = append(n.checks, readyCheck{"archive", a.Err})
	return nil
}

func (n *node) addQuery(f *roleFlags) error {
	token, err := secret(f.apiToken)
	if err != nil {
		return flagErrorf("--api-token: %w", err)
	}
	t := kafka.DefaultTopics()
	view := api.NewStatusView(n.brokers, t.Status, n.log)
	n.comps = append(n.comps, view.Run)
	n.spec.StatusView()
	lag := n.lag(f, view)
	waiting := api.NewWaitingView(n.brokers, t.Passes, n.log)
	n.comps = append(n.comps, waiting.Run)
	lag.Waiting = waiting
	n.spec.WaitingView()
	n.watchProgress(f, lag)
	readAPI := &api.API{View: view, Lag: lag, APIToken: token, Logger: n.log}
	if f.clickhouseDSN != "" {
		conn, err := n.openClickHouse(f)
		if err != nil {
			return err
		}
		readAPI.Insights = &chquery.Engine{Conn: conn}
	} else if f.archiveDir != "" {
		// No ClickHouse: the insights come from the Parquet archive.
		readAPI.Insights = embedded.New(f.archiveDir)
	}
	readAPI.Handle(n.mux)
	runs, err := api.NewRuns(n.brokers, kafka.BackfillRunsTopic, token, n.log)
	if err != nil {
		return err
	}
	n.closers = append(n.closers, runs.Close)
	runs.Handle(n.mux)
	api.HandleDashboard(n.mux)
	// Measured when scraped, so the figure is never older than the scrape;
	// NaN when Kafka cannot be asked.
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "walletsync", Name: "pipeline_lag",
		Help: "Records written to the pipeline's topics and not yet processed by all its consumers (as GET /v1/pipeline).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		rep, err := lag.Compute(ctx)
		if err != nil {
			return math.NaN()
		}
		return float64(rep.Lag)
	}))
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "walletsync", Name: "unmatched_events_waiting",
		Help: "Events waiting on wallet.passes for their pass's customer, over the whole deployment (as GET /v1/pipeline's unmatched.waiting).",
	}, func() float64 { return float64(waiting.Now().Events) }))
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "walletsync", Name: "status_view_customers",
		Help: "Customers known to the status view.",
	}, func() float64 { return float64(view.Len()) }))
	return nil
}

// serve runs the HTTP server and every component until ctx ends or one
// fails, then shuts down in order.
func (n *node) serve(ctx context.Context, addr string, ready func(net.Addr)) error {
	defer func() {
		for i := len(n.closers) - 1; i >= 0; i-- {
			n.closers[i]()
		}
	}()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--http: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	srv := &http.Server{Handler: n.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	// Bounded headers and connections: what an unauthenticated client can
	// hold open (ingest's body budgets bound the rest).
	ingest.HardenServer(srv, n.reg)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cancel(fmt.Errorf("http: %w", err))
		}
	}()
	for _, c := range n.comps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c(ctx); err != nil {
				cancel(err)
			}
		}()
	}
	n.log.Info("walletsync listening", "http", ln.Addr().String(), "brokers", strings.Join(n.brokers, ","), "topology", n.spec.Summary())
	if ready != nil {
		ready(ln.Addr())
	}
	<-ctx.Done()
	shutCtx, done := context.WithTimeout(context.Background(), 10*time.Second)
	defer done()
	_ = srv.Shutdown(shutCtx)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
