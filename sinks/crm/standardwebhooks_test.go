package crm_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/sinks/crm"
	"github.com/walletsync/walletsync/wire"
)

// nodePeers is internal/peers/node with its packages installed, or a skip
// (a failure under CI=true) saying how to install them.
func nodePeers(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "internal", "peers", "node"))
	if err != nil {
		t.Fatal(err)
	}
	_, errNode := exec.LookPath("node")
	_, errMod := os.Stat(filepath.Join(dir, "node_modules", "standardwebhooks"))
	if errNode != nil || errMod != nil {
		msg := fmt.Sprintf("the Standard Webhooks peer needs node and `cd internal/peers/node && npm ci` (%v %v)", errNode, errMod)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

type received struct {
	OK        bool    `json:"ok"`
	Error     *string `json:"error"`
	WebhookID *string `json:"webhookId"`
	Body      string  `json:"body"`
}

// startReceiver runs receiver.mjs: a node:http server that verifies every
// delivery with the official standardwebhooks package.
func startReceiver(t *testing.T, secret string) (url string, log func() []received) {
	t.Helper()
	dir := nodePeers(t)
	logPath := filepath.Join(t.TempDir(), "received.jsonl")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", filepath.Join(dir, "receiver.mjs"), "0")
	cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+secret, "RECEIVER_LOG="+logPath)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	var l struct{ Listening int }
	if err != nil || json.Unmarshal([]byte(line), &l) != nil || l.Listening == 0 {
		t.Fatalf("receiver did not start: %q %v", line, err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d/hooks/wallet", l.Listening), func() []received {
		b, _ := os.ReadFile(logPath)
		var rs []received
		for _, ln := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if ln == "" {
				continue
			}
			var r received
			if err := json.Unmarshal([]byte(ln), &r); err != nil {
				t.Fatalf("receiver log %q: %v", ln, err)
			}
			rs = append(rs, r)
		}
		return rs
	}
}

