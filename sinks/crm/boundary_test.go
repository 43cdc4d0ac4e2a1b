package crm_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/sinks/crm"
)

// installs is one install event per customer id.
func installs(ids ...string) []walletsync.Event {
	var evs []walletsync.Event
	for i, id := range ids {
		evs = append(evs, walletsync.Event{ID: fmt.Sprintf("e-%d", i), Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple,
			CustomerID: id, OccurredAt: 1767225600000 + int64(i)})
	}
	return evs
}

// Defect (issue 16): Go's client followed a 301/302 as a GET without body,
// a 200 there counted as delivered, and the signature headers went to the
// other host. A redirect is the destination's failure: the target never
// hears from walletsync, and the item is retried, not marked delivered.
func TestRedirectIsNotADelivery(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(200)
	}))
	defer other.Close()
	for _, code := range []int{301, 302, 307, 308} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			var hits atomic.Int32
			moved := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				http.Redirect(w, r, other.URL+"/hook", code)
			}))
			defer moved.Close()
			c := newCluster(t)
			d, err := crm.NewWebhook(crm.WebhookConfig{URL: moved.URL, Secret: "s", Client: &http.Client{Timeout: time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			m := crm.NewMetrics(prometheus.NewRegistry())
			run(t, c, crm.Config{Settle: 0, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxAttempts: 3, Metrics: m}, d)
			c.write(installs("redirected"))
			deadline := time.Now().Add(20 * time.Second)
			for testutil.ToFloat64(m.DeadLettered("webhook")) < 1 {
				if time.Now().After(deadline) {
					t.Fatalf("the redirected item was not retried to the DLQ: %d requests, %v retries", hits.Load(), testutil.ToFloat64(m.Retries("webhook")))
				}
				time.Sleep(20 * time.Millisecond)
			}
			if hits.Load() != 3 || testutil.ToFloat64(m.Retries("webhook")) != 2 {
				t.Errorf("%d requests and %v retries, want 3 attempts", hits.Load(), testutil.ToFloat64(m.Retries("webhook")))
			}
			if n := elsewhere.Load(); n != 0 {
				t.Errorf("the redirect target received %d requests", n)
			}
			c.waitCaughtUp(crm.Group("webhook"), 20*time.Second)
			var dead []*kgo.Record
			for p := range int32(3) {
				if _, err := kafka.ReadPartition(context.Background(), c.emb.Brokers(), c.adm, c.topics.CRMDLQ, p, -1, func(r *kgo.Record) { dead = append(dead, r) }); err != nil {
					t.Fatal(err)
				}
			}
			var why string
			if len(dead) == 1 {
				for _, h := range dead[0].Headers {
					if h.Key == kafka.HeaderError {
						why = string(h.Value)
					}
				}
			}
			if len(dead) != 1 || !strings.Contains(why, fmt.Sprintf("HTTP %d", code)) || !strings.Contains(why, "redirect") {
				t.Errorf("DLQ: %d records, error %q", len(dead), why)
			}
		})
	}
}

// Defect (issue 16): four hanging requests held the four slots for the
// request timeout, and again at every retry: nobody else was delivered
// meanwhile. Now a request past SlowAfter moves to the retry lane and its
// retries stay there, so the other customers flow while the slow ones
// keep failing.
func TestSlowCustomersDoNotHoldOthersBack(t *testing.T) {
	var mu sync.Mutex
	delivered := map[string]time.Time{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"customerId":"slow-`) {
			<-r.Context().Done() // hangs until the client gives up
			return
		}
		var id string
		if i := strings.Index(string(b), `"customerId":"`); i >= 0 {
			id = string(b[i+14:])
			id = id[:strings.IndexByte(id, '"')]
		}
		mu.Lock()
		delivered[id] = time.Now()
		mu.Unlock()
		w.WriteHeader(204)
	}))
	defer srv.Close()
	c := newCluster(t)
	d, err := crm.NewWebhook(crm.WebhookConfig{URL: srv.URL, Secret: "s"})
	if err != nil {
		t.Fatal(err)
	}
	m := crm.NewMetrics(prometheus.NewRegistry())
	run(t, c, crm.Config{Settle: 0, Concurrency: 4, Rate: 1000, RequestTimeout: 5 * time.Second, SlowAfter: 300 * time.Millisecond,
		BaseBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 1000, Metrics: m}, d)
	ids := []string{"slow-1", "slow-2", "slow-3", "slow-4"}
	for i := range 40 {
		ids = append(ids, fmt.Sprintf("fast-%02d", i))
	}
	start := time.Now()
	c.write(installs(ids...))
	// With the hanging requests holding every slot, nothing would be
	// delivered before their 5 s timeout.
	deadline := start.Add(4 * time.Second)
	for {
		mu.Lock()
		n := len(delivered)
		mu.Unlock()
		if n == 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 40 customers delivered in 4 s while 4 others hang", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Each hanging first attempt moves to the slow lane 300 ms after it
	// began (some began after the others were delivered).
	for testutil.ToFloat64(m.SlowRequests("webhook")) < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("slow requests counted: %v, want the 4 hanging ones", testutil.ToFloat64(m.SlowRequests("webhook")))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
