package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/walletsync/walletsync/ingest"
	"github.com/walletsync/walletsync/ingest/passapi"
	"github.com/walletsync/walletsync/internal/kafka"
)

// passAPIFlags configure the Pass API backfill.
type passAPIFlags struct {
	url, tenant, key, authHeader, providersField, createdField string
	pageSize, maxAttempts                                      int
	rate                                                       float64
	schedule                                                   string
	once                                                       bool
}

func (p *passAPIFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.url, "passapi-url", "", "The Wallet Crew Pass API base `URL` (e.g. https://app.neostore.cloud): also run the backfill")
	fs.StringVar(&p.tenant, "passapi-tenant", "", "tenant id in the Pass API's paths")
	fs.StringVar(&p.key, "passapi-key", "", "Pass API key (@FILE reads it)")
	fs.StringVar(&p.authHeader, "passapi-auth-header", passapi.DefaultAuthHeader, "header carrying --passapi-key")
	fs.StringVar(&p.providersField, "passapi-providers-field", passapi.DefaultProvidersField, "pass field holding each provider's (apple, google) installation date")
	fs.StringVar(&p.createdField, "passapi-created-field", passapi.DefaultCreatedField, "pass field holding its creation date, backfilled as an issued event (\"-\": none)")
	fs.IntVar(&p.pageSize, "passapi-page-size", passapi.DefaultPageSize, "passes per page")
	fs.Float64Var(&p.rate, "passapi-rate", passapi.DefaultRate, "Pass API requests per second")
	fs.IntVar(&p.maxAttempts, "passapi-max-attempts", passapi.DefaultMaxAttempts, "attempts per page (429, 5xx, network errors) before the run stops, to resume later")
	fs.StringVar(&p.schedule, "backfill-schedule", passapi.DefaultSchedule, "cron schedule of the backfill (UTC, five fields); a run still going makes the next one skip")
}

func (p *passAPIFlags) backfill(n *node, customerKey string, replication int) (*passapi.Backfill, error) {
	key, err := secret(p.key)
	if err != nil {
		return nil, flagErrorf("--passapi-key: %w", err)
	}
	client, err := passapi.NewClient(passapi.ClientConfig{BaseURL: p.url, Tenant: p.tenant, APIKey: key, AuthHeader: p.authHeader,
		ProvidersField: p.providersField, CreatedField: p.createdField, PageSize: p.pageSize, Rate: p.rate, MaxAttempts: p.maxAttempts})
	if err != nil {
		return nil, err
	}
	return passapi.NewBackfill(passapi.Config{Client: client, Brokers: n.brokers, Topics: kafka.DefaultTopics(), CustomerKey: customerKey,
		Replication: int16(replication), Logger: n.log, Metrics: passapi.NewMetrics(n.reg)})
}

// addBackfill schedules the backfill in a long-running process.
func (n *node) addBackfill(f *roleFlags) error {
	b, err := f.passapi.backfill(n, f.customerKey, f.replication)
	if err != nil {
		return err
	}
	spec := f.passapi.schedule
	n.comps = append(n.comps, func(ctx context.Context) error { return b.Schedule(ctx, spec) })
	n.spec.Backfill()
	n.log.Info("backfill scheduled", "schedule", spec)
	return nil
}

