package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/httpjson"
	"github.com/walletsync/walletsync/wire"
)

// Limits of SPEC §6 and issue 3.
const (
	MaxBatchBytes = 10 << 20
	MaxBatchLines = 10_000
	MaxHookBytes  = 1 << 20
	DefaultSkew   = 5 * time.Minute
	// DefaultCustomerKey is the identifier that names the customer
	// (SPEC §6), in webhooks, connector calls and the Pass API's passes.
	DefaultCustomerKey = "customerId"
)

// Publisher writes accepted events to Kafka; one error per event, nil when
// acknowledged.
type Publisher interface {
	Publish(ctx context.Context, evs []walletsync.Event) []error
}

// Config configures the HTTP ingest.
type Config struct {
	CustomerKey     string   // identifier that names the customer; default "customerId"
	WebhookSecrets  []string // signatureSecret(s) of the Wallet Crew webhook; several during rotation
	ConnectorAPIKey string   // X-API-KEY expected from the custom connector
	APIToken        string   // bearer token for /v1/events; empty: open
	MaxSkew         time.Duration
	Now             func() time.Time
	Logger          *slog.Logger
	Metrics         *Metrics
	Limits          Limits // zero fields: DefaultLimits
}

// Server serves the ingest endpoints.
type Server struct {
	cfg     Config
	pub     Publisher
	m       *Metrics
	log     *slog.Logger
	lim     Limits
	budgets *budgets
}

// NewServer returns the ingest HTTP handlers writing through pub.
func NewServer(cfg Config, pub Publisher) *Server {
	if cfg.CustomerKey == "" {
		cfg.CustomerKey = DefaultCustomerKey
	}
	if cfg.MaxSkew <= 0 {
		cfg.MaxSkew = DefaultSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(prometheus.NewRegistry())
	}
	if len(cfg.WebhookSecrets) == 0 {
		cfg.Logger.Warn("no --webhook-secret: Wallet Crew webhooks are accepted unsigned")
	}
	if cfg.ConnectorAPIKey == "" {
		cfg.Logger.Warn("no --connector-api-key: connector calls are accepted without a key")
	}
	lim := cfg.Limits.withDefaults()
	return &Server{cfg: cfg, pub: pub, m: cfg.Metrics, log: cfg.Logger, lim: lim, budgets: newBudgets(lim, cfg.Metrics)}
}

// Handle adds the ingest routes to mux.
func (s *Server) Handle(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/events", s.events)
	mux.HandleFunc("POST /v1/webhooks/wallet-crew", s.webhook)
	mux.HandleFunc("POST /v1/connector/installation", s.connector)
}

type lineError struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

func (s *Server) tooFarAhead(e *walletsync.Event) error {
	if limit := s.cfg.Now().Add(s.cfg.MaxSkew).UnixMilli(); e.OccurredAt > limit {
		return &walletsync.ValidationError{Field: "occurredAt", Reason: wire.FormatTime(e.OccurredAt) + " is more than " + s.cfg.MaxSkew.String() + " in the future"}
	}
	return nil
}

// publish writes evs and answers 503 with what was and was not written when
// Kafka did not acknowledge every record. Retrying the whole request is safe:
// the written events are dropped as duplicates by eventId.
func (s *Server) publish(w http.ResponseWriter, r *http.Request, evs []walletsync.Event, lines []int) bool {
	start := time.Now()
	errs := s.pub.Publish(r.Context(), evs)
	s.m.produceSeconds.Observe(time.Since(start).Seconds())
	var written, failed []int
	var first error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, lines[i])
			if first == nil {
				first = err
			}
		} else {
			written = append(written, lines[i])
		}
	}
	if first == nil {
		return true
	}
	s.m.produceFailures.Add(float64(len(failed)))
	s.log.Warn("publishing to Kafka failed", "err", first, "failed", len(failed), "written", len(written))
	w.Header().Set("Retry-After", "5")
	httpjson.WriteJSON(w, http.StatusServiceUnavailable, map[string]any{
		"error":   "Kafka did not acknowledge every event; retry the request (events already written are deduplicated): " + first.Error(),
		"written": nonNil(written), "unconfirmed": failed,
	})
	return false
}

