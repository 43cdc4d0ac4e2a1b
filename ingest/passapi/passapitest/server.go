// Package passapitest runs a local Pass API — the passes listing of The
// Wallet Crew (GET /api/{tenant}/passes, X-API-KEY, zero-based pageIndex
// and pageSize, sorted by id, total in x-pagination-total) — seeded with
// passes, for tests, benchmarks and the demo.
//
// It is a test server that production code paths reach only behind the
// demo. Outside tests two files import it: cmd/walletsync/simulate.go,
// which starts it for "walletsync run --demo" alone, and internal/simulate,
// which keeps it at the truth when the demo hands it one.
// TestTestServersStayBehindTheDemo (cmd/walletsync) fails when any other
// non-test file imports it, or crmtest, chtest or another test server,
// directly or through a package that does.
package passapitest

import (
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Pass is a seeded pass: per platform, the installation time when
// installed.
type Pass struct {
	ID          string
	PassType    string
	Identifiers map[string]string
	Apple       *time.Time
	Google      *time.Time
	// Created is the pass's creationDate; nil leaves it out of the listing
	// (so the backfill writes no issued event for the pass).
	Created *time.Time
}

// Server is the local Pass API.
type Server struct {
	URL    string
	srv    *httptest.Server
	tenant string
	key    string

	mu     sync.Mutex
	passes []Pass
	pages  []int
	// FailFromPage: pages at or after this index answer 500 (-1: never),
	// as an API going down in the middle of a backfill.
	FailFromPage int
	// ThrottleRate: the share of requests answered 429 with Retry-After: 1.
	ThrottleRate float64
	rng          *rand.Rand
}

// New starts a server for one tenant and API key.
func New(tenant, key string) *Server {
	s := &Server{tenant: tenant, key: key, FailFromPage: -1, rng: rand.New(rand.NewPCG(1, 2))}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/{tenant}/passes", s.list)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// SetPasses replaces the passes, kept sorted by id.
func (s *Server) SetPasses(ps []Pass) {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b Pass) int { return strings.Compare(a.ID, b.ID) })
	s.mu.Lock()
	s.passes = ps
	s.mu.Unlock()
}

// Pages lists the page indexes requested so far, in order.
func (s *Server) Pages() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.pages)
}

// SetFailFromPage makes pages from index on fail (-1: none).
func (s *Server) SetFailFromPage(i int) {
	s.mu.Lock()
	s.FailFromPage = i
	s.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-API-KEY") != s.key {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid API key"})
		return
	}
	if r.PathValue("tenant") != s.tenant {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown tenant"})
		return
	}
	q := r.URL.Query()
	index, err1 := strconv.Atoi(q.Get("pageIndex"))
	size, err2 := strconv.Atoi(q.Get("pageSize"))
	if q.Get("pageIndex") == "" {
		index, err1 = 0, nil
	}
	if q.Get("pageSize") == "" {
		size, err2 = 20, nil
	}
	if err1 != nil || err2 != nil || index < 0 || size < 1 || size > 1000 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "pageIndex must be ≥ 0 and pageSize between 1 and 1000"})
		return
	}
	s.mu.Lock()
	s.pages = append(s.pages, index)
	fail := s.FailFromPage >= 0 && index >= s.FailFromPage
	throttle := s.ThrottleRate > 0 && s.rng.Float64() < s.ThrottleRate
	var page []Pass
	if from := index * size; from < len(s.passes) {
		page = s.passes[from:min(from+size, len(s.passes))]
	}
	total := len(s.passes)
	s.mu.Unlock()
	if throttle {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "too many requests"})
		return
	}
	if fail {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "internal error"})
		return
	}
	out := make([]map[string]any, 0, len(page))
	for _, p := range page {
		providers := map[string]any{"apple": nil, "google": nil}
		if p.Apple != nil {
			providers["apple"] = p.Apple.UTC().Format(time.RFC3339Nano)
		}
		if p.Google != nil {
			providers["google"] = p.Google.UTC().Format(time.RFC3339Nano)
		}
		ids := map[string]any{}
		for k, v := range p.Identifiers {
			ids[k] = v
		}
		item := map[string]any{"id": p.ID, "passType": p.PassType, "identifiers": ids, "providers": providers, "metadata": map[string]any{}}
		if p.Created != nil {
			item["creationDate"] = p.Created.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, item)
	}
	w.Header().Set("x-pagination-total", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, out)
}

// Seed makes n passes for customers cust-0… (two passes a customer where
// n allows), installed on each platform with the given probability.
func Seed(n, customers int, installed float64, seed uint64) []Pass {
	rng := rand.New(rand.NewPCG(seed, seed+7))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ps := make([]Pass, n)
	for i := range ps {
		p := Pass{ID: "pass-" + strconv.Itoa(i), PassType: []string{"loyalty", "coupon", "eventTicket"}[i%3],
			Identifiers: map[string]string{"customerId": "cust-" + strconv.Itoa(i%max(customers, 1))}}
		if rng.Float64() < installed {
			t := base.Add(time.Duration(rng.IntN(30*24)) * time.Hour)
			p.Apple = &t
		}
		if rng.Float64() < installed {
			t := base.Add(time.Duration(rng.IntN(30*24)) * time.Hour)
			p.Google = &t
		}
		ps[i] = p
	}
	return ps
}
