// Package api is walletsync's read side over HTTP (SPEC §6): the current
// status of customers (StatusView, from wallet.status), how far behind the
// pipeline is (Lag, Progress), the insight queries of SPEC §7 answered by an
// engine of package queries, and the analyst dashboard.
package api

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/walletsync/walletsync/internal/httpjson"
	"github.com/walletsync/walletsync/queries"
	"github.com/walletsync/walletsync/wire"
)

// API serves the read endpoints of SPEC §6.
type API struct {
	View     *StatusView
	Lag      *Lag
	Insights queries.Engine // nil: no insight store configured
	APIToken string
	Logger   *slog.Logger
}

// Handle adds the read routes to mux.
func (a *API) Handle(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/customers/{customerId}", a.customer)
	mux.HandleFunc("GET /v1/customers", a.customer) // ?customerId=…, for ids a path cannot carry ("." and "..")
	mux.HandleFunc("GET /v1/status", a.statuses)
	mux.HandleFunc("GET /v1/pipeline", a.pipeline)
	mux.HandleFunc("GET /v1/insights/{name}", a.insight)
}

func (a *API) insight(w http.ResponseWriter, r *http.Request) {
	if !httpjson.CheckBearer(w, r, a.APIToken) {
		return
	}
	p := r.URL.Query()
	q, err := queries.ParseQuery(r.PathValue("name"), p.Get("from"), p.Get("to"), p.Get("by"))
	if err != nil {
		httpjson.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if a.Insights == nil {
		w.Header().Set("Retry-After", "60")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "no insight store is configured (start with --clickhouse)")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	ans, err := a.Insights.Insight(ctx, q)
	switch {
	case errors.Is(err, queries.ErrNotImplemented):
		httpjson.WriteError(w, http.StatusNotImplemented, q.Name+" is not available yet")
	case err != nil:
		// The store's own error is logged, not shown: it says nothing a
		// caller can act on and may name internals.
		if a.Logger != nil {
			a.Logger.Error("insight query failed", "query", q.Name, "err", err)
		}
		w.Header().Set("Retry-After", "5")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "the insight store did not answer; try again")
	default:
		httpjson.WriteJSON(w, http.StatusOK, ans)
	}
}

func (a *API) customer(w http.ResponseWriter, r *http.Request) {
	if !httpjson.CheckBearer(w, r, a.APIToken) {
		return
	}
	id := r.PathValue("customerId")
	if id == "" {
		// Go's mux (and browsers, proxies) treat "." and ".." as path
		// segments to resolve, even as %2E: such ids come as a query.
		q := r.URL.Query()
		if !q.Has("customerId") {
			httpjson.WriteError(w, http.StatusBadRequest, "customerId: required (GET /v1/customers/{customerId} or /v1/customers?customerId=…)")
			return
		}
		id = q.Get("customerId")
	}
	s, ok := a.View.Get(id)
	if !ok {
		httpjson.WriteError(w, http.StatusNotFound, "no status for this customer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(wire.AppendStatus(nil, &s, true), '\n'))
}

func (a *API) statuses(w http.ResponseWriter, r *http.Request) {
	if !httpjson.CheckBearer(w, r, a.APIToken) {
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriterSize(w, 64<<10)
	var buf []byte
	for _, s := range a.View.All() {
		buf = wire.AppendStatus(buf[:0], &s, true)
		buf = append(buf, '\n')
		bw.Write(buf)
	}
	bw.Flush()
}

func (a *API) pipeline(w http.ResponseWriter, r *http.Request) {
	if !httpjson.CheckBearer(w, r, a.APIToken) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	rep, err := a.Lag.Compute(ctx)
	if err != nil {
		w.Header().Set("Retry-After", "5")
		httpjson.WriteError(w, http.StatusServiceUnavailable, "measuring lag: "+err.Error())
		return
	}
	httpjson.WriteJSON(w, http.StatusOK, rep)
}
