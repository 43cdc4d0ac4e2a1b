// Package crmtest runs local servers that implement the CRM APIs the CRM
// sinks write to — a Standard Webhooks receiver, HubSpot's contacts and
// properties endpoints, Actito's token and custom-table record endpoints —
// with their documented authentication, limits and error bodies, and with
// injected faults (429 with Retry-After, 5xx, resets, slow answers), so
// tests and benchmarks exercise the real clients over real HTTP.
package crmtest

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Record is what a CRM holds for one customer, in the CRM's own strings.
type Record struct {
	WalletStatus, AppleAt, GoogleAt, LastChangedAt, LastEvent string
	FirstInstalledAt, PassIssuedAt                            string
	Version                                                   uint64
}

// Faults makes a share of requests fail, after authentication.
type Faults struct {
	// FailRate: the share of requests that fail, spread over five kinds:
	// 429 with Retry-After: 1; 503; 500 after the write was applied; the
	// connection reset without an answer; and an answer slower than
	// SlowDelay (the write applied).
	FailRate  float64
	SlowDelay time.Duration // default 2 s
	// Latency is added to every request.
	Latency time.Duration
	Seed    uint64
}

// Store is the state a server keeps and what tests read of it.
type Store struct {
	mu          sync.Mutex
	records     map[string]Record
	writes      int
	distinct    map[string]bool
	regressions int
	requests    int
	faulted     map[string]int
	rng         *rand.Rand
	faults      Faults
}

func newStore(f Faults) *Store {
	if f.SlowDelay <= 0 {
		f.SlowDelay = 2 * time.Second
	}
	return &Store{records: map[string]Record{}, distinct: map[string]bool{}, faulted: map[string]int{}, rng: rand.New(rand.NewPCG(f.Seed, f.Seed+1)), faults: f}
}

// apply records one write; a version older than the one held is counted as
// a regression (and applied, as a CRM would).
func (s *Store) apply(id string, r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	s.distinct[id+":"+strconv.FormatUint(r.Version, 10)] = true
	if old, ok := s.records[id]; ok && r.Version < old.Version {
		s.regressions++
	}
	s.records[id] = r
}

// Records returns a copy of what the CRM holds.
func (s *Store) Records() map[string]Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Record, len(s.records))
	for k, v := range s.records {
		out[k] = v
	}
	return out
}

// Customers counts the customers written at least once, without the copy
// Records makes: cheap enough to poll while deliveries go on.
func (s *Store) Customers() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.records) }

// Writes counts applied record writes (a batch of n counts n).
func (s *Store) Writes() int { s.mu.Lock(); defer s.mu.Unlock(); return s.writes }

// DistinctWrites counts the different (customer, version) pairs written:
// writes without those a retry applied again.
func (s *Store) DistinctWrites() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.distinct) }

// Regressions counts writes of a version older than the one held.
func (s *Store) Regressions() int { s.mu.Lock(); defer s.mu.Unlock(); return s.regressions }

// Requests counts requests that passed authentication.
func (s *Store) Requests() int { s.mu.Lock(); defer s.mu.Unlock(); return s.requests }

// Faulted counts injected faults by kind.
func (s *Store) Faulted() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.faulted {
		out[k] = v
	}
	return out
}

// fault decides the request's fate: "" to serve it normally. For "500" and
// "slow" the caller applies the write and then calls finish.
func (s *Store) fault() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	if s.faults.FailRate <= 0 || s.rng.Float64() >= s.faults.FailRate {
		return ""
	}
	kind := [...]string{"429", "503", "500", "reset", "slow"}[s.rng.IntN(5)]
	s.faulted[kind]++
	return kind
}

// before handles the faults that answer without serving; it reports
// whether the handler should go on.
func (s *Store) before(w http.ResponseWriter, kind string, errBody any) bool {
	switch kind {
	case "429":
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusTooManyRequests, errBody)
		return false
	case "503":
		writeJSON(w, http.StatusServiceUnavailable, errBody)
		return false
	case "reset":
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return false
			}
		}
		writeJSON(w, http.StatusBadGateway, errBody)
		return false
	}
	return true
}

// after answers for the faults that apply the write first.
func (s *Store) after(w http.ResponseWriter, r *http.Request, kind string, errBody any) bool {
	switch kind {
	case "500":
		writeJSON(w, http.StatusInternalServerError, errBody)
		return false
	case "slow":
		select {
		case <-time.After(s.faults.SlowDelay):
		case <-r.Context().Done():
		}
	}
	return true
}

func (s *Store) latency(r *http.Request) {
	if s.faults.Latency > 0 {
		select {
		case <-time.After(s.faults.Latency):
		case <-r.Context().Done():
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
