package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/httpjson"
)

// memPublisher acknowledges every event at once and keeps it: the intake
// tests below are about HTTP, not Kafka.
type memPublisher struct {
	mu  sync.Mutex
	evs []walletsync.Event
}

func (p *memPublisher) Publish(_ context.Context, evs []walletsync.Event) []error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, evs...)
	return make([]error, len(evs))
}

func (p *memPublisher) events() []walletsync.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]walletsync.Event(nil), p.evs...)
}

type local struct {
	*fixture
	hs  *httptest.Server
	pub *memPublisher
	m   *Metrics
}

// newLocal serves the ingest handlers, publishing to memory.
func newLocal(t *testing.T, cfg Config) *local {
	t.Helper()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cfg.Now = func() time.Time { return now }
	cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	pub := &memPublisher{}
	mux := http.NewServeMux()
	NewServer(cfg, pub).Handle(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &local{fixture: &fixture{url: hs.URL, now: now}, hs: hs, pub: pub, m: cfg.Metrics}
}

const hookPath = "/v1/webhooks/wallet-crew"

// hook is a Pass:Installed delivery; id goes in as it is (raw bytes),
// customer as the JSON value it is.
func hook(id, customer string) []byte {
	return []byte(`{"id":"` + id + `","type":"Pass:Installed","date":"2026-03-01T11:00:00Z","data":{"device":"apple","identifiers":{"customerId":` + customer + `}}}`)
}

// Defect 1: a numeric identifier went through float64, so 2^53+1 became
// 2^53 and two customers became one.
func TestWebhookNumericIdentifierKeepsItsDigits(t *testing.T) {
	l := newLocal(t, Config{})
	for i, id := range []string{"9007199254740993", "9007199254740992", "12345678901234567890123", "1.50"} {
		r := l.post(t, hookPath, "application/json", hook(fmt.Sprint("d", i), id), nil)
		if r.code != 200 || r.body["customerId"] != id {
			t.Errorf("customerId %s: %d %v", id, r.code, r.body)
		}
	}
	seen := map[string]bool{}
	for _, e := range l.pub.events() {
		seen[e.CustomerID] = true
	}
	if len(seen) != 4 {
		t.Errorf("4 numeric ids made %d customers: %v", len(seen), seen)
	}
	// A payload decoded without UseNumber (float64) cannot say which of
	// two ids above 2^53 it held: refused, never merged.
	if _, err := ResolveCustomer(map[string]any{"customerId": float64(9007199254740993)}, "customerId"); err == nil {
		t.Error("a float64 id above 2^53 was accepted")
	}
	if got, err := ResolveCustomer(map[string]any{"customerId": float64(42)}, "customerId"); err != nil || got != "42" {
		t.Errorf("float64 42: %q %v", got, err)
	}
	// Counts are still read from json.Number.
	body := []byte(`{"id":"reg","type":"Pass:Installed","date":"2026-03-01T11:00:00Z","data":{"device":"google","identifiers":{"customerId":"c"},
		"additionalInformation":{"registrationInformation":{"activeRegistrationCount":2,"totalRegistrationCount":3.0}}}}`)
	if r := l.post(t, hookPath, "application/json", body, nil); r.code != 200 {
		t.Fatalf("registration counts: %+v", r)
	}
	evs := l.pub.events()
	if reg := evs[len(evs)-1].Registration; reg == nil || reg.ActiveCount != 2 || reg.TotalCount != 3 || !reg.HasActiveCount || !reg.HasTotalCount {
		t.Errorf("registration %+v", reg)
	}
	// Trailing data after the object is not a JSON object either.
	if r := l.post(t, hookPath, "application/json", append(hook("t", `"c"`), " {}"...), nil); r.code != 400 {
		t.Errorf("trailing data: %+v", r)
	}
}

// Defect 1: encoding/json turned invalid UTF-8 into U+FFFD, so the delivery
// ids "dlv-\xff" and "dlv-\xfe" were one id and the second event was
// dropped as a duplicate. Now both are refused, as invalid UTF-8 is.
func TestInvalidUTF8IsRefused(t *testing.T) {
	l := newLocal(t, Config{WebhookSecrets: []string{"s"}})
	signed := func(b []byte, hdr ...string) reply {
		h := map[string]string{"X-Neostore-Signature": sign(b, "s")}
		for i := 0; i+1 < len(hdr); i += 2 {
			h[hdr[i]] = hdr[i+1]
		}
		return l.post(t, hookPath, "application/json", b, h)
	}
	for _, id := range []string{"dlv-\xff", "dlv-\xfe"} {
		if r := signed(hook(id, `"c1"`)); r.code != 400 || !strings.Contains(fmt.Sprint(r.body["error"]), "not valid UTF-8") {
			t.Errorf("delivery id %q: %+v", id, r)
		}
	}
	if r := signed(hook("ok", "\"c\xc3\""), "X-Neostore-Delivery-Id", "h"); r.code != 400 {
		t.Errorf("customer id with invalid UTF-8: %+v", r)
	}
	if r := signed(hook("ok", `"c1"`), "X-Neostore-Delivery-Id", "hdr-\xff"); r.code != 400 {
		t.Errorf("delivery id header with invalid UTF-8: %+v", r)
	}
	form := "application/x-www-form-urlencoded"
	for _, body := range []string{"customerId=c%FF&isInstalled=true&device=apple", "customerId=c&isInstalled=true&device=apple&x%FE=1"} {
		if r := l.post(t, "/v1/connector/installation", form, []byte(body), nil); r.code != 400 || !strings.Contains(fmt.Sprint(r.body["error"]), "not valid UTF-8") {
			t.Errorf("connector %s: %+v", body, r)
		}
	}
	if evs := l.pub.events(); len(evs) != 0 {
		t.Errorf("published %+v", evs)
	}
}

// Defect 1 (a decision, not a bug found): ids are compared as bytes. An NFC
// and an NFD spelling of one name are two customers, through every
// endpoint, and reach Kafka byte for byte.
func TestIdsAreComparedAsBytes(t *testing.T) {
	l := newLocal(t, Config{})
	nfc, nfd := "Jos\u00e9", "Jose\u0301"
	for i, id := range []string{nfc, nfd} {
		if r := l.post(t, hookPath, "application/json", hook(fmt.Sprint("w", i), fmt.Sprintf("%q", id)), nil); r.code != 200 {
			t.Fatalf("webhook: %+v", r)
		}
		form := url.Values{"customerId": {id}, "isInstalled": {"true"}, "device": {"google"}}
		if r := l.post(t, "/v1/connector/installation", "application/x-www-form-urlencoded", []byte(form.Encode()), nil); r.code != 200 {
			t.Fatalf("connector: %+v", r)
		}
		if r := l.post(t, "/v1/events", "application/x-ndjson", []byte(ev(fmt.Sprint("e", i), id, "2026-03-01T10:00:00Z")), nil); r.code != 200 {
			t.Fatalf("events: %+v", r)
		}
	}
	n := map[string]int{}
	for _, e := range l.pub.events() {
		n[e.CustomerID]++
	}
	if len(n) != 2 || n[nfc] != 3 || n[nfd] != 3 {
		t.Errorf("NFC and NFD ids made %v, want 3 events each of %q and %q", n, nfc, nfd)
	}
}

// attack opens n connections that each send the headers of a POST to path
// with a body of size bytes, send all of it but the last byte, and hold. A
// connection the server answers or closes is opened again, so the pressure
// stays until the returned stop is called.
func attack(t *testing.T, addr, path, headers string, n, size int) (stop func()) {
	body := bytes.Repeat([]byte("x"), size-1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					time.Sleep(50 * time.Millisecond)
					continue
				}
				unhook := context.AfterFunc(ctx, func() { c.Close() })
				fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n", path, size, headers)
				_, _ = c.Write(body)
				_, _ = io.Copy(io.Discard, c) // until the server answers and closes, or stop
				unhook()
				c.Close()
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	return func() { cancel(); wg.Wait() }
}

func heapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// Defect 2: 400 connections holding 1 MiB unsigned webhook bodies took the
// process from 24 MB to 494 MB; slow 9 MiB /v1/events bodies to 1.3 GB.
// Now bodies are read within byte budgets (and small ones within a reserve
// of their own), so memory stays bounded and honest senders, small
// webhooks and token-bearing batches, are still served meanwhile.
func TestSlowBodiesKeepMemoryBounded(t *testing.T) {
	const bound = 64 << 20
	for _, tc := range []struct {
		name, path, headers string
		cfg                 Config
		n, size             int
	}{
		// A well-formed signature that matches nothing: the body must be
		// read to tell. (Without one, or with a malformed one, a webhook is
		// refused before its body is read: TestWebhookSignatureCheckedBeforeBody.)
		{"unsigned webhooks", hookPath, "X-Neostore-Signature: " + strings.Repeat("ab", 32) + "\r\n", Config{WebhookSecrets: []string{"s"}, APIToken: "tok"}, 400, 1 << 20},
		{"open /v1/events", "/v1/events", "", Config{WebhookSecrets: []string{"s"}}, 40, 9 << 20},
		{"/v1/events without the token", "/v1/events", "", Config{WebhookSecrets: []string{"s"}, APIToken: "tok"}, 100, 9 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLocal(t, tc.cfg)
			base := heapInuse()
			stop := attack(t, l.hs.Listener.Addr().String(), tc.path, tc.headers, tc.n, tc.size)
			defer stop()
			time.Sleep(3 * time.Second) // the attack settles: bodies read, waiters refused

			var peak uint64
			sample := func() {
				if h := heapInuse(); h > base && h-base > peak {
					peak = h - base
				}
			}
			sample()
			// Honest senders meanwhile: small signed webhooks, and batches
			// with the token (or without when none is configured).
			client := &http.Client{Timeout: 10 * time.Second}
			for i := range 10 {
				b := hook(fmt.Sprint("honest-", i), `"c"`)
				req, _ := http.NewRequest("POST", l.url+hookPath, bytes.NewReader(b))
				req.Header.Set("X-Neostore-Signature", sign(b, "s"))
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("honest webhook %d: %v", i, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("honest webhook %d: %s", i, resp.Status)
				}
				batch := ev(fmt.Sprint("honest-ev-", i), "c", "2026-03-01T10:00:00Z") + "\n"
				req, _ = http.NewRequest("POST", l.url+"/v1/events", strings.NewReader(batch))
				req.Header.Set("Authorization", "Bearer tok")
				if resp, err = client.Do(req); err != nil {
					t.Fatalf("honest batch %d: %v", i, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("honest batch %d: %s", i, resp.Status)
				}
				if i%3 == 0 {
					sample()
				}
			}
			sample()
			t.Logf("%d × %d-byte slow bodies: heap in use %.1f MiB over the baseline at most", tc.n, tc.size, float64(peak)/(1<<20))
			if peak > bound {
				t.Errorf("heap in use grew by %.0f MiB under %d slow %d-byte bodies, bound %d MiB", float64(peak)/(1<<20), tc.n, tc.size, bound>>20)
			}
			if got := len(l.pub.events()); got != 20 {
				t.Errorf("%d events published, want the honest 20", got)
			}
		})
	}
}

// rawPost sends a POST with Content-Length size but only the first part
// bytes of its body and returns the connection, still open.
func rawPost(t *testing.T, addr, path string, size, part int, headers string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n", path, size, headers)
	if _, err := c.Write(bytes.Repeat([]byte(" "), part)); err != nil {
		t.Fatal(err)
	}
	return c
}

// readReply reads one response from a raw connection within d.
func readReply(t *testing.T, c net.Conn, d time.Duration) (*http.Response, map[string]any) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(bufioReader(c), nil)
	if err != nil {
		t.Fatalf("no answer within %v: %v", d, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("answer %s is not JSON: %q", resp.Status, b)
	}
	return resp, body
}

// Defect 2: a body had no deadline, so a sender could hold a connection and
// its buffered bytes for ever.
func TestSlowBodyTimesOut(t *testing.T) {
	l := newLocal(t, Config{Limits: Limits{BodyTimeout: 300 * time.Millisecond, MinBodyRate: 1 << 30}})
	c := rawPost(t, l.hs.Listener.Addr().String(), hookPath, 1000, 10, "")
	start := time.Now()
	resp, body := readReply(t, c, 5*time.Second)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(fmt.Sprint(body["error"]), "did not arrive within") {
		t.Fatalf("slow body: %s %v", resp.Status, body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("answered after %v", d)
	}
	if n := testutil.ToFloat64(l.m.bodiesRefused.WithLabelValues("webhook", "timeout")); n != 1 {
		t.Errorf("bodies_refused_total{webhook,timeout} = %v", n)
	}
	// The deadline is lifted once the body is in: a fast body is served.
	if r := l.post(t, hookPath, "application/json", hook("fast", `"c"`), nil); r.code != 200 {
		t.Errorf("fast body: %+v", r)
	}
}

// Defect 2: a webhook without a signature, or with one that cannot be an
// HMAC-SHA256, is refused before a byte of its body is read.
func TestWebhookSignatureCheckedBeforeBody(t *testing.T) {
	l := newLocal(t, Config{WebhookSecrets: []string{"s"}})
	for _, hdr := range []string{"", "X-Neostore-Signature: sha256=zz\r\n", "X-Neostore-Signature: abcd\r\n"} {
		c := rawPost(t, l.hs.Listener.Addr().String(), hookPath, 1<<20, 0, hdr)
		resp, body := readReply(t, c, 3*time.Second)
		if resp.StatusCode != 401 || body["error"] == nil {
			t.Errorf("%q: %s %v", hdr, resp.Status, body)
		}
	}
	if n := testutil.ToFloat64(l.m.authFailures.WithLabelValues("webhook")); n != 3 {
		t.Errorf("auth_failures_total{webhook} = %v", n)
	}
}

// Defect 2: nothing bounded how many bodies were read at once; a full
// budget now answers 503 with Retry-After, while small bodies still pass
// through their reserve.
func TestBodyBudgetFull(t *testing.T) {
	l := newLocal(t, Config{Limits: Limits{OpenBudget: 1 << 20, BodyWait: 200 * time.Millisecond}})
	addr := l.hs.Listener.Addr().String()
	rawPost(t, addr, hookPath, 1<<20, 1<<19, "") // holds the open budget
	for deadline := time.Now().Add(5 * time.Second); testutil.ToFloat64(l.m.bodyBytes.WithLabelValues("open")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first body never took the open budget")
		}
	}
	c := rawPost(t, addr, hookPath, 1<<20, 0, "")
	resp, body := readReply(t, c, 5*time.Second)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || body["error"] == nil {
		t.Fatalf("second large body: %s %v %v", resp.Status, resp.Header, body)
	}
	if n := testutil.ToFloat64(l.m.bodiesRefused.WithLabelValues("webhook", "busy")); n != 1 {
		t.Errorf("bodies_refused_total{webhook,busy} = %v", n)
	}
	if r := l.post(t, hookPath, "application/json", hook("small", `"c"`), nil); r.code != 200 {
		t.Errorf("small body while the open budget is full: %+v", r)
	}
	if got := testutil.ToFloat64(l.m.bodyBytes.WithLabelValues("open")); got != 1<<20+1 {
		t.Errorf("open budget holds %v bytes, want the held body's %d", got, 1<<20+1)
	}
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// Defect 3: a gzip body got 400 "unparseable". Now it is decoded, within
// the body limit counted after decoding; other encodings get 415.
func TestContentEncoding(t *testing.T) {
	l := newLocal(t, Config{WebhookSecrets: []string{"s"}})
	batch := []byte(ev("g1", "c1", "2026-03-01T10:00:00Z") + "\n" + ev("g2", "c2", "2026-03-01T10:00:00Z") + "\n")
	if r := l.post(t, "/v1/events", "application/x-ndjson", gz(batch), map[string]string{"Content-Encoding": "gzip"}); r.code != 200 || r.body["accepted"] != 2.0 {
		t.Errorf("gzip batch: %+v", r)
	}
	// The signature is over the payload, before compression.
	b := hook("g3", `"c3"`)
	if r := l.post(t, hookPath, "application/json", gz(b), map[string]string{"Content-Encoding": "GZIP", "X-Neostore-Signature": sign(b, "s")}); r.code != 200 {
		t.Errorf("gzip webhook: %+v", r)
	}
	form := url.Values{"customerId": {"c4"}, "isInstalled": {"true"}, "device": {"apple"}}
	if r := l.post(t, "/v1/connector/installation", "application/x-www-form-urlencoded", gz([]byte(form.Encode())), map[string]string{"Content-Encoding": "x-gzip"}); r.code != 200 {
		t.Errorf("gzip connector call: %+v", r)
	}
	// A bomb: 11 MiB of newlines in about 11 KiB.
	bomb := gz(bytes.Repeat([]byte("\n"), MaxBatchBytes+1<<20))
	if r := l.post(t, "/v1/events", "application/x-ndjson", bomb, map[string]string{"Content-Encoding": "gzip"}); r.code != 413 || !strings.Contains(fmt.Sprint(r.body["error"]), "decompressed") {
		t.Errorf("gzip bomb of %d bytes: %+v", len(bomb), r)
	}
	if r := l.post(t, "/v1/events", "application/x-ndjson", batch, map[string]string{"Content-Encoding": "br"}); r.code != 415 || r.hdr.Get("Accept-Encoding") != "gzip" || r.body["error"] == nil {
		t.Errorf("br: %+v", r)
	}
	if r := l.post(t, "/v1/events", "application/x-ndjson", batch, map[string]string{"Content-Encoding": "gzip"}); r.code != 400 || !strings.Contains(fmt.Sprint(r.body["error"]), "gzip") {
		t.Errorf("not gzip: %+v", r)
	}
	if r := l.post(t, "/v1/events", "application/x-ndjson", batch, map[string]string{"Content-Encoding": "identity"}); r.code != 200 {
		t.Errorf("identity: %+v", r)
	}
	if n := len(l.pub.events()); n != 6 {
		t.Errorf("%d events published, want 6", n)
	}
}

// Defect 3: /v1/events took a 2 MiB line that `walletsync fold` refuses;
// both now use DefaultMaxLine, with the same reason.
func TestEventsLineLimitIsFolds(t *testing.T) {
	l := newLocal(t, Config{})
	long := fmt.Sprintf(`{"eventId":"long","type":"installed","platform":"apple","customerId":"c","occurredAt":"2026-03-01T10:00:00Z","x":"%s"}`, strings.Repeat("y", 2<<20))
	body := long + "\n" + ev("ok", "c", "2026-03-01T10:00:00Z") + "\n"
	r := l.post(t, "/v1/events", "application/x-ndjson", []byte(body), nil)
	rej, _ := json.Marshal(r.body["rejected"])
	if r.code != 200 || r.body["accepted"] != 1.0 || string(rej) != `[{"error":"line too long: over 1048576 bytes","line":1}]` {
		t.Errorf("2 MiB line: %d %v", r.code, r.body)
	}
	lr := NewLineReader(strings.NewReader(body), 0) // fold's default
	if _, n, err := lr.Next(); n != 1 || !errors.Is(err, ErrLineTooLong) || err.Error() != "line too long: over 1048576 bytes" {
		t.Errorf("fold's reader: line %d: %v", n, err)
	}
	if r := l.post(t, "/v1/events", "application/json", []byte(long), nil); r.code != 422 {
		t.Errorf("one 2 MiB object: %+v", r)
	}
	// At the limit exactly, a line is taken.
	pad := DefaultMaxLine - len(ev("edge", "c", "2026-03-01T10:00:00Z")) - len(`,"x":""`)
	edge := strings.TrimSuffix(ev("edge", "c", "2026-03-01T10:00:00Z"), "}") + `,"x":"` + strings.Repeat("y", pad) + `"}`
	if len(edge) != DefaultMaxLine {
		t.Fatalf("edge line is %d bytes", len(edge))
	}
	if r := l.post(t, "/v1/events", "application/x-ndjson", []byte(edge+"\r\n"), nil); r.code != 200 || r.body["accepted"] != 1.0 {
		t.Errorf("line at the limit: %d %v", r.code, r.body["rejected"])
	}
}

// Defect 2, connection level: HardenServer bounds header bytes and open
// connections, closing idle keep-alive connections first.
func TestHardenServer(t *testing.T) {
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { httpjson.WriteJSON(w, 200, map[string]bool{"ok": true}) }))
	reg := prometheus.NewRegistry()
	ServerLimits{MaxHeaderBytes: 4 << 10, MaxConns: 3}.Apply(hs.Config, reg)
	hs.Start()
	defer hs.Close()
	addr := hs.Listener.Addr().String()

	get := func(c net.Conn, hdr string) (*http.Response, error) {
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n%s\r\n", hdr)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufioReader(c), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	if resp, err := get(dial(), "X-Big: "+strings.Repeat("a", 16<<10)+"\r\n"); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB header: %v %v", resp, err)
	}
	// Three connections busy sending headers: a fourth is closed.
	for range 3 {
		fmt.Fprintf(dial(), "GET / HTTP/1.1\r\n")
	}
	waitOpen := func(n float64) {
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if metricValue(reg, "walletsync_http_connections_open") == n {
				return
			}
		}
		t.Fatalf("open connections %v, want %v", metricValue(reg, "walletsync_http_connections_open"), n)
	}
	waitOpen(3)
	if _, err := get(dial(), ""); err == nil {
		t.Error("a fourth connection was served while three were busy")
	}
	if n := metricValue(reg, "walletsync_http_connections_refused_total"); n < 1 {
		t.Errorf("connections_refused_total = %v", n)
	}
	hs.CloseClientConnections()
	waitOpen(0)
	// Three idle keep-alive connections: a fourth closes one and is served.
	idle := []net.Conn{dial(), dial(), dial()}
	for _, c := range idle {
		if resp, err := get(c, ""); err != nil || resp.StatusCode != 200 {
			t.Fatalf("keep-alive request: %v %v", resp, err)
		}
	}
	// The server marks a connection idle just after its answer is sent,
	// so the fourth may come before the third is idle: it is tried again.
	var err error
	for try := 0; try < 50; try++ {
		var resp *http.Response
		if resp, err = get(dial(), ""); err == nil && resp.StatusCode == 200 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Errorf("a fourth connection while three were idle: %v", err)
	}
	waitOpen(3) // one idle connection closed for it
	if hs.Config.ReadHeaderTimeout != 0 || hs.Config.MaxHeaderBytes != 4<<10 {
		t.Errorf("limits applied: %+v", hs.Config)
	}
	d := &http.Server{ReadHeaderTimeout: time.Minute}
	HardenServer(d, nil)
	if d.ReadHeaderTimeout != 10*time.Second || d.MaxHeaderBytes != 32<<10 || d.IdleTimeout != 2*time.Minute || d.ConnState == nil {
		t.Errorf("HardenServer: %+v", d)
	}
}

// metricValue is the value of reg's counter or gauge name (-1: none).
func metricValue(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

func bufioReader(c net.Conn) *bufio.Reader { return bufio.NewReader(c) }
