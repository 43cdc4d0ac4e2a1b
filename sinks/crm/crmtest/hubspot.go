package crmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// HubSpotServer implements the contact properties endpoints
// (GET /crm/v3/properties/contacts/{name}, POST /crm/v3/properties/contacts)
// and the contacts batch upsert (POST /crm/v3/objects/contacts/batch/upsert):
// a private app's Bearer token, at most 100 inputs, properties that must
// exist, unique id properties, enumeration and datetime values checked; errors in
// HubSpot's shape ({"status":"error","message","category"}), per-input
// failures as 207 with "errors".
type HubSpotServer struct {
	*Store
	URL   string
	srv   *httptest.Server
	token string

	mu    sync.Mutex
	props map[string]map[string]any // name → definition
	// Invalid: inputs whose id this returns makes the 207 answer name as
	// failed (a validation error).
	Invalid func(id string) bool
}

// NewHubSpotServer starts a server accepting token; a contact has only
// HubSpot's default properties (email among them) until others are created.
func NewHubSpotServer(token string, f Faults) *HubSpotServer {
	s := &HubSpotServer{Store: newStore(f), token: token, props: map[string]map[string]any{
		"email": {"name": "email", "type": "string", "hasUniqueValue": true},
	}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /crm/v3/properties/contacts/{name}", s.getProperty)
	mux.HandleFunc("POST /crm/v3/properties/contacts", s.createProperty)
	mux.HandleFunc("POST /crm/v3/objects/contacts/batch/upsert", s.upsert)
	s.srv = httptest.NewServer(s.auth(mux))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *HubSpotServer) Close() { s.srv.Close() }

// Property returns the definition a contact property was created with.
func (s *HubSpotServer) Property(name string) (map[string]any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.props[name]
	return maps.Clone(p), ok
}

// Properties lists the contact properties that exist.
func (s *HubSpotServer) Properties() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.props {
		out = append(out, n)
	}
	return out
}

// hubspotDatetime: the two forms HubSpot takes for a datetime property, an
// ISO 8601 string or Unix milliseconds.
func hubspotDatetime(v string) bool {
	if _, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return true
	}
	_, err := strconv.ParseInt(v, 10, 64)
	return err == nil
}

func hubspotError(category, msg string) map[string]any {
	return map[string]any{"status": "error", "message": msg, "category": category, "correlationId": "00000000-0000-0000-0000-000000000000"}
}

func (s *HubSpotServer) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+s.token {
			writeJSON(w, http.StatusUnauthorized, hubspotError("INVALID_AUTHENTICATION", "Authentication credentials not found."))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *HubSpotServer) getProperty(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p, ok := s.props[r.PathValue("name")]
	s.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, hubspotError("OBJECT_NOT_FOUND", "Unable to find property "+r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *HubSpotServer) createProperty(w http.ResponseWriter, r *http.Request) {
	var p map[string]any
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", "Invalid input JSON"))
		return
	}
	name, _ := p["name"].(string)
	for _, k := range []string{"name", "label", "type", "fieldType", "groupName"} {
		if v, _ := p[k].(string); v == "" {
			writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", "Property "+k+" is required"))
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.props[name]; ok {
		writeJSON(w, http.StatusConflict, hubspotError("OBJECT_ALREADY_EXISTS", "A property named '"+name+"' already exists."))
		return
	}
	s.props[name] = p
	writeJSON(w, http.StatusCreated, p)
}

func (s *HubSpotServer) upsert(w http.ResponseWriter, r *http.Request) {
	s.latency(r)
	errBody := hubspotError("RATE_LIMITS", "You have reached your ten_secondly_rolling limit.")
	errBody["policyName"] = "TEN_SECONDLY_ROLLING"
	kind := s.fault()
	if !s.before(w, kind, errBody) {
		return
	}
	var in struct {
		Inputs []struct {
			ID         string            `json:"id"`
			IDProperty string            `json:"idProperty"`
			Properties map[string]string `json:"properties"`
		} `json:"inputs"`
	}
	b, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(b, &in); err != nil {
		writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", "Invalid input JSON on line 1"))
		return
	}
	if len(in.Inputs) == 0 || len(in.Inputs) > 100 {
		writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", fmt.Sprintf("Batch inputs must be between 1 and 100, got %d", len(in.Inputs))))
		return
	}
	s.mu.Lock()
	for _, inp := range in.Inputs {
		p, ok := s.props[inp.IDProperty]
		if !ok || p["hasUniqueValue"] != true {
			s.mu.Unlock()
			writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", "idProperty "+inp.IDProperty+" is not a unique property"))
			return
		}
		for name, v := range inp.Properties {
			def, ok := s.props[name]
			if !ok {
				s.mu.Unlock()
				writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", "Property values were not valid: PROPERTY_DOESNT_EXIST "+name))
				return
			}
			if def["type"] == "datetime" && v != "" && !hubspotDatetime(v) {
				s.mu.Unlock()
				writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", "Property values were not valid: "+v+" is not a valid datetime for "+name))
				return
			}
			if opts, ok := def["options"].([]any); ok && v != "" {
				found := false
				for _, o := range opts {
					if om, _ := o.(map[string]any); om["value"] == v {
						found = true
					}
				}
				if !found {
					s.mu.Unlock()
					writeJSON(w, http.StatusBadRequest, hubspotError("VALIDATION_ERROR", "INVALID_OPTION "+v+" for "+name))
					return
				}
			}
		}
	}
	s.mu.Unlock()
	var results []map[string]any
	var errs []map[string]any
	for _, inp := range in.Inputs {
		if s.Invalid != nil && s.Invalid(inp.ID) {
			errs = append(errs, map[string]any{"status": "error", "category": "VALIDATION_ERROR",
				"message": "Contact " + inp.ID + " cannot be updated", "context": map[string][]string{"ids": {inp.ID}}})
			continue
		}
		var version uint64
		fmt.Sscan(inp.Properties["walletStatusVersion"], &version)
		s.apply(inp.ID, Record{WalletStatus: inp.Properties["walletStatus"], AppleAt: inp.Properties["appleWalletInstalledAt"],
			GoogleAt: inp.Properties["googleWalletInstalledAt"], LastChangedAt: inp.Properties["walletLastChangedAt"],
			LastEvent: inp.Properties["walletLastEvent"], FirstInstalledAt: inp.Properties["walletFirstInstalledAt"],
			PassIssuedAt: inp.Properties["walletPassIssuedAt"], Version: version})
		results = append(results, map[string]any{"id": inp.ID, "properties": inp.Properties, "new": false})
	}
	if !s.after(w, r, kind, errBody) {
		return
	}
	if len(errs) > 0 {
		writeJSON(w, http.StatusMultiStatus, map[string]any{"status": "COMPLETE", "results": results, "errors": errs, "numErrors": len(errs)})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "COMPLETE", "results": results})
}
