package crmtest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// ActitoServer implements Actito's API-key authentication (GET /auth/token
// with the key in Authorization; a bearer token valid for TokenTTL) and the
// v4 custom-table record upsert
// (POST /v4/entity/{entity}/customTable/{table}/record, {"properties":
// [{"name","value"}]}), for one entity and one table whose columns are
// fixed: an unknown column is refused, as Actito refuses attributes a table
// does not have.
type ActitoServer struct {
	*Store
	URL                string
	srv                *httptest.Server
	key, entity, table string
	keyColumn          string
	TokenTTL           time.Duration

	mu     sync.Mutex
	tokens map[string]time.Time
	issued int
}

// ActitoColumns are the table's columns besides the key column.
var ActitoColumns = []string{"walletStatus", "appleWalletInstalledAt", "googleWalletInstalledAt", "walletLastChangedAt", "walletLastEvent",
	"firstInstalledAt", "passIssuedAt", "version"}

// NewActitoServer starts a server for one API key, entity and table.
func NewActitoServer(key, entity, table, keyColumn string, f Faults) *ActitoServer {
	s := &ActitoServer{Store: newStore(f), key: key, entity: entity, table: table, keyColumn: keyColumn, TokenTTL: 15 * time.Minute, tokens: map[string]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth/token", s.token)
	mux.HandleFunc("POST /v4/entity/{entity}/customTable/{table}/record", s.record)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *ActitoServer) Close() { s.srv.Close() }

// RevokeTokens invalidates every token handed out.
func (s *ActitoServer) RevokeTokens() {
	s.mu.Lock()
	clear(s.tokens)
	s.mu.Unlock()
}

// TokensIssued counts tokens handed out.
func (s *ActitoServer) TokensIssued() int { s.mu.Lock(); defer s.mu.Unlock(); return s.issued }

func (s *ActitoServer) token(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != s.key {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"status": 401, "message": "Unauthorized"})
		return
	}
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := hex.EncodeToString(b)
	s.mu.Lock()
	s.tokens[tok] = time.Now().Add(s.TokenTTL)
	s.issued++
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]string{"accessToken": tok, "tokenType": "bearer",
		"expiresIn": fmt.Sprintf("%ds", int(s.TokenTTL.Seconds())), "scope": "read write"})
}

func (s *ActitoServer) record(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	exp, ok := s.tokens[tok]
	s.mu.Unlock()
	if !ok || time.Now().After(exp) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"status": 401, "message": "Invalid or expired token"})
		return
	}
	if r.PathValue("entity") != s.entity || r.PathValue("table") != s.table {
		writeJSON(w, http.StatusNotFound, map[string]any{"status": 404, "message": "Custom table not found"})
		return
	}
	s.latency(r)
	errBody := map[string]any{"status": 503, "message": "Service temporarily unavailable"}
	kind := s.fault()
	if !s.before(w, kind, errBody) {
		return
	}
	var in struct {
		Properties []struct {
			Name  string `json:"name"`
			Value any    `json:"value"`
		} `json:"properties"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "message": "Malformed JSON"})
		return
	}
	known := map[string]bool{s.keyColumn: true}
	for _, c := range ActitoColumns {
		known[c] = true
	}
	vals := map[string]string{}
	var version uint64
	for _, p := range in.Properties {
		if !known[p.Name] {
			writeJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "message": "Unknown attribute " + p.Name})
			return
		}
		switch v := p.Value.(type) {
		case string:
			vals[p.Name] = v
		case float64:
			version = uint64(v)
		}
	}
	id := vals[s.keyColumn]
	if id == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"status": 400, "message": "Missing primary key " + s.keyColumn})
		return
	}
	s.apply(id, Record{WalletStatus: vals["walletStatus"], AppleAt: vals["appleWalletInstalledAt"], GoogleAt: vals["googleWalletInstalledAt"],
		LastChangedAt: vals["walletLastChangedAt"], LastEvent: vals["walletLastEvent"],
		FirstInstalledAt: vals["firstInstalledAt"], PassIssuedAt: vals["passIssuedAt"], Version: version})
	if !s.after(w, r, kind, errBody) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"businessKey": id})
}
