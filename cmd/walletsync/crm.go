package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/sinks/crm"
)

// crmFlags configure the CRM sinks; a destination runs when its required
// settings are given.
type crmFlags struct {
	webhookURL, webhookSecret               string
	webhookBatch                            int
	actitoURL, actitoKey, actitoEntity      string
	actitoTable, actitoKeyColumn            string
	hubspotURL, hubspotToken, hubspotIDProp string
	settle, maxAge                          time.Duration
	concurrency, maxAttempts                int
	rate                                    float64
	destination                             string
}

func (f *crmFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.webhookURL, "crm-webhook-url", "", "generic CRM webhook: POST each status change (JSON, Standard Webhooks signature) to this `URL`")
	fs.StringVar(&f.webhookSecret, "crm-webhook-secret", "", "signing secret of the CRM webhook (whsec_… or any string; @FILE reads it)")
	fs.IntVar(&f.webhookBatch, "crm-webhook-batch", 1, "CRM webhook: status records per request (more than 1: a JSON array)")
	fs.StringVar(&f.actitoURL, "actito-url", crm.DefaultActitoURL, "Actito API `URL` of the license's environment")
	fs.StringVar(&f.actitoKey, "actito-api-key", "", "Actito API key (@FILE reads it): also run the Actito sink")
	fs.StringVar(&f.actitoEntity, "actito-entity", "", "Actito entity the custom table belongs to")
	fs.StringVar(&f.actitoTable, "actito-table", crm.DefaultActitoTable, "Actito custom table receiving the status")
	fs.StringVar(&f.actitoKeyColumn, "actito-key-column", crm.DefaultActitoKeyColumn, "Actito table column holding customerId")
	fs.StringVar(&f.hubspotURL, "hubspot-url", crm.DefaultHubSpotURL, "HubSpot API `URL`")
	fs.StringVar(&f.hubspotToken, "hubspot-token", "", "HubSpot private app access token (@FILE reads it): also run the HubSpot sink")
	fs.StringVar(&f.hubspotIDProp, "hubspot-id-property", crm.DefaultHubSpotIDProperty, "unique HubSpot contact property holding customerId (created when missing, unless email)")
	fs.DurationVar(&f.settle, "crm-settle", crm.DefaultSettle, "CRM sinks: how long a new status waits for a newer one before it is sent (0: at once)")
	fs.IntVar(&f.concurrency, "crm-concurrency", crm.DefaultConcurrency, "CRM sinks: requests in flight per destination")
	fs.Float64Var(&f.rate, "crm-rate", crm.DefaultRate, "CRM sinks: requests per second per destination")
	fs.IntVar(&f.maxAttempts, "crm-max-attempts", crm.DefaultMaxAttempts, "CRM sinks: attempts before an item goes to wallet.crm.dlq")
	fs.DurationVar(&f.maxAge, "crm-max-age", crm.DefaultMaxAge, "CRM sinks: or once this long has passed since its first attempt")
}

// destinations builds the configured destinations; only names one.
func (f *crmFlags) destinations(only string) ([]crm.Destination, error) {
	var out []crm.Destination
	if f.webhookURL != "" && (only == "" || only == "webhook") {
		sec, err := secret(f.webhookSecret)
		if err != nil {
			return nil, flagErrorf("--crm-webhook-secret: %w", err)
		}
		d, err := crm.NewWebhook(crm.WebhookConfig{URL: f.webhookURL, Secret: sec, Batch: f.webhookBatch})
		if err != nil {
			return nil, flagErrorf("--crm-webhook-url/--crm-webhook-secret: %w", err)
		}
		out = append(out, d)
	}
	if f.actitoKey != "" && (only == "" || only == "actito") {
		key, err := secret(f.actitoKey)
		if err != nil {
			return nil, flagErrorf("--actito-api-key: %w", err)
		}
		d, err := crm.NewActito(crm.ActitoConfig{BaseURL: f.actitoURL, APIKey: key, Entity: f.actitoEntity, Table: f.actitoTable, KeyColumn: f.actitoKeyColumn})
		if err != nil {
			return nil, flagErrorf("--actito-*: %w", err)
		}
		out = append(out, d)
	}
	if f.hubspotToken != "" && (only == "" || only == "hubspot") {
		tok, err := secret(f.hubspotToken)
		if err != nil {
			return nil, flagErrorf("--hubspot-token: %w", err)
		}
		d, err := crm.NewHubSpot(crm.HubSpotConfig{BaseURL: f.hubspotURL, Token: tok, IDProperty: f.hubspotIDProp})
		if err != nil {
			return nil, flagErrorf("--hubspot-*: %w", err)
		}
		out = append(out, d)
	}
	if only != "" && len(out) == 0 {
		need := map[string]string{"webhook": "--crm-webhook-url and --crm-webhook-secret", "actito": "--actito-api-key and --actito-entity", "hubspot": "--hubspot-token"}[only]
		if need == "" {
			return nil, flagErrorf("--destination %q: want webhook, actito or hubspot", only)
		}
		return nil, flagErrorf("--destination %s needs %s", only, need)
	}
	return out, nil
}

func (f *crmFlags) config(brokers []string) crm.Config {
	return crm.Config{Brokers: brokers, Topics: kafka.DefaultTopics(), Settle: f.settle, Concurrency: f.concurrency,
		Rate: f.rate, MaxAttempts: f.maxAttempts, MaxAge: f.maxAge}
}

// addCRM starts an engine per configured destination (only: just that one).
func (n *node) addCRM(f *crmFlags, only string) error {
	dests, err := f.destinations(only)
	if err != nil {
		return err
	}
	if len(dests) == 0 {
		return nil
	}
	m := crm.NewMetrics(n.reg)
	for _, d := range dests {
		cfg := f.config(n.brokers)
		cfg.Logger, cfg.Metrics = n.log, m
		e, err := crm.New(cfg, d)
		if err != nil {
			return err
		}
		n.comps = append(n.comps, e.Run)
		n.spec.CRM(d.Name())
		n.log.Info("CRM sink configured", "destination", d.Name(), "group", e.Group(), "settle", f.settle.String())
	}
	return nil
}

// progressBar draws progress on stderr when it is a terminal.
func progressBar(e env) func(done, total int) {
	if !isTerminal(e.stderr) {
		return nil
	}
	return func(done, total int) {
		width := 30
		filled := width * done / max(total, 1)
		fmt.Fprintf(e.stderr, "\r[%s%s] %d/%d", repeat('#', filled), repeat('.', width-filled), done, total)
		if done == total {
			fmt.Fprintln(e.stderr)
		}
	}
}

func repeat(c byte, n int) string { return string(slices.Repeat([]byte{c}, max(n, 0))) }

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
