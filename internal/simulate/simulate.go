// Package simulate plays realistic traffic against a running walletsync:
// signed Wallet Crew webhooks and custom-connector calls for a population
// of customers and passes, with duplicate deliveries, late and reordered
// events and quick reinstalls — and the drift between what those calls say
// and what a Pass API reports, for the backfill to repair.
package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/walletsync/walletsync/ingest"
	"github.com/walletsync/walletsync/ingest/passapi/passapitest"
)

// Config configures a simulation.
type Config struct {
	URL             string // walletsync's base URL
	WebhookSecret   string // signs webhooks (x-neostore-signature) when set
	ConnectorAPIKey string
	Customers       int           // default 1,000
	Rate            float64       // requests per second (default 200)
	Duration        time.Duration // 0: until ctx ends
	Seed            uint64
	// PassAPI, when set, is kept at the truth, except for a share of
	// passes (Drift) whose install or uninstall never reaches walletsync.
	PassAPI  *passapitest.Server
	Drift    float64 // default 0.03
	Progress func(Stats)
	Client   *http.Client
}

// Stats count what was sent.
type Stats struct {
	Sent, Webhooks, Connector, Duplicates, Late, Reinstalls, Dropped, Failed int64
	DeviceRemovals                                                           int64
}

type pass struct {
	customer, id, passType string
	apple, google          *time.Time
	created                time.Time // its creationDate in the Pass API: an issued event at the next backfill
}

type sim struct {
	cfg    Config
	rng    *rand.Rand
	passes []*pass
	stats  struct {
		sent, webhooks, connector, dupes, late, reinstalls, dropped, failed atomic.Int64
		deviceRemovals                                                      atomic.Int64
	}
	mu     sync.Mutex
	recent [][]byte // webhook bodies sent, for duplicate deliveries
	ids    []string
	held   []heldWebhook
}

type heldWebhook struct {
	body []byte
	id   string
	due  time.Time
}

// Run sends traffic until ctx ends or Duration passes.
func Run(ctx context.Context, cfg Config) (Stats, error) {
	if cfg.URL == "" {
		return Stats{}, fmt.Errorf("simulate: no URL")
	}
	if cfg.Customers <= 0 {
		cfg.Customers = 1000
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 200
	}
	if cfg.Drift <= 0 {
		cfg.Drift = 0.03
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	s := &sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed))}
	types := []string{"loyalty", "coupon", "eventTicket", "giftCard"}
	for c := range cfg.Customers {
		for j := range 1 + s.rng.IntN(2) {
			// Issued over the last few days, so that the funnel has cohorts
			// installing within a day, and some not yet.
			created := time.Now().Add(-time.Duration(s.rng.IntN(6*24*60)) * time.Minute)
			s.passes = append(s.passes, &pass{customer: fmt.Sprintf("customer-%05d@example.com", c), id: fmt.Sprintf("pass-%05d-%d", c, j),
				passType: types[s.rng.IntN(len(types))], created: created})
		}
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	tick := time.NewTicker(max(interval, time.Millisecond))
	defer tick.Stop()
	perTick := max(1, int(float64(time.Millisecond)/float64(interval)))
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	report := time.NewTicker(time.Second)
	defer report.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			s.publishPassAPI()
			return s.snapshot(), nil
		case <-report.C:
			s.publishPassAPI()
			if cfg.Progress != nil {
				cfg.Progress(s.snapshot())
			}
		case <-tick.C:
			for range perTick {
				reqs := s.next(time.Now())
				for _, r := range reqs {
					sem <- struct{}{}
					wg.Add(1)
					go func() {
						defer func() { <-sem; wg.Done() }()
						s.send(ctx, r)
					}()
				}
			}
		}
	}
}

func (s *sim) snapshot() Stats {
	return Stats{Sent: s.stats.sent.Load(), Webhooks: s.stats.webhooks.Load(), Connector: s.stats.connector.Load(),
		Duplicates: s.stats.dupes.Load(), Late: s.stats.late.Load(), Reinstalls: s.stats.reinstalls.Load(),
		Dropped: s.stats.dropped.Load(), Failed: s.stats.failed.Load(), DeviceRemovals: s.stats.deviceRemovals.Load()}
}

type request struct {
	path, contentType, delivery string
	body                        []byte
	header                      map[string]string
}

