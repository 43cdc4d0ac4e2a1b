package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/internal/synth"
)

func benchServer(b *testing.B, cfg Config) (string, *kgo.Client) {
	b.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(emb.Close)
	cl, err := kgo.NewClient(append(kafka.ClientOpts(emb.Brokers(), "bench"), ProducerOpts(10*time.Second)...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	if err := kafka.EnsureTopics(context.Background(), kadm.NewClient(cl), kafka.DefaultTopics(), kafka.Layout{Partitions: 6, Replication: 1}); err != nil {
		b.Fatal(err)
	}
	cfg.Now = time.Now
	srv := NewServer(cfg, NewKafkaPublisher(cl, kafka.DefaultTopics().Events, 10*time.Second))
	mux := http.NewServeMux()
	srv.Handle(mux)
	hs := httptest.NewServer(mux)
	b.Cleanup(hs.Close)
	return hs.URL, cl
}

// BenchmarkIngestNDJSON: events/s through POST /v1/events in 10,000-line
// batches, against producing the same records straight to Kafka in the same
// run (goal ≥ 300,000 events/s).
func BenchmarkIngestNDJSON(b *testing.B) {
	cfg := synth.Default(100_000)
	cfg.Start = time.Now().Add(-24 * time.Hour)
	lines := synth.Lines(cfg)
	var batches [][]byte
	for i := 0; i < len(lines); i += MaxBatchLines {
		batches = append(batches, bytes.Join(lines[i:min(i+MaxBatchLines, len(lines))], []byte("\n")))
	}
	url, cl := benchServer(b, Config{})
	b.Run("direct_produce_baseline", func(b *testing.B) {
		evs := synth.Events(cfg)
		for b.Loop() {
			recs := make([]*kgo.Record, len(evs))
			for i := range evs {
				recs[i] = &kgo.Record{Topic: "wallet.events", Key: []byte(evs[i].CustomerID), Value: lines[i]}
			}
			if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(lines))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("post_v1_events", func(b *testing.B) {
		for b.Loop() {
			// Two clients at once, as a real sender with a pool would.
			var wg sync.WaitGroup
			next := make(chan []byte)
			for range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for body := range next {
						resp, err := http.Post(url+"/v1/events", "application/x-ndjson", bytes.NewReader(body))
						if err != nil || resp.StatusCode != 200 {
							panic(fmt.Sprint(err, resp.Status))
						}
						_, _ = io.Copy(io.Discard, resp.Body) // keeps the connection alive
						resp.Body.Close()
					}
				}()
			}
			for _, body := range batches {
				next <- body
			}
			close(next)
			wg.Wait()
		}
		b.ReportMetric(float64(len(lines))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// BenchmarkWebhook: signed single webhook deliveries, 32 at a time; req/s
// and latency percentiles (goal ≥ 10,000 req/s, p99 < 20 ms).
func BenchmarkWebhook(b *testing.B) {
	url, _ := benchServer(b, Config{WebhookSecrets: []string{"s3cret"}})
	const n = 20_000
	bodies := make([][]byte, n)
	sigs := make([]string, n)
	now := time.Now().UTC().Format(time.RFC3339)
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"id":"d-%d","type":"Pass:Installed","date":%q,"data":{"passId":"p-%d","device":"apple","identifiers":{"customerId":"c-%d"}}}`, i, now, i, i%5000)
		sigs[i] = SignBody(bodies[i], "s3cret")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	client := &http.Client{Transport: tr}
	var lat []time.Duration
	for b.Loop() {
		lat = lat[:0]
		var mu sync.Mutex
		var wg sync.WaitGroup
		next := make(chan int)
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for i := range next {
					req, _ := http.NewRequest("POST", url+"/v1/webhooks/wallet-crew", bytes.NewReader(bodies[i]))
					req.Header.Set("X-Neostore-Signature", sigs[i])
					start := time.Now()
					resp, err := client.Do(req)
					if err != nil || resp.StatusCode != 200 {
						panic(fmt.Sprint(err, resp))
					}
					// Drained, so the connection is kept alive and reused,
					// as a webhook sender's is.
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
