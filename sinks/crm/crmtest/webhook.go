package crmtest

import (
	"bytes"
	"crypto/hmac"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/walletsync/walletsync/sinks/crm"
)

// WebhookServer receives Standard Webhooks deliveries: it checks
// webhook-id, webhook-timestamp (within 5 minutes) and webhook-signature,
// answers a repeated webhook-id with 200 without applying it again, and
// takes one status object or an array of them, each with every status
// field of SPEC §4 (null where empty).
type WebhookServer struct {
	*Store
	URL string
	srv *httptest.Server
	key []byte

	mu       sync.Mutex
	seen     map[string]bool
	dupes    int
	badSigs  int
	Refuse   func(customerID string) bool // answer 422 for these
	payloads int
}

// NewWebhookServer starts a receiver for secret.
func NewWebhookServer(secret string, f Faults) *WebhookServer {
	key, err := crm.WebhookKey(secret)
	if err != nil {
		panic(err)
	}
	s := &WebhookServer{Store: newStore(f), key: key, seen: map[string]bool{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.handle))
	s.URL = s.srv.URL + "/hooks/wallet"
	return s
}

// Close stops the server.
func (s *WebhookServer) Close() { s.srv.Close() }

// Duplicates counts deliveries of a message id already applied.
func (s *WebhookServer) Duplicates() int { s.mu.Lock(); defer s.mu.Unlock(); return s.dupes }

// BadSignatures counts refused signatures.
func (s *WebhookServer) BadSignatures() int { s.mu.Lock(); defer s.mu.Unlock(); return s.badSigs }

type statusJSON struct {
	CustomerID       string   `json:"customerId"`
	WalletStatus     string   `json:"walletStatus"`
	AppleAt          nullable `json:"appleWalletInstalledAt"`
	GoogleAt         nullable `json:"googleWalletInstalledAt"`
	LastChangedAt    nullable `json:"walletLastChangedAt"`
	LastEvent        nullable `json:"walletLastEvent"`
	FirstInstalledAt nullable `json:"firstInstalledAt"`
	PassIssuedAt     nullable `json:"passIssuedAt"`
	Version          *uint64  `json:"version"`
}

// nullable is a string field that may be null and must be sent: SPEC §4
// writes every status field, null where empty, so a record without one
// comes from a sender that does not know the field.
type nullable struct {
	v    string
	sent bool
}

func (n *nullable) UnmarshalJSON(b []byte) error {
	n.sent = true
	if string(b) == "null" {
		return nil
	}
	return json.Unmarshal(b, &n.v)
}

// missing names the first status field the record lacks, "" if none.
func (st *statusJSON) missing() string {
	for _, f := range []struct {
		name string
		n    nullable
	}{{"appleWalletInstalledAt", st.AppleAt}, {"googleWalletInstalledAt", st.GoogleAt}, {"walletLastChangedAt", st.LastChangedAt},
		{"walletLastEvent", st.LastEvent}, {"firstInstalledAt", st.FirstInstalledAt}, {"passIssuedAt", st.PassIssuedAt}} {
		if !f.n.sent {
			return f.name
		}
	}
	return ""
}

func (s *WebhookServer) handle(w http.ResponseWriter, r *http.Request) {
	errBody := map[string]string{"error": "try again later"}
	if r.Method != http.MethodPost || r.URL.Path != "/hooks/wallet" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		return
	}
	id, tsStr, sigs := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature")
	ts, err := strconv.ParseInt(tsStr, 10, 64)
	if id == "" || err != nil || sigs == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing webhook headers"})
		return
	}
	if d := time.Since(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "timestamp outside the tolerance"})
		return
	}
	want := crm.SignWebhook(s.key, id, ts, body)
	ok := false
	for _, sig := range strings.Fields(sigs) { // several signatures may be sent, space-separated
		if hmac.Equal([]byte(sig), []byte(want)) {
			ok = true
		}
	}
	if !ok {
		s.mu.Lock()
		s.badSigs++
		s.mu.Unlock()
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "bad signature"})
		return
	}
	s.latency(r)
	kind := s.fault()
	if !s.before(w, kind, errBody) {
		return
	}
	s.mu.Lock()
	dup := s.seen[id]
	if dup {
		s.dupes++
	}
	s.mu.Unlock()
	if dup {
		writeJSON(w, http.StatusOK, map[string]bool{"duplicate": true})
		return
	}
	var list []statusJSON
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '[' {
		err = json.Unmarshal(body, &list)
	} else {
		var one statusJSON
		err = json.Unmarshal(body, &one)
		list = []statusJSON{one}
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body is not a status record or an array of them"})
		return
	}
	for _, st := range list {
		if st.CustomerID == "" || st.Version == nil || st.WalletStatus == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "a status record lacks customerId, walletStatus or version"})
			return
		}
		if f := st.missing(); f != "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "a status record lacks " + f})
			return
		}
		if s.Refuse != nil && s.Refuse(st.CustomerID) {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": "customer " + st.CustomerID + " is unknown here"})
			return
		}
	}
	for _, st := range list {
		s.apply(st.CustomerID, Record{WalletStatus: st.WalletStatus, AppleAt: st.AppleAt.v, GoogleAt: st.GoogleAt.v,
			LastChangedAt: st.LastChangedAt.v, LastEvent: st.LastEvent.v, FirstInstalledAt: st.FirstInstalledAt.v,
			PassIssuedAt: st.PassIssuedAt.v, Version: *st.Version})
	}
	s.mu.Lock()
	s.seen[id] = true
	s.payloads++
	s.mu.Unlock()
	if !s.after(w, r, kind, errBody) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