// next decides the requests of one step: a change of one pass on one
// platform (sometimes a quick uninstall-reinstall), sent as a webhook or a
// connector call, sometimes duplicated, delayed, or never sent (drift).
func (s *sim) next(now time.Time) []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []request
	// Late webhooks whose time has come.
	kept := s.held[:0]
	for _, h := range s.held {
		if now.After(h.due) {
			out = append(out, s.webhookRequest(h.body, h.id))
		} else {
			kept = append(kept, h)
		}
	}
	s.held = kept
	if len(s.recent) > 0 && s.rng.Float64() < 0.05 {
		i := s.rng.IntN(len(s.recent))
		s.stats.dupes.Add(1)
		out = append(out, s.webhookRequest(s.recent[i], s.ids[i]))
	}
	p := s.passes[s.rng.IntN(len(s.passes))]
	apple := s.rng.IntN(2) == 0
	slot := &p.google
	platform := "google"
	if apple {
		slot, platform = &p.apple, "apple"
	}
	if *slot != nil && s.rng.Float64() < 0.05 {
		// The pass leaves one of two devices: an uninstall whose counts
		// say another device still holds it (the truth does not change).
		s.stats.deviceRemovals.Add(1)
		body, id := s.webhookBody(p, platform, false, now)
		body = bytes.Replace(body, []byte(`"additionalInformation":{`), []byte(`"additionalInformation":{"registrationInformation":{"activeRegistrationCount":1,"totalRegistrationCount":2},`), 1)
		return append(out, s.webhookRequest(body, id))
	}
	install := *slot == nil
	if install {
		t := now
		*slot = &t
	} else {
		*slot = nil
	}
	changes := []bool{install}
	if !install && s.rng.Float64() < 0.1 {
		// Uninstalled and added back within seconds.
		t := now.Add(time.Duration(500+s.rng.IntN(2500)) * time.Millisecond)
		*slot = &t
		changes = append(changes, true)
		s.stats.reinstalls.Add(1)
	}
	for i, inst := range changes {
		at := now.Add(time.Duration(i) * time.Second)
		if s.rng.Float64() < s.cfg.Drift && s.cfg.PassAPI != nil {
			s.stats.dropped.Add(1) // the change happened; walletsync never hears of it
			continue
		}
		if s.rng.Float64() < 0.3 {
			out = append(out, s.connectorRequest(p, platform, inst))
			continue
		}
		body, id := s.webhookBody(p, platform, inst, at)
		if s.rng.Float64() < 0.1 {
			s.stats.late.Add(1)
			s.held = append(s.held, heldWebhook{body: body, id: id, due: now.Add(time.Duration(1+s.rng.IntN(20)) * time.Second)})
			continue
		}
		if len(s.recent) < 1000 {
			s.recent, s.ids = append(s.recent, body), append(s.ids, id)
		} else {
			k := s.rng.IntN(1000)
			s.recent[k], s.ids[k] = body, id
		}
		out = append(out, s.webhookRequest(body, id))
	}
	return out
}

func (s *sim) webhookBody(p *pass, platform string, install bool, at time.Time) ([]byte, string) {
	typ := "Pass:Uninstalled"
	if install {
		typ = "Pass:Installed"
	}
	id := fmt.Sprintf("wh-%d-%d", at.UnixNano(), s.rng.Uint32())
	body, _ := json.Marshal(map[string]any{
		"id": id, "type": typ, "date": at.UTC().Format("2006-01-02T15:04:05.000Z"),
		"data": map[string]any{
			"passId": p.id, "passType": p.passType, "device": platform,
			"identifiers": map[string]any{"customerId": p.customer, "email": p.customer},
			"additionalInformation": map[string]any{"registrationSource": map[string]any{
				"medium": []string{"email", "sms", "qr", "web"}[s.rng.IntN(4)], "origin": "campaign-" + strconv.Itoa(s.rng.IntN(5))}},
		},
	})
	return body, id
}

func (s *sim) webhookRequest(body []byte, id string) request {
	r := request{path: "/v1/webhooks/wallet-crew", contentType: "application/json", body: body, delivery: id, header: map[string]string{}}
	if s.cfg.WebhookSecret != "" {
		r.header["X-Neostore-Signature"] = ingest.SignBody(body, s.cfg.WebhookSecret)
	}
	return r
}

func (s *sim) connectorRequest(p *pass, platform string, install bool) request {
	form := url.Values{"customerId": {p.customer}, "isInstalled": {strconv.FormatBool(install)}, "device": {platform},
		"passId": {p.id}, "passType": {p.passType}}
	r := request{path: "/v1/connector/installation", contentType: "application/x-www-form-urlencoded", body: []byte(form.Encode()), header: map[string]string{}}
	if s.cfg.ConnectorAPIKey != "" {
		r.header["X-API-KEY"] = s.cfg.ConnectorAPIKey
	}
	return r
}

func (s *sim) send(ctx context.Context, r request) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL+r.path, bytes.NewReader(r.body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", r.contentType)
	if r.delivery != "" {
		req.Header.Set("X-Neostore-Delivery", r.delivery)
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			s.stats.failed.Add(1)
		}
		return
	}
	resp.Body.Close()
	s.stats.sent.Add(1)
	if r.path == "/v1/connector/installation" {
		s.stats.connector.Add(1)
	} else {
		s.stats.webhooks.Add(1)
	}
	if resp.StatusCode/100 != 2 {
		s.stats.failed.Add(1)
	}
}

// publishPassAPI sets the Pass API to the truth: every change, including
// those walletsync never heard of.
func (s *sim) publishPassAPI() {
	if s.cfg.PassAPI == nil {
		return
	}
	s.mu.Lock()
	ps := make([]passapitest.Pass, len(s.passes))
	for i, p := range s.passes {
		ps[i] = passapitest.Pass{ID: p.id, PassType: p.passType, Identifiers: map[string]string{"customerId": p.customer}, Apple: p.apple, Google: p.google,
			Created: &p.created}
	}
	s.mu.Unlock()
	s.cfg.PassAPI.SetPasses(ps)
}
