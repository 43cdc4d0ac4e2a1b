package passapi_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/walletsync/walletsync/ingest"
	"github.com/walletsync/walletsync/ingest/passapi"
)

// The client reads the documented page (an array, installation dates per
// provider) and the variants a thin reference leaves open (a wrapped array,
// booleans, an object holding the date); retries a 429; never retries a 401.
func TestClientReadsPagesAndRetries(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-API-KEY") != "k" {
			w.WriteHeader(401)
			return
		}
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(429)
			return
		}
		if r.URL.Path != "/api/brand/passes" || r.URL.Query().Get("pageIndex") != "2" || r.URL.Query().Get("pageSize") != "3" {
			t.Errorf("request %s", r.URL)
		}
		w.Header().Set("x-pagination-total", "9")
		w.Write([]byte(`{"items":[
			{"id":"a","passType":"loyalty","identifiers":{"customerId":"c1"},"providers":{"apple":"2026-01-02T03:04:05Z","google":null}},
			{"id":"b","identifiers":{"customerId":"c2"},"providers":{"Google":true,"apple":false}},
			{"id":"c","identifiers":{"customerId":"c3"},"providers":{"google":{"installationDate":"2026-02-01T00:00:00.5Z"}}}]}`))
	}))
	defer srv.Close()
	c, err := passapi.NewClient(passapi.ClientConfig{BaseURL: srv.URL, Tenant: "brand", APIKey: "k", PageSize: 3, Rate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ps, total, err := c.Page(context.Background(), 2)
	if err != nil || total != 9 || len(ps) != 3 || calls.Load() != 2 {
		t.Fatalf("page: %v %d %d passes, %d calls", err, total, len(ps), calls.Load())
	}
	if !ps[0].Present["apple"] || ps[0].Installed["apple"] != 1767323045000 || ps[0].Present["google"] || ps[0].PassType != "loyalty" {
		t.Errorf("pass a: %+v", ps[0])
	}
	if !ps[1].Present["google"] || ps[1].Present["apple"] || ps[1].Installed["google"] != 0 {
		t.Errorf("pass b: %+v", ps[1])
	}
	if !ps[2].Present["google"] || ps[2].Installed["google"] != 1769904000500 {
		t.Errorf("pass c: %+v", ps[2])
	}

	bad, _ := passapi.NewClient(passapi.ClientConfig{BaseURL: srv.URL, Tenant: "brand", APIKey: "wrong", Rate: 1000})
	before := calls.Load()
	_, _, err = bad.Page(context.Background(), 0)
	var se *passapi.StatusError
	if !errors.As(err, &se) || se.Status != 401 || calls.Load() != before {
		t.Errorf("a wrong key: %v", err)
	}
}

// A numeric identifier keeps its digits: decoded as float64,
// 9007199254740993 would become another customer's 9007199254740992.
func TestClientKeepsNumericIdentifiersExact(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-pagination-total", "1")
		w.Write([]byte(`[{"id":"p","identifiers":{"customerId":9007199254740993},"providers":{"apple":null}}]`))
	}))
	defer srv.Close()
	c, err := passapi.NewClient(passapi.ClientConfig{BaseURL: srv.URL, Tenant: "t", Rate: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ps, _, err := c.Page(context.Background(), 0)
	if err != nil || len(ps) != 1 {
		t.Fatalf("page: %v %v", ps, err)
	}
	if id, err := ingest.ResolveCustomer(ps[0].Identifiers, "customerId"); err != nil || id != "9007199254740993" {
		t.Errorf("customer %q (%v), want 9007199254740993", id, err)
	}
}
