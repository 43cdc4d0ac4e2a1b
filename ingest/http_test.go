package ingest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/kafka"
	"github.com/walletsync/walletsync/wire"
)

type fixture struct {
	url     string
	emb     *kafka.Embedded
	brokers []string
	now     time.Time
}

// newFixture runs the ingest handlers against a real in-process Kafka.
func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	emb, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Brokers: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	f := &fixture{emb: emb, brokers: emb.Brokers(), now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	adm, err := kgo.NewClient(kafka.ClientOpts(f.brokers, "test")...)
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := kafka.EnsureTopics(context.Background(), kadm.NewClient(adm), kafka.DefaultTopics(), kafka.Layout{Partitions: 3, Replication: 1}); err != nil {
		t.Fatal(err)
	}
	prod, err := kgo.NewClient(append(kafka.ClientOpts(f.brokers, "ingest-test"), ProducerOpts(1500*time.Millisecond)...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prod.Close)
	cfg.Now = func() time.Time { return f.now }
	srv := NewServer(cfg, NewKafkaPublisher(prod, kafka.DefaultTopics().Events, 3*time.Second))
	mux := http.NewServeMux()
	srv.Handle(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

type reply struct {
	code int
	body map[string]any
	hdr  http.Header
}

func (f *fixture) post(t *testing.T, path, ctype string, body []byte, hdr map[string]string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.url+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", ctype)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, hdr: resp.Header}
	if err := json.Unmarshal(b, &r.body); err != nil {
		t.Fatalf("%s answered non-JSON %q", path, b)
	}
	return r
}

// waiting reads the events waiting on wallet.passes.
func (f *fixture) waiting(t *testing.T) []walletsync.Event {
	t.Helper()
	cl, err := kgo.NewClient(kafka.ClientOpts(f.brokers, "reader")...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var out []walletsync.Event
	for p := int32(0); p < 3; p++ {
		if _, err := kafka.ReadPartition(context.Background(), f.brokers, adm, kafka.PassesTopic, p, -1, func(r *kgo.Record) {
			pass, id, ok := wire.SplitPassKey(r.Key)
			e, err := wire.ParseWaiting(r.Value)
			if !ok || err != nil || e.PassID != pass || e.ID != id || kafka.PassPartition(r.Key, 3) != p {
				t.Errorf("waiting record %q: %v (partition %d)", r.Key, err, p)
			}
			out = append(out, e)
		}); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// records reads every record of wallet.events.
func (f *fixture) records(t *testing.T) []walletsync.Event {
	t.Helper()
	cl, err := kgo.NewClient(append(kafka.ClientOpts(f.brokers, "reader"), kgo.ConsumeTopics(kafka.DefaultTopics().Events),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(context.Background(), kafka.DefaultTopics().Events)
	if err != nil {
		t.Fatal(err)
	}
	want := int64(0)
	ends.Each(func(o kadm.ListedOffset) { want += o.Offset })
	var out []walletsync.Event
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for int64(len(out)) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(out), want)
		}
		fs.EachRecord(func(r *kgo.Record) {
			e, err := wire.ParseEvent(r.Value)
			if err != nil || string(r.Key) != e.CustomerID {
				t.Fatalf("bad record on wallet.events: key %q value %s: %v", r.Key, r.Value, err)
			}
			out = append(out, e)
		})
	}
	return out
}

func ev(id, customer, at string) string {
	return fmt.Sprintf(`{"eventId":%q,"type":"installed","platform":"apple","customerId":%q,"occurredAt":%q}`, id, customer, at)
}

func TestEventsEndpoint(t *testing.T) {
	f := newFixture(t, Config{APIToken: "tok"})
	auth := map[string]string{"Authorization": "Bearer tok"}
	ndjson := "application/x-ndjson"
	good := ev("a", "c1", "2026-03-01T10:00:00Z") + "\n" + ev("b", "c2", "2026-03-01T10:00:01Z") + "\n"

	if r := f.post(t, "/v1/events", ndjson, []byte(good), nil); r.code != 401 || r.body["error"] == nil {
		t.Errorf("no token: %+v", r)
	}
	if r := f.post(t, "/v1/events", ndjson, []byte(good), map[string]string{"Authorization": "Bearer nope"}); r.code != 401 {
		t.Errorf("wrong token: %+v", r)
	}
	if r := f.post(t, "/v1/events", ndjson, []byte(good), auth); r.code != 200 || r.body["accepted"] != 2.0 {
		t.Errorf("good batch: %+v", r)
	}
	mixed := ev("c", "c3", "2026-03-01T10:00:00Z") + "\n\nnot json\n" + ev("d", "c4", "2026-03-01T12:06:00Z") + "\n"
	r := f.post(t, "/v1/events", ndjson, []byte(mixed), auth)
	rej, _ := json.Marshal(r.body["rejected"])
	if r.code != 200 || r.body["accepted"] != 1.0 ||
		string(rej) != `[{"error":"invalid JSON: expected an object at offset 0","line":3},{"error":"occurredAt: 2026-03-01T12:06:00.000Z is more than 5m0s in the future","line":4}]` {
		t.Errorf("mixed batch: %d %v %s", r.code, r.body, rej)
	}
	if r := f.post(t, "/v1/events", ndjson, []byte("nope\n{\"a\":\n"), auth); r.code != 400 || !strings.HasPrefix(r.body["error"].(string), "unparseable") {
		t.Errorf("nothing parseable: %+v", r)
	}
	if r := f.post(t, "/v1/events", ndjson, []byte("nope\n{}\n"), auth); r.code != 422 || r.body["error"] != "no valid event" {
		t.Errorf("all invalid: %+v", r)
	}
	if r := f.post(t, "/v1/events", ndjson, []byte("\n\n"), auth); r.code != 400 {
		t.Errorf("empty: %+v", r)
	}
	pretty := "{\n  \"eventId\": \"e\",\n  \"type\": \"uninstalled\", \"platform\": \"google\",\n  \"customerId\": \"c5\", \"occurredAt\": \"2026-03-01T11:00:00Z\"\n}"
	if r := f.post(t, "/v1/events", "application/json", []byte(pretty), auth); r.code != 200 || r.body["accepted"] != 1.0 {
		t.Errorf("one pretty JSON object: %+v", r)
	}
	many := strings.Repeat(ev("x", "c", "2026-03-01T10:00:00Z")+"\n", MaxBatchLines+1)
	if r := f.post(t, "/v1/events", ndjson, []byte(many), auth); r.code != 413 {
		t.Errorf("too many lines: %d", r.code)
	}
	huge := bytes.Repeat([]byte("x"), MaxBatchBytes+1)
	if r := f.post(t, "/v1/events", ndjson, huge, auth); r.code != 413 {
		t.Errorf("too large: %d", r.code)
	}
	got := f.records(t)
	if len(got) != 4 {
		t.Fatalf("wallet.events holds %d records, want 4 (a, b, c, e): %+v", len(got), got)
	}
}

func sign(body []byte, secret string) string { return SignBody(body, secret) }

func TestWebhookEndpoint(t *testing.T) {
	f := newFixture(t, Config{WebhookSecrets: []string{"old-secret", "new-secret"}, CustomerKey: "email"})
	body := []byte(`{"id":"dlv-1","type":"Pass:Installed","date":"2026-03-01T11:59:00Z","data":{"passId":"p1","passType":"loyalty",
		"identifiers":{"email":"  Anna@Example.COM "},"device":"apple",
		"additionalInformation":{"registrationInformation":{"activeRegistrationCount":1,"totalRegistrationCount":3},
		"registrationSource":{"medium":"email","origin":"https://x","tags":["spring"]}}}}`)
	path := "/v1/webhooks/wallet-crew"
	js := "application/json"

	if r := f.post(t, path, js, body, nil); r.code != 401 || r.body["error"] != "missing x-neostore-signature" {
		t.Errorf("unsigned: %+v", r)
	}
	if r := f.post(t, path, js, body, map[string]string{"X-Neostore-Signature": sign(body, "wrong")}); r.code != 401 {
		t.Errorf("wrong secret: %+v", r)
	}
	if r := f.post(t, path, js, append(body, ' '), map[string]string{"X-Neostore-Signature": sign(body, "new-secret")}); r.code != 401 {
		t.Errorf("body changed after signing: %+v", r)
	}
	// The old secret still works during a rotation, in base64 too.
	mac, _ := hex.DecodeString(sign(body, "old-secret"))
	r := f.post(t, path, js, body, map[string]string{"X-Neostore-Signature": "sha256=" + base64.StdEncoding.EncodeToString(mac)})
	if r.code != 200 || r.body["eventId"] != "dlv-1" || r.body["customerId"] != "anna@example.com" {
		t.Errorf("signed with the old secret, base64: %+v", r)
	}
	signed := func(b []byte, hdr ...string) reply {
		h := map[string]string{"X-Neostore-Signature": sign(b, "new-secret")}
		for i := 0; i+1 < len(hdr); i += 2 {
			h[hdr[i]] = hdr[i+1]
		}
		return f.post(t, path, js, b, h)
	}
	if r := signed([]byte(`{"type":"Pass:Updated","data":{}}`)); r.code != 200 || r.body["accepted"] != 0.0 {
		t.Errorf("other event type: %+v", r)
	}
	// Pass:Created is an issued event: no device needed, one given is
	// ignored when not understood, no registration kept.
	created := []byte(`{"id":"dlv-c","type":"Pass:Created","date":"2026-03-01T08:00:00Z","data":{"passId":"p9","passType":"coupon",
		"identifiers":{"email":"Zoe@Example.com"},"device":"web","additionalInformation":{"registrationInformation":{"activeRegistrationCount":0}}}}`)
	if r := signed(created); r.code != 200 || r.body["eventId"] != "dlv-c" || r.body["customerId"] != "zoe@example.com" {
		t.Errorf("Pass:Created: %+v", r)
	}
	if r := signed([]byte(`{"type":"Pass:Created","data":{}}`)); r.code != 422 {
		t.Errorf("Pass:Created naming no customer: %+v", r)
	}
	// No customer key but a pass: kept on wallet.passes until the pass's
	// customer is known (SPEC §6), answered 202.
	if r := signed([]byte(`{"id":"dlv-w","type":"Pass:Uninstalled","date":"2026-03-01T09:00:00Z","data":{"passId":"p","device":"google","identifiers":{"customerId":"c"}}}`)); r.code != 202 ||
		r.body["waiting"] != true || r.body["passId"] != "p" || r.body["eventId"] != "dlv-w" {
		t.Errorf("no customer key, a pass: %+v", r)
	}
	if w := f.waiting(t); len(w) != 1 || w[0].ID != "dlv-w" || w[0].PassID != "p" || w[0].CustomerID != "" || w[0].Type != walletsync.TypeUninstalled {
		t.Errorf("waiting records %+v", w)
	}
	// Neither: nothing could ever resolve it.
	if r := signed([]byte(`{"type":"Pass:Uninstalled","data":{"device":"google","identifiers":{"customerId":"c"}}}`)); r.code != 422 ||
		r.body["error"] != `identifiers: no "email", so the event names no customer` {
		t.Errorf("no customer key, no pass: %+v", r)
	}
	// A key of the wrong kind is refused even with a pass.
	if r := signed([]byte(`{"type":"Pass:Uninstalled","data":{"passId":"p","device":"google","identifiers":{"email":true}}}`)); r.code != 422 {
		t.Errorf("boolean customer key: %+v", r)
	}
	if r := signed([]byte(`{"type":"Pass:Uninstalled","data":{"device":"samsung","identifiers":{"email":"a@b"}}}`)); r.code != 422 {
		t.Errorf("bad device: %+v", r)
	}
	if r := signed([]byte(`{"type":"Pass:Uninstalled","date":"2026-03-01T12:10:00Z","data":{"device":"google","identifiers":{"email":"a@b"}}}`)); r.code != 422 ||
		!strings.Contains(r.body["error"].(string), "in the future") {
		t.Errorf("future date: %+v", r)
	}
	if r := signed([]byte(`not json`)); r.code != 400 || !strings.Contains(r.body["error"].(string), "not a JSON object") {
		t.Errorf("not JSON: %+v", r)
	}
	if r := signed(bytes.Repeat([]byte(" "), MaxHookBytes+1)); r.code != 413 {
		t.Errorf("too large: %+v", r)
	}
	// Without a delivery id the body hash is the id, so a redelivery is the
	// same event; the header id wins over the body.
	noID := []byte(`{"type":"Pass:Uninstalled","date":"2026-03-01T11:00:00Z","data":{"device":"google","identifiers":{"email":"b@c"}}}`)
	r1, r2 := signed(noID), signed(noID)
	if r1.code != 200 || r1.body["eventId"] != r2.body["eventId"] || !strings.HasPrefix(r1.body["eventId"].(string), "twc-") {
		t.Errorf("hash id: %+v %+v", r1, r2)
	}
	if r := signed(noID, "X-Neostore-Delivery-Id", "hdr-7"); r.body["eventId"] != "hdr-7" {
		t.Errorf("header id: %+v", r)
	}

	got := f.records(t)
	if len(got) != 5 {
		t.Fatalf("%d records, want 5", len(got))
	}
	issued := walletsync.Event{ID: "dlv-c", Type: walletsync.TypeIssued, CustomerID: "zoe@example.com", PassID: "p9", PassType: "coupon",
		OccurredAt: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC).UnixMilli(), Source: "webhook"}
	if a, b := wire.AppendEvent(nil, &got[1]), wire.AppendEvent(nil, &issued); string(a) != string(b) {
		t.Errorf("Pass:Created mapped to\n%s\nwant\n%s", a, b)
	}
	first := got[0]
	want := walletsync.Event{ID: "dlv-1", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "anna@example.com",
		PassID: "p1", PassType: "loyalty", OccurredAt: time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC).UnixMilli(), Source: "webhook",
		Registration: &walletsync.Registration{Medium: "email", Origin: "https://x", Tags: []string{"spring"}, ActiveCount: 1, TotalCount: 3, HasActiveCount: true, HasTotalCount: true}}
	a, _ := json.Marshal(first)
	b, _ := json.Marshal(want)
	if string(a) != string(b) {
		t.Errorf("webhook mapped to\n%s\nwant\n%s", a, b)
	}
}

func TestConnectorEndpoint(t *testing.T) {
	f := newFixture(t, Config{ConnectorAPIKey: "k3y", CustomerKey: "y2.customerId"})
	path := "/v1/connector/installation"
	form := "application/x-www-form-urlencoded"
	good := url.Values{"y2.customerId": {"c-9"}, "isInstalled": {"false"}, "device": {"google"}, "passId": {"p"}, "passType": {"coupon"}}
	if r := f.post(t, path, form, []byte(good.Encode()), nil); r.code != 401 {
		t.Errorf("no key: %+v", r)
	}
	if r := f.post(t, path, form, []byte(good.Encode()), map[string]string{"X-API-KEY": "k3"}); r.code != 401 {
		t.Errorf("wrong key: %+v", r)
	}
	key := map[string]string{"X-API-KEY": "k3y"}
	r := f.post(t, path, form, []byte(good.Encode()), key)
	if r.code != 200 || r.body["customerId"] != "c-9" || !strings.HasPrefix(r.body["eventId"].(string), "connector-") {
		t.Errorf("good call: %+v", r)
	}
	for name, v := range map[string]url.Values{
		"no isInstalled": {"y2.customerId": {"c"}, "device": {"apple"}},
		"bad device":     {"y2.customerId": {"c"}, "device": {"nokia"}, "isInstalled": {"true"}},
		"no customer":    {"customerId": {"c"}, "device": {"apple"}, "isInstalled": {"true"}},
		"NUL in passId":  {"customerId": {"c"}, "device": {"apple"}, "isInstalled": {"true"}, "passId": {"a\x00b"}},
	} {
		if r := f.post(t, path, form, []byte(v.Encode()), key); r.code != 422 || r.body["error"] == nil {
			t.Errorf("%s: %+v", name, r)
		}
	}
	wait := url.Values{"customerId": {"c"}, "device": {"apple"}, "isInstalled": {"true"}, "passId": {"p7"}}
	if r := f.post(t, path, form, []byte(wait.Encode()), key); r.code != 202 || r.body["waiting"] != true || r.body["passId"] != "p7" {
		t.Errorf("no customer key, a pass: %+v", r)
	}
	if w := f.waiting(t); len(w) != 1 || w[0].PassID != "p7" || w[0].Source != "connector" || !strings.HasPrefix(w[0].ID, "connector-") {
		t.Errorf("waiting %+v", w)
	}
	got := f.records(t)
	if len(got) != 1 || got[0].Type != walletsync.TypeUninstalled || got[0].OccurredAt != f.now.UnixMilli() || got[0].Source != "connector" {
		t.Fatalf("records %+v", got)
	}
}

// Broker down: 503 with Retry-After and the lines Kafka did not confirm;
// once it is back the client's retry lands. Ingest is at-least-once: the
// unconfirmed first attempt may still be written when the broker recovers,
// which is why eventIds are kept; the pipeline test shows the retried events
// reach the clean topic once.
func TestBrokerDown(t *testing.T) {
	f := newFixture(t, Config{})
	body := []byte(ev("r1", "c1", "2026-03-01T10:00:00Z") + "\n" + ev("r2", "c2", "2026-03-01T10:00:00Z") + "\n")
	f.emb.SetProduceUnavailable(true)
	r := f.post(t, "/v1/events", "application/x-ndjson", body, nil)
	if r.code != 503 || r.hdr.Get("Retry-After") == "" || fmt.Sprint(r.body["unconfirmed"]) != "[1 2]" {
		t.Fatalf("broker down: %d %v %v", r.code, r.hdr, r.body)
	}
	f.emb.SetProduceUnavailable(false)
	r = f.post(t, "/v1/events", "application/x-ndjson", body, nil)
	if r.code != 200 || r.body["accepted"] != 2.0 {
		t.Fatalf("retry: %+v", r)
	}
	copies := map[string]int{}
	for _, e := range f.records(t) {
		copies[e.ID]++
	}
	if len(copies) != 2 || copies["r1"] < 1 || copies["r1"] > 2 || copies["r2"] < 1 || copies["r2"] > 2 {
		t.Fatalf("after the retry wallet.events holds %v, want r1 and r2, each once or twice", copies)
	}
}
