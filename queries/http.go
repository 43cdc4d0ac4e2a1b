package queries

import (
	"bufio"
	"context"
	"net/http"
	"time"

	"github.com/walletsync/walletsync/ingest"
)

// API serves the read endpoints of SPEC §6.
type API struct {
	View     *StatusView
	Lag      *Lag
	APIToken string
}

// Register adds the read routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/customers/{customerId}", a.customer)
	mux.HandleFunc("GET /v1/status", a.statuses)
	mux.HandleFunc("GET /v1/pipeline", a.pipeline)
}

func (a *API) customer(w http.ResponseWriter, r *http.Request) {
	if !ingest.CheckBearer(w, r, a.APIToken) {
		return
	}
	s, ok := a.View.Get(r.PathValue("customerId"))
	if !ok {
		ingest.WriteError(w, http.StatusNotFound, "no status for this customer")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(append(s.AppendJSON(nil, true), '\n'))
}

func (a *API) statuses(w http.ResponseWriter, r *http.Request) {
	if !ingest.CheckBearer(w, r, a.APIToken) {
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	bw := bufio.NewWriterSize(w, 64<<10)
	var buf []byte
	for _, s := range a.View.All() {
		buf = s.AppendJSON(buf[:0], true)
		buf = append(buf, '\n')
		bw.Write(buf)
	}
	bw.Flush()
}

func (a *API) pipeline(w http.ResponseWriter, r *http.Request) {
	if !ingest.CheckBearer(w, r, a.APIToken) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	rep, err := a.Lag.Compute(ctx)
	if err != nil {
		w.Header().Set("Retry-After", "5")
		ingest.WriteError(w, http.StatusServiceUnavailable, "measuring lag: "+err.Error())
		return
	}
	ingest.WriteJSON(w, http.StatusOK, rep)
}
