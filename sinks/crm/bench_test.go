package crm_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/sinks/crm"
	"github.com/walletsync/walletsync/sinks/crm/crmtest"
	"github.com/walletsync/walletsync/wire"
)

// BenchmarkDelivery: status changes delivered per second to local servers
// answering after 5 ms (goal: ≥ 5,000/s for batch APIs, ≥ 1,000/s for the
// webhook). Every change is a different customer, so nothing coalesces.
func BenchmarkDelivery(b *testing.B) {
	const changes = 5000
	latency := crmtest.Faults{Latency: 5 * time.Millisecond}
	for _, c := range []struct {
		name  string
		start func(b *testing.B) (crm.Destination, *crmtest.Store)
	}{
		{"webhook", func(b *testing.B) (crm.Destination, *crmtest.Store) {
			s := crmtest.NewWebhookServer("k", latency)
			b.Cleanup(s.Close)
			d, _ := crm.NewWebhook(crm.WebhookConfig{URL: s.URL, Secret: "k", Client: benchClient()})
			return d, s.Store
		}},
		{"webhook_batch_100", func(b *testing.B) (crm.Destination, *crmtest.Store) {
			s := crmtest.NewWebhookServer("k", latency)
			b.Cleanup(s.Close)
			d, _ := crm.NewWebhook(crm.WebhookConfig{URL: s.URL, Secret: "k", Batch: 100, Client: benchClient()})
			return d, s.Store
		}},
		{"hubspot", func(b *testing.B) (crm.Destination, *crmtest.Store) {
			s := crmtest.NewHubSpotServer("t", latency)
			b.Cleanup(s.Close)
			d, _ := crm.NewHubSpot(crm.HubSpotConfig{BaseURL: s.URL, Token: "t", Client: benchClient()})
			return d, s.Store
		}},
		{"actito", func(b *testing.B) (crm.Destination, *crmtest.Store) {
			s := crmtest.NewActitoServer("k", "e", "neostore_wallets", "customerId", latency)
			b.Cleanup(s.Close)
			d, _ := crm.NewActito(crm.ActitoConfig{BaseURL: s.URL, APIKey: "k", Entity: "e", Client: benchClient()})
			return d, s.Store
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				b.StopTimer()
				cl := newCluster(b)
				var evs []walletsync.Event
				for i := range changes {
					evs = append(evs, walletsync.Event{ID: fmt.Sprint("e", i), Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple,
						CustomerID: fmt.Sprint("cust-", i), OccurredAt: 1_750_000_000_000 + int64(i)})
				}
				cl.write(evs)
				dest, store := c.start(b)
				e, err := crm.New(crm.Config{Brokers: cl.emb.Brokers(), Concurrency: 32, Rate: 1e6}, dest)
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				b.StartTimer()
				start := time.Now()
				go func() { defer close(done); _ = e.Run(ctx) }()
				for store.DistinctWrites() < changes {
					time.Sleep(2 * time.Millisecond)
				}
				total += time.Since(start)
				b.StopTimer()
				cancel()
				<-done
				b.StartTimer()
			}
			b.ReportMetric(float64(changes)*float64(b.N)/total.Seconds(), "changes/s")
		})
	}
}

func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
}

// BenchmarkFlappyStream: CRM writes per 1,000 events for customers that
// uninstall and reinstall within a second, with a 1 s settle window,
// against a plain webhook forwarder that POSTs every event as it comes
// (the one-call-per-event approach), measured on the same stream.
func BenchmarkFlappyStream(b *testing.B) {
	const customers, rounds = 500, 8
	stream := func() [][]walletsync.Event { return flappyStream(customers, 1, rounds) }
	events := float64(customers * rounds)
	b.Run("walletsync_settle_1s", func(b *testing.B) {
		var writes float64
		for b.Loop() {
			cl := newCluster(b)
			srv := crmtest.NewWebhookServer("k", crmtest.Faults{Latency: 5 * time.Millisecond})
			dest, _ := crm.NewWebhook(crm.WebhookConfig{URL: srv.URL, Secret: "k", Client: benchClient()})
			e, _ := crm.New(crm.Config{Brokers: cl.emb.Brokers(), Settle: time.Second, Concurrency: 32, Rate: 1e6}, dest)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = e.Run(ctx) }()
			for _, round := range stream() {
				cl.write(round)
				time.Sleep(100 * time.Millisecond)
			}
			cl.waitCaughtUp(crm.Group("webhook"), time.Minute)
			writes += float64(srv.Writes())
			cancel()
			<-done
			srv.Close()
		}
		b.ReportMetric(1000*writes/float64(b.N)/events, "writes/1000events")
	})
	b.Run("plain_forwarder_baseline", func(b *testing.B) {
		var writes float64
		for b.Loop() {
			srv := crmtest.NewWebhookServer("k", crmtest.Faults{Latency: 5 * time.Millisecond})
			key, _ := crm.WebhookKey("k")
			client := benchClient()
			var wg sync.WaitGroup
			sem := make(chan struct{}, 32)
			for _, round := range stream() {
				for _, ev := range round {
					// The forwarder posts each event's resulting status
					// as it is, with no memory of what it sent.
					st := walletsync.Status{CustomerID: ev.CustomerID, Version: 1}
					body := wire.AppendStatus(nil, &st, true)
					wg.Add(1)
					sem <- struct{}{}
					go func() {
						defer func() { <-sem; wg.Done() }()
						ts := time.Now().Unix()
						req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
						req.Header.Set("webhook-id", ev.ID)
						req.Header.Set("webhook-timestamp", fmt.Sprint(ts))
						req.Header.Set("webhook-signature", crm.SignWebhook(key, ev.ID, ts, body))
						if resp, err := client.Do(req); err == nil {
							resp.Body.Close()
						}
					}()
				}
				time.Sleep(100 * time.Millisecond)
			}
			wg.Wait()
			writes += float64(srv.Writes())
			srv.Close()
		}
		b.ReportMetric(1000*writes/float64(b.N)/events, "writes/1000events")
	})
}