func nonNil(x []int) []int {
	if x == nil {
		return []int{}
	}
	return x
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	const src = "api"
	if !httpjson.CheckBearer(w, r, s.cfg.APIToken) {
		s.m.authFailures.WithLabelValues(src).Inc()
		return
	}
	// The token is checked above, before a byte of the body is read.
	body, done, ok := s.readBody(w, r, src, MaxBatchBytes, s.cfg.APIToken != "")
	if !ok {
		return
	}
	defer done()
	var lines [][]byte
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		lines = [][]byte{bytes.TrimSpace(body)} // one object, possibly pretty-printed
	} else {
		lines = bytes.Split(body, []byte("\n"))
		if n := len(lines); n > 0 && len(bytes.TrimSpace(lines[n-1])) == 0 {
			lines = lines[:n-1]
		}
	}
	if len(lines) > MaxBatchLines {
		httpjson.WriteError(w, http.StatusRequestEntityTooLarge, "over "+strconv.Itoa(MaxBatchLines)+" lines")
		return
	}
	var (
		dec      wire.Decoder
		evs      = make([]walletsync.Event, 0, len(lines))
		evLines  = make([]int, 0, len(lines))
		rejected = []lineError{}
		// syntaxOnly: every rejected line failed as JSON, not as an event.
		syntaxOnly = true
	)
	for i, l := range lines {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		// The line limit of `walletsync fold`: ingest accepts no line
		// that fold would refuse.
		if len(bytes.TrimRight(l, "\r")) > DefaultMaxLine {
			rejected = append(rejected, lineError{i + 1, fmt.Sprintf("%v: over %d bytes", ErrLineTooLong, DefaultMaxLine)})
			s.m.rejected.WithLabelValues(src, "line").Inc()
			syntaxOnly = false
			continue
		}
		ev, err := dec.Parse(l)
		if err == nil {
			err = s.tooFarAhead(&ev)
		}
		if err != nil {
			rejected = append(rejected, lineError{i + 1, err.Error()})
			s.m.reject(src, err)
			var ve *walletsync.ValidationError
			if !errors.As(err, &ve) || ve.Field != "json" {
				syntaxOnly = false
			}
			continue
		}
		evs = append(evs, ev)
		evLines = append(evLines, i+1)
	}
	switch {
	case len(evs) == 0 && len(rejected) == 0:
		httpjson.WriteError(w, http.StatusBadRequest, "no events in the body")
		return
	case len(evs) == 0 && syntaxOnly:
		httpjson.WriteJSON(w, http.StatusBadRequest, map[string]any{"error": "unparseable: no line is a JSON object", "accepted": 0, "rejected": rejected})
		return
	case len(evs) == 0:
		httpjson.WriteJSON(w, http.StatusUnprocessableEntity, map[string]any{"error": "no valid event", "accepted": 0, "rejected": rejected})
		return
	}
	if !s.publish(w, r, evs, evLines) {
		return
	}
	s.m.accepted.WithLabelValues(src).Add(float64(len(evs)))
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"accepted": len(evs), "rejected": rejected})
}

// deliveryHeaders may carry the webhook delivery's own id.
var deliveryHeaders = []string{"X-Neostore-Delivery-Id", "X-Neostore-Delivery", "X-Neostore-Event-Id", "Webhook-Id"}

func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	const src = "webhook"
	signed := len(s.cfg.WebhookSecrets) > 0
	sig := r.Header.Get("X-Neostore-Signature")
	// A missing or malformed signature is refused before the body is read.
	if signed && (sig == "" || len(signatureCandidates(sig)) == 0) {
		s.m.authFailures.WithLabelValues(src).Inc()
		msg := "x-neostore-signature is not an HMAC-SHA256 in hex or base64"
		if sig == "" {
			msg = "missing x-neostore-signature"
		}
		httpjson.WriteError(w, http.StatusUnauthorized, msg)
		return
	}
	// The signature covers the body, so every webhook body is read
	// unauthenticated: within the open budgets.
	body, done, ok := s.readBody(w, r, src, MaxHookBytes, false)
	if !ok {
		return
	}
	defer done()
	if signed && !verifySignature(body, sig, s.cfg.WebhookSecrets) {
		s.m.authFailures.WithLabelValues(src).Inc()
		httpjson.WriteError(w, http.StatusUnauthorized, "x-neostore-signature does not match the body")
		return
	}
	var delivery string
	for _, h := range deliveryHeaders {
		if delivery = r.Header.Get(h); delivery != "" {
			break
		}
	}
	ev, err := webhookEvent(body, delivery, s.cfg.CustomerKey, s.cfg.Now())
	if errors.Is(err, errIgnored) {
		s.m.ignored.Inc()
		httpjson.WriteJSON(w, http.StatusOK, map[string]any{"accepted": 0, "ignored": err.Error()})
		return
	}
	s.single(w, r, src, ev, err)
}

func (s *Server) connector(w http.ResponseWriter, r *http.Request) {
	const src = "connector"
	if s.cfg.ConnectorAPIKey != "" && !httpjson.EqualSecret(r.Header.Get("X-API-KEY"), s.cfg.ConnectorAPIKey) {
		s.m.authFailures.WithLabelValues(src).Inc()
		httpjson.WriteError(w, http.StatusUnauthorized, "missing or wrong X-API-KEY")
		return
	}
	body, done, ok := s.readBody(w, r, src, MaxHookBytes, s.cfg.ConnectorAPIKey != "")
	if !ok {
		return
	}
	defer done()
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := r.ParseForm(); err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, "not a form: "+err.Error())
		return
	}
	ev, err := connectorEvent(r.PostForm, s.cfg.CustomerKey, s.cfg.Now())
	s.single(w, r, src, ev, err)
}

// single validates and publishes the one event of a webhook or connector call.
func (s *Server) single(w http.ResponseWriter, r *http.Request, src string, ev walletsync.Event, err error) {
	waiting := err == nil && ev.CustomerID == ""
	if waiting {
		err = ev.ValidateWaiting() // the resolver fills the customer in
	} else if err == nil {
		err = ev.Validate()
	}
	if err == nil {
		err = s.tooFarAhead(&ev)
	}
	if err != nil {
		s.m.reject(src, err)
		code := http.StatusUnprocessableEntity
		if errors.Is(err, errUnparseable) {
			code = http.StatusBadRequest
		}
		httpjson.WriteError(w, code, err.Error())
		return
	}
	if !s.publish(w, r, []walletsync.Event{ev}, []int{1}) {
		return
	}
	s.m.accepted.WithLabelValues(src).Inc()
	if waiting {
		// 202: accepted, and folded once the pass's customer is known.
		s.m.waiting.WithLabelValues(src).Inc()
		httpjson.WriteJSON(w, http.StatusAccepted, map[string]any{"accepted": 1, "eventId": ev.ID, "passId": ev.PassID, "waiting": true})
		return
	}
	httpjson.WriteJSON(w, http.StatusOK, map[string]any{"accepted": 1, "eventId": ev.ID, "customerId": ev.CustomerID})
}