func backfillCommand() command {
	return command{
		name:    "backfill",
		summary: "observe every pass's install status through the Pass API: --once, or on a schedule",
		help: `
Pages through every pass of The Wallet Crew's Pass API and writes one
"observed" event per pass and platform (source "backfill") to wallet.events;
the processors repair with them whatever the webhooks missed and ignore what
already agrees, so an unchanged night writes nothing to the CRMs.

With --once it runs now and exits (0 when the run finished, 1 when it
stopped: its cursor is checkpointed in Kafka, topic wallet.backfill, and the
next run resumes at the page that failed). Without, it serves /metrics and
runs on --backfill-schedule (default daily 03:00 UTC), never two at once.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			f := &roleFlags{}
			f.common(fs, ":8084")
			f.kafkaFlags(fs, "Kafka `brokers` (host:port,…), required")
			fs.StringVar(&f.customerKey, "customer-key", ingest.DefaultCustomerKey, "identifier that names the customer in a pass's identifiers (e.g. y2.customerId, or email)")
			f.passapi.register(fs)
			fs.BoolVar(&f.passapi.once, "once", false, "run one backfill now and exit")
			return func(ctx context.Context, e env, args []string) int {
				if len(args) > 0 {
					fmt.Fprintf(e.stderr, "walletsync backfill: unexpected arguments %q\n", args)
					return exitUsage
				}
				if f.passapi.url == "" || f.passapi.tenant == "" || f.brokers == "" {
					fmt.Fprintln(e.stderr, "walletsync backfill: --brokers, --passapi-url and --passapi-tenant are required")
					return exitUsage
				}
				if !f.passapi.once {
					return roleMain(ctx, e, f, nil, "backfill")
				}
				log, err := f.logger(e)
				if err != nil {
					fmt.Fprintf(e.stderr, "walletsync backfill: %v\n", err)
					return exitUsage
				}
				n, err := newNode(log, f.brokerList())
				if err != nil {
					fmt.Fprintf(e.stderr, "walletsync backfill: %v\n", err)
					return exitFail
				}
				defer n.admin.Close()
				if err := n.ensureTopics(ctx, f); err != nil {
					fmt.Fprintf(e.stderr, "walletsync backfill: %v\n", err)
					return exitFail
				}
				b, err := f.passapi.backfill(n, f.customerKey, f.replication)
				if err != nil {
					fmt.Fprintf(e.stderr, "walletsync backfill: %v\n", err)
					return exitUsage
				}
				rep, err := b.RunOnce(ctx)
				out, _ := json.Marshal(map[string]any{"runId": rep.RunID, "resumed": rep.Resumed, "done": rep.Done, "pages": rep.NextPage,
					"passes": rep.Passes, "observations": rep.Observations, "issued": rep.Issued, "skipped": rep.Skipped, "seconds": rep.Duration.Seconds()})
				fmt.Fprintln(e.stdout, string(out))
				if rep.Run.RunID != "" {
					writeRunTable(e.stdout, rep.Run)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "walletsync backfill: %v\n", err)
					return exitFail
				}
				return exitOK
			}
		},
	}
}

// kindLabels are the report's drift kinds as the table names them.
var kindLabels = map[string]string{
	passapi.KindMissedInstall: "missed install", passapi.KindMissedUninstall: "missed uninstall", passapi.KindUnknownPass: "unknown pass",
	passapi.KindIdentityResolved: "identity resolved", passapi.KindIdentityChanged: "identity changed",
}

// writeRunTable prints a run's reconciliation report for the operator who
// ran it: the counts, aligned, and a few of each kind's customers.
func writeRunTable(w io.Writer, r passapi.RunReport) {
	state := "done"
	if !r.Done {
		state = "stopped (the next run resumes it)"
	}
	if r.Resumed {
		state += ", resumed"
	}
	fmt.Fprintf(w, "backfill run %s: %s\n", r.RunID, state)
	when := "started " + r.StartedAt
	if r.FinishedAt != "" {
		when += ", finished " + r.FinishedAt
	}
	fmt.Fprintf(w, "%s, ran %s\n\n", when, (time.Duration(r.DurationMs) * time.Millisecond).String())
	// Aligned by hand, not with text/tabwriter: its last column would be
	// padded with trailing blanks on the lines without a sample.
	rows := [][3]string{{"", "passes", "customers (sample)"}, {"scanned", strconv.Itoa(r.Passes)}, {"agreeing", strconv.Itoa(r.Agreeing)},
		{"skipped (no customer)", strconv.Itoa(r.Skipped)}}
	for _, k := range []string{passapi.KindMissedInstall, passapi.KindMissedUninstall, passapi.KindUnknownPass, passapi.KindIdentityResolved, passapi.KindIdentityChanged} {
		rows = append(rows, [3]string{kindLabels[k], strconv.Itoa(r.Drift.Of(k)), sampleText(r.Customers[k], r.Drift.Of(k))})
	}
	w0, w1 := 0, 0
	for _, row := range rows {
		w0, w1 = max(w0, len(row[0])), max(w1, len(row[1]))
	}
	for _, row := range rows {
		line := fmt.Sprintf("%-*s  %*s  %s", w0, row[0], w1, row[1], row[2])
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}

// sampleText shows the first customers of a kind and how many more there
// are (of n passes).
func sampleText(ids []string, n int) string {
	const show = 5
	if len(ids) == 0 {
		return ""
	}
	quoted := make([]string, 0, show)
	for _, id := range ids[:min(show, len(ids))] {
		quoted = append(quoted, strconv.Quote(id))
	}
	s := strings.Join(quoted, " ")
	if n > len(quoted) {
		s += fmt.Sprintf(" … (%d passes in all)", n)
	}
	return s
}