// Defect (issue 16): the raw UTF-8 customerId went into webhook-id, which
// HTTP stacks read as ISO-8859-1, so the official library rejected every
// non-ASCII customer ("No matching signature found") and ids with control
// characters could not be sent at all. Every delivery, for ids of every
// shape, must verify with the official Standard Webhooks library on a real
// node:http server, and the receiver's final state must equal the fold.
func TestEveryDeliveryVerifiesWithStandardWebhooks(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	// sentOnly was sent the pass and never added it: walletStatus none
	// with a passIssuedAt (issue 18); every third other customer was
	// sent it an hour before installing.
	const sentOnly = "sent, not added"
	ids := []string{"ascii-anna", "émile@example.fr", "zoë", "日本語の顧客", "emoji😀", "line\r\nbreak", "nul\x00id", "tab\tid",
		"quote\"id", "space id", "%2E", "..", "ünï\u0301code", strings.Repeat("long-", 60), sentOnly}
	for _, batch := range []int{1, 5} {
		t.Run(fmt.Sprintf("batch %d", batch), func(t *testing.T) {
			url, log := startReceiver(t, secret)
			c := newCluster(t)
			d, err := crm.NewWebhook(crm.WebhookConfig{URL: url, Secret: secret, Batch: batch})
			if err != nil {
				t.Fatal(err)
			}
			m := crm.NewMetrics(prometheus.NewRegistry())
			run(t, c, crm.Config{Settle: 0, BaseBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxAttempts: 3, Metrics: m}, d)
			var evs []walletsync.Event
			sent := 0
			for i, id := range ids {
				at := int64(1767225600000) + int64(i)*1000
				if id == sentOnly || i%3 == 0 {
					evs = append(evs, walletsync.Event{ID: fmt.Sprintf("p-%d", i), Type: walletsync.TypeIssued, CustomerID: id, OccurredAt: at - 3_600_000})
					sent++
				}
				if id == sentOnly {
					continue
				}
				evs = append(evs,
					walletsync.Event{ID: fmt.Sprintf("i-%d", i), Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: id, OccurredAt: at},
					walletsync.Event{ID: fmt.Sprintf("g-%d", i), Type: walletsync.TypeInstalled, Platform: walletsync.PlatformGoogle, CustomerID: id, OccurredAt: at + 60_000})
				if i%2 == 0 {
					evs = append(evs, walletsync.Event{ID: fmt.Sprintf("u-%d", i), Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformApple, CustomerID: id, OccurredAt: at + 120_000})
				}
			}
			c.write(evs)
			c.waitCaughtUp(crm.Group("webhook"), 30*time.Second)
			if n := testutil.ToFloat64(m.DeadLettered("webhook")); n != 0 {
				t.Errorf("%v deliveries dead-lettered", n)
			}
			state := map[string]struct {
				version uint64
				body    string
			}{}
			rs := log()
			if len(rs) == 0 {
				t.Fatal("the receiver got nothing")
			}
			for _, r := range rs {
				if !r.OK {
					e := ""
					if r.Error != nil {
						e = *r.Error
					}
					t.Errorf("standardwebhooks refused delivery %v: %s (body %.120q)", r.WebhookID, e, r.Body)
					continue
				}
				var objs []json.RawMessage
				if batch == 1 {
					objs = []json.RawMessage{json.RawMessage(r.Body)}
				} else if err := json.Unmarshal([]byte(r.Body), &objs); err != nil {
					t.Fatalf("batch body %q: %v", r.Body, err)
				}
				for _, o := range objs {
					var st struct {
						CustomerID string `json:"customerId"`
						Version    uint64 `json:"version"`
					}
					if err := json.Unmarshal(o, &st); err != nil {
						t.Fatalf("body %q: %v", o, err)
					}
					var fields map[string]json.RawMessage
					_ = json.Unmarshal(o, &fields)
					for _, f := range []string{"firstInstalledAt", "passIssuedAt"} {
						if _, ok := fields[f]; !ok {
							t.Errorf("delivery %v lacks %s: %s", r.WebhookID, f, o)
						}
					}
					if st.Version > state[st.CustomerID].version {
						state[st.CustomerID] = struct {
							version uint64
							body    string
						}{st.Version, string(o)}
					}
				}
			}
			for _, want := range c.fold.Statuses() {
				got, ok := state[want.CustomerID]
				if !ok {
					t.Errorf("customer %q never reached the receiver", want.CustomerID)
					continue
				}
				if w := string(wire.AppendStatus(nil, &want, true)); got.body != w {
					t.Errorf("customer %q: receiver holds %s, the fold %s", want.CustomerID, got.body, w)
				}
			}
			if len(state) != len(ids) {
				t.Errorf("receiver holds %d customers, want %d", len(state), len(ids))
			}
			// The fields of issue 18 arrived with their values: null or
			// the fold's instant.
			issued := 0
			for _, want := range c.fold.Statuses() {
				var got struct {
					WalletStatus     string  `json:"walletStatus"`
					FirstInstalledAt *string `json:"firstInstalledAt"`
					PassIssuedAt     *string `json:"passIssuedAt"`
				}
				_ = json.Unmarshal([]byte(state[want.CustomerID].body), &got)
				str := func(p *string) string {
					if p == nil {
						return "null"
					}
					return *p
				}
				ts := func(ms int64) string {
					if ms == 0 {
						return "null"
					}
					return string(wire.AppendTime(nil, ms))
				}
				if g, w := str(got.FirstInstalledAt)+" "+str(got.PassIssuedAt), ts(want.FirstInstalledAt)+" "+ts(want.PassIssuedAt); g != w {
					t.Errorf("customer %q: the receiver has firstInstalledAt, passIssuedAt %s; the fold %s", want.CustomerID, g, w)
				}
				if got.PassIssuedAt != nil {
					issued++
				}
				if want.CustomerID == sentOnly && (got.WalletStatus != "none" || got.FirstInstalledAt != nil || got.PassIssuedAt == nil) {
					t.Errorf("the customer sent the pass who never added it: %s", state[sentOnly].body)
				}
			}
			if issued != sent {
				t.Errorf("%d customers with a passIssuedAt at the receiver, want %d", issued, sent)
			}
		})
	}
}
