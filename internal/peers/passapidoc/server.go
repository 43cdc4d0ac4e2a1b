// Package passapidoc is an independent, documentation-derived test double for
// The Wallet Crew (formerly Neostore) "Pass API" pass listing endpoint,
// GET /api/{tenantId}/passes. It is a second opinion: it was written from the
// vendor's public documentation only, not from this repository's client code,
// so a client that passes against it agrees with the docs rather than with
// itself.
//
// # Facts and where they come from
//
// [1] https://docs.thewalletcrew.io/develop/api-reference/pass-management/pass
// (same content at https://docs.thewalletcrew.io/fr/developper/api-reference/pass-management/pass;
// the page embeds the OpenAPI 3.1 definition "Neostore internal API"):
//   - The operation is GET /api/{tenantId}/passes, "Retrieve passes with
//     optional filtering, sorting, and pagination"; tenantId is a required
//     path parameter; it requires the Pass.Read scope.
//   - Security schemes: apiKey named X-API-KEY sent in the header, or an
//     OAuth2 admin bearer token. Servers: https://app.neostore.cloud
//     (production) and https://app-qa.neostore.cloud (staging).
//   - Query parameters pageIndex (int32, zero-based, default 0) and pageSize
//     (int32, "Number of passes per page", default 20). The total count is
//     returned in the x-pagination-total response header.
//   - Filtering with filter[i].field / filter[i].operator / filter[i].value,
//     where field is identifiers.*, metadata.*, passType or installationStatus
//     (apple, google); the examples use the operators "equals" (passType
//     equals loyalty) and "contains" (installationStatus contains apple).
//   - Sorting with sortBy[i].field / sortBy[i].direction (example: creationDate
//     DESC) by id, passType, creationDate, lastUpdateDate, apple, google or any
//     identifier/metadata field.
//   - 200 answers "Paged list of passes returned successfully"; each item
//     "Represents a pass returned by the API" with the properties
//     id (string, nullable, "Unique identifier of this pass"),
//     secret (string, nullable, "Secret of the Pass"),
//     creationDate (string date-time, "Date of pass creation"),
//     lastUpdateDate (string date-time, "Date of last update or pass creation
//     when no update is present"), passType (string, nullable, "Type of pass"),
//     identifiers (object, nullable, "External identifiers"),
//     metadata (object, nullable), additionalData (object, nullable) and
//     providers (object, nullable, "Installation date per provider").
//
// [2] https://docs.thewalletcrew.io/configure/platform/api-key:
//   - Server-to-server calls send the key in the X-API-KEY header.
//   - Keys are tenant-scoped (a key works for a single tenant) and can be
//     scope-restricted.
//   - 401 Unauthorized typically means a missing, invalid or revoked key;
//     403 Forbidden typically means a valid key with insufficient scopes.
//
// [3] https://docs.thewalletcrew.io/develop/api-reference: the API applies
// throttling and the OpenAPI definition is the source of truth for "default
// throttling values" — but no status code, limit or header is given in the
// text that could be found.
//
// [4] https://docs.thewalletcrew.io/monitor/wallet-and-privileges/sync-pass-installation-status-to-your-crm
// (also in /work/shared/reference/001_*): the Pass API is the batch/backfill
// path for installation status; installation is per wallet (Apple, Google),
// with per-wallet installation timestamps; passes carry stable external
// identifiers such as customerId or email; Swagger at
// https://admin.thewalletcrew.io/api/swagger/index.html.
//
// [5] https://support.thewalletcrew.com/kb/article/119/custom-connector-to-call-api-when-pass-installation-status-change
// (also in /work/shared/reference/002_*): identifiers are key/value pairs
// (e.g. customerId); the wallet platforms are named "apple" and "google".
//
// [6] https://support.thewalletcrew.com/kb/article/104/pass-structure-on-the-wallet-crew:
// a pass has a creation date, a last update date, an Apple and a Google
// status, a pass type (template), identifiers, metadata and additional data.
//
// [7] https://docs.thewalletcrew.io/develop/guides/wallet/how-to-create-passes-via-api-in-the-wallet-crew:
// the tenantId goes in the URL path.
//
// # Assumptions where the documentation is silent
//
//   - A1 Body: the 200 body is a bare JSON array of pass objects (the count is
//     in a header, and the schema shows the pass as the list item, so no
//     envelope). An empty page is [] (never null).
//   - A2 providers: an object keyed by provider name ("apple", "google") whose
//     value is the installation date-time (RFC 3339) or null when the pass is
//     not installed on that wallet. The docs only say "object, nullable,
//     Installation date per provider"; the keys come from [1]'s filter/sort
//     values and [5].
//   - A3 identifiers values are strings; metadata and additionalData values
//     are arbitrary JSON.
//   - A4 Nullable strings (id, secret, passType) are written as null when
//     empty; nil maps are written as null.
//   - A5 Maximum pageSize: none is documented. This server refuses
//     pageSize > MaxPageSize (default 1000) with 400; pageSize < 1,
//     pageIndex < 0 and non-integer values are also 400.
//   - A6 A pageIndex past the last page answers 200 with [] and the total.
//   - A7 x-pagination-total is sent on every 200 (also on empty pages), as a
//     decimal count of passes matching the filters; never on errors.
//   - A8 Tenant routing precedes authentication: any tenant other than the
//     configured one answers 404 whatever the key. Wrong or missing
//     X-API-KEY answers 401; ForbiddenAPIKey (a "valid key without Pass.Read")
//     answers 403.
//   - A9 Throttling is answered with 429 Too Many Requests and a Retry-After
//     header in delta-seconds. The docs give no limits or header names, so
//     throttling only happens when injected (ThrottleNext).
//   - A10 Error bodies are RFC 7807 application/problem+json objects
//     (type, title, status, detail), as an ASP.NET Core API would write them.
//   - A11 Without sortBy, passes are listed in the order given to SetPasses.
//   - A12 Query parameter names are matched case-insensitively (ASP.NET model
//     binding); operator and direction values are case-insensitive too.
//   - A13 Filter semantics: several filters are ANDed. For passType,
//     identifiers.* and metadata.*, "equals" is exact and "contains" is a
//     substring match on the value's text. For installationStatus, "contains"
//     X means installed on X (providers[X] non-null) and "equals" X means
//     installed on X and on no other provider. Other fields or operators are
//     400. Unknown sort fields are 400; null dates sort first when ascending.
//   - A14 Only GET is served on the path (405 with Allow: GET otherwise); any
//     other path is 404.
//   - A15 Injected faults are consumed by the next requests whatever they
//     are (before routing and authentication), as a gateway would.
package passapidoc

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Provider names used as keys of Pass.Providers (see A2).
const (
	ProviderApple  = "apple"
	ProviderGoogle = "google"
)

// HeaderAPIKey is the authentication header documented in [1] and [2].
const HeaderAPIKey = "X-API-KEY"

// HeaderTotal is the response header carrying the total count ([1]).
const HeaderTotal = "x-pagination-total"

// Documented paging defaults ([1]) and this server's assumed maximum (A5).
const (
	DefaultPageSize    = 20
	DefaultMaxPageSize = 1000
)

// Pass is one pass as returned by GET /api/{tenantId}/passes ([1]).
type Pass struct {
	// ID is the unique identifier of the pass (nullable).
	ID string `json:"id"`
	// Secret is the secret of the pass (nullable).
	Secret string `json:"secret"`
	// CreationDate is the date of pass creation.
	CreationDate time.Time `json:"creationDate"`
	// LastUpdateDate is the date of the last update, or the creation date
	// when the pass was never updated.
	LastUpdateDate time.Time `json:"lastUpdateDate"`
	// PassType is the type (template name) of the pass (nullable).
	PassType string `json:"passType"`
	// Identifiers are the external identifiers, e.g. customerId, email.
	Identifiers map[string]string `json:"identifiers"`
	// Metadata are segmentation values (nullable).
	Metadata map[string]any `json:"metadata"`
	// AdditionalData is additional pass data (nullable).
	AdditionalData map[string]any `json:"additionalData"`
	// Providers maps a provider name ("apple", "google") to the installation
	// date on that wallet, nil when not installed (A2).
	Providers map[string]*time.Time `json:"providers"`
}

// MarshalJSON writes empty nullable strings as null (A4).
func (p Pass) MarshalJSON() ([]byte, error) {
	nullable := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	return json.Marshal(struct {
		ID             *string               `json:"id"`
		Secret         *string               `json:"secret"`
		CreationDate   time.Time             `json:"creationDate"`
		LastUpdateDate time.Time             `json:"lastUpdateDate"`
		PassType       *string               `json:"passType"`
		Identifiers    map[string]string     `json:"identifiers"`
		Metadata       map[string]any        `json:"metadata"`
		AdditionalData map[string]any        `json:"additionalData"`
		Providers      map[string]*time.Time `json:"providers"`
	}{
		ID:             nullable(p.ID),
		Secret:         nullable(p.Secret),
		CreationDate:   p.CreationDate,
		LastUpdateDate: p.LastUpdateDate,
		PassType:       nullable(p.PassType),
		Identifiers:    p.Identifiers,
		Metadata:       p.Metadata,
		AdditionalData: p.AdditionalData,
		Providers:      p.Providers,
	})
}

// Installed reports whether the pass is installed on provider (A2).
func (p Pass) Installed(provider string) bool {
	return p.Providers[provider] != nil
}

// Server serves GET /api/{tenantId}/passes for one tenant. The exported
// configuration fields must be set before the server handles requests; the
// pass list and the fault injection may be changed at any time.
type Server struct {
	// TenantID is the only tenant served; others answer 404 (A8).
	TenantID string
	// APIKey is the key expected in X-API-KEY; others answer 401.
	APIKey string
	// ForbiddenAPIKey, when non-empty, is accepted as a key but lacks the
	// Pass.Read scope: it answers 403 ([2]).
	ForbiddenAPIKey string
	// MaxPageSize is the largest accepted pageSize; larger answers 400.
	// Zero or negative means no limit (A5).
	MaxPageSize int

	mu     sync.RWMutex
	passes []Pass

	faultMu      sync.Mutex
	throttleLeft int
	retryAfter   int
	failLeft     int
	failStatus   int

	requests atomic.Int64
	faults   atomic.Int64
}

// New returns a server for tenant, accepting apiKey, listing passes (copied),
// with MaxPageSize set to DefaultMaxPageSize.
func New(tenant, apiKey string, passes []Pass) *Server {
	s := &Server{TenantID: tenant, APIKey: apiKey, MaxPageSize: DefaultMaxPageSize}
	s.SetPasses(passes)
	return s
}

// SetPasses replaces the listed passes (the slice is copied).
func (s *Server) SetPasses(passes []Pass) {
	cp := append([]Pass(nil), passes...)
	s.mu.Lock()
	s.passes = cp
	s.mu.Unlock()
}

// Passes returns a copy of the listed passes.
func (s *Server) Passes() []Pass {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append([]Pass(nil), s.passes...)
}

// ThrottleNext makes the next n requests answer 429 Too Many Requests with
// "Retry-After: <retryAfterSeconds>" (A9). It replaces any pending throttle.
func (s *Server) ThrottleNext(n, retryAfterSeconds int) {
	s.faultMu.Lock()
	s.throttleLeft, s.retryAfter = max(n, 0), max(retryAfterSeconds, 0)
	s.faultMu.Unlock()
}

// FailNext makes the next n requests answer status, which must be a 5xx code
// such as 500 or 503. Pending throttles (ThrottleNext) are served first.
func (s *Server) FailNext(n, status int) {
	if status < 500 || status > 599 {
		panic(fmt.Sprintf("passapidoc: FailNext status %d is not 5xx", status))
	}
	s.faultMu.Lock()
	s.failLeft, s.failStatus = max(n, 0), status
	s.faultMu.Unlock()
}

// Requests is the number of HTTP requests received, faults included.
func (s *Server) Requests() int64 { return s.requests.Load() }

// Faults is the number of requests answered by an injected 429 or 5xx.
func (s *Server) Faults() int64 { return s.faults.Load() }

// ResetCounters sets Requests and Faults back to zero.
func (s *Server) ResetCounters() {
	s.requests.Store(0)
	s.faults.Store(0)
}

// ListPath is the documented list path for this server's tenant.
func (s *Server) ListPath() string {
	return "/api/" + url.PathEscape(s.TenantID) + "/passes"
}

// Start serves s on a new httptest server and returns its base URL (no
// trailing slash; append ListPath) and a function that shuts it down.
func (s *Server) Start() (string, func()) {
	ts := httptest.NewServer(s)
	return ts.URL, ts.Close
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if s.injectFault(w) {
		return
	}

	tenant, ok := parsePath(r.URL.Path)
	if !ok {
		problem(w, http.StatusNotFound, "no such resource")
		return
	}
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		problem(w, http.StatusMethodNotAllowed, "only GET is served here")
		return
	}
	if tenant != s.TenantID {
		problem(w, http.StatusNotFound, "unknown tenant")
		return
	}
	key := r.Header.Get(HeaderAPIKey)
	switch {
	case key == "":
		problem(w, http.StatusUnauthorized, "missing "+HeaderAPIKey+" header")
		return
	case s.ForbiddenAPIKey != "" && equalKeys(key, s.ForbiddenAPIKey):
		problem(w, http.StatusForbidden, "the API key lacks the Pass.Read scope")
		return
	case !equalKeys(key, s.APIKey):
		problem(w, http.StatusUnauthorized, "invalid API key")
		return
	}

	q, err := parseQuery(r.URL.RawQuery, s.MaxPageSize)
	if err != nil {
		problem(w, http.StatusBadRequest, err.Error())
		return
	}

	s.mu.RLock()
	all := s.passes
	s.mu.RUnlock()

	matched := make([]Pass, 0, len(all))
	for _, p := range all {
		if q.match(p) {
			matched = append(matched, p)
		}
	}
	q.sort(matched)

	total := len(matched)
	start := int64(q.pageIndex) * int64(q.pageSize)
	page := []Pass{}
	if start < int64(total) {
		end := min(start+int64(q.pageSize), int64(total))
		page = matched[start:end]
	}

	body, err := json.Marshal(page)
	if err != nil {
		problem(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set(HeaderTotal, strconv.Itoa(total))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// injectFault answers w with a pending injected fault, if any.
func (s *Server) injectFault(w http.ResponseWriter) bool {
	s.faultMu.Lock()
	var status, retryAfter int
	switch {
	case s.throttleLeft > 0:
		s.throttleLeft--
		status, retryAfter = http.StatusTooManyRequests, s.retryAfter
	case s.failLeft > 0:
		s.failLeft--
		status = s.failStatus
	}
	s.faultMu.Unlock()
	if status == 0 {
		return false
	}
	s.faults.Add(1)
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		problem(w, status, "too many requests (injected)")
	} else {
		problem(w, status, "injected failure")
	}
	return true
}

func equalKeys(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// parsePath extracts the tenant from /api/{tenantId}/passes.
func parsePath(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/api/")
	if !ok {
		return "", false
	}
	tenant, tail, ok := strings.Cut(rest, "/")
	if !ok || tenant == "" || tail != "passes" {
		return "", false
	}
	return tenant, true
}

// problem writes an RFC 7807 problem document (A10).
func problem(w http.ResponseWriter, status int, detail string) {
	body, _ := json.Marshal(map[string]any{
		"type":   "about:blank",
		"title":  http.StatusText(status),
		"status": status,
		"detail": detail,
	})
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

type filter struct{ field, operator, value string }

type sortKey struct {
	field string
	desc  bool
}

type query struct {
	pageIndex, pageSize int
	filters             []filter
	sortKeys            []sortKey
}

// parseQuery reads pageIndex, pageSize, filter[i].* and sortBy[i].* (A5, A12, A13).
func parseQuery(raw string, maxPageSize int) (query, error) {
	q := query{pageIndex: 0, pageSize: DefaultPageSize}
	values, err := url.ParseQuery(raw)
	if err != nil {
		return q, fmt.Errorf("malformed query string: %v", err)
	}
	filters := map[int]map[string]string{}
	sorts := map[int]map[string]string{}
	for name, vals := range values {
		v := vals[len(vals)-1]
		lower := strings.ToLower(name)
		switch {
		case lower == "pageindex":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n < 0 {
				return q, fmt.Errorf("pageIndex must be a non-negative int32, got %q", v)
			}
			q.pageIndex = int(n)
		case lower == "pagesize":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n < 1 {
				return q, fmt.Errorf("pageSize must be a positive int32, got %q", v)
			}
			if maxPageSize > 0 && int(n) > maxPageSize {
				return q, fmt.Errorf("pageSize %d exceeds the maximum of %d", n, maxPageSize)
			}
			q.pageSize = int(n)
		case strings.HasPrefix(lower, "filter["):
			if err := indexed(filters, lower, "filter[", v, "field", "operator", "value"); err != nil {
				return q, err
			}
		case strings.HasPrefix(lower, "sortby["):
			if err := indexed(sorts, lower, "sortby[", v, "field", "direction"); err != nil {
				return q, err
			}
		}
	}
	for _, i := range sortedIndexes(filters) {
		f := filters[i]
		ft := filter{field: f["field"], operator: strings.ToLower(f["operator"]), value: f["value"]}
		if ft.field == "" {
			return q, fmt.Errorf("filter[%d].field is missing", i)
		}
		if ft.operator == "" {
			ft.operator = "equals"
		}
		if ft.operator != "equals" && ft.operator != "contains" {
			return q, fmt.Errorf("filter[%d].operator %q is not supported", i, f["operator"])
		}
		if !filterableField(ft.field) {
			return q, fmt.Errorf("filter[%d].field %q is not supported", i, ft.field)
		}
		q.filters = append(q.filters, ft)
	}
	for _, i := range sortedIndexes(sorts) {
		sk := sorts[i]
		field := sk["field"]
		if !sortableField(field) {
			return q, fmt.Errorf("sortBy[%d].field %q is not supported", i, field)
		}
		var desc bool
		switch strings.ToLower(sk["direction"]) {
		case "", "asc":
		case "desc":
			desc = true
		default:
			return q, fmt.Errorf("sortBy[%d].direction %q is not ASC or DESC", i, sk["direction"])
		}
		q.sortKeys = append(q.sortKeys, sortKey{field: field, desc: desc})
	}
	return q, nil
}

// indexed stores "prefix<i>].<attr>" = v into m[i][attr].
func indexed(m map[int]map[string]string, name, prefix, v string, attrs ...string) error {
	rest := strings.TrimPrefix(name, prefix)
	idx, attr, ok := strings.Cut(rest, "].")
	i, err := strconv.Atoi(idx)
	if !ok || err != nil || i < 0 {
		return fmt.Errorf("malformed query parameter %q", name)
	}
	for _, a := range attrs {
		if attr == a {
			if m[i] == nil {
				m[i] = map[string]string{}
			}
			m[i][a] = v
			return nil
		}
	}
	return fmt.Errorf("unknown query parameter %q", name)
}

func sortedIndexes(m map[int]map[string]string) []int {
	idx := make([]int, 0, len(m))
	for i := range m {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

func filterableField(f string) bool {
	return f == "passType" || f == "installationStatus" ||
		(strings.HasPrefix(f, "identifiers.") && len(f) > len("identifiers.")) ||
		(strings.HasPrefix(f, "metadata.") && len(f) > len("metadata."))
}

func sortableField(f string) bool {
	switch f {
	case "id", "passType", "creationDate", "lastUpdateDate", ProviderApple, ProviderGoogle:
		return true
	}
	return (strings.HasPrefix(f, "identifiers.") && len(f) > len("identifiers.")) ||
		(strings.HasPrefix(f, "metadata.") && len(f) > len("metadata."))
}

// text returns the textual value of a string-valued field, and whether it is set.
func text(p Pass, field string) (string, bool) {
	switch {
	case field == "id":
		return p.ID, p.ID != ""
	case field == "passType":
		return p.PassType, p.PassType != ""
	case strings.HasPrefix(field, "identifiers."):
		v, ok := p.Identifiers[strings.TrimPrefix(field, "identifiers.")]
		return v, ok
	case strings.HasPrefix(field, "metadata."):
		v, ok := p.Metadata[strings.TrimPrefix(field, "metadata.")]
		if !ok || v == nil {
			return "", false
		}
		if s, isString := v.(string); isString {
			return s, true
		}
		b, _ := json.Marshal(v)
		return string(b), true
	}
	return "", false
}

func (q query) match(p Pass) bool {
	for _, f := range q.filters {
		if f.field == "installationStatus" {
			if !p.Installed(f.value) {
				return false
			}
			if f.operator == "equals" {
				for name, at := range p.Providers {
					if at != nil && name != f.value {
						return false
					}
				}
			}
			continue
		}
		v, ok := text(p, f.field)
		if !ok {
			return false
		}
		if f.operator == "equals" && v != f.value {
			return false
		}
		if f.operator == "contains" && !strings.Contains(v, f.value) {
			return false
		}
	}
	return true
}

// compareTimes orders nil before any date.
func compareTimes(a, b *time.Time) int {
	switch {
	case a == nil && b == nil:
		return 0
	case a == nil:
		return -1
	case b == nil:
		return 1
	}
	return a.Compare(*b)
}

func (q query) sort(ps []Pass) {
	if len(q.sortKeys) == 0 {
		return
	}
	sort.SliceStable(ps, func(i, j int) bool {
		for _, k := range q.sortKeys {
			var c int
			switch k.field {
			case "creationDate":
				c = ps[i].CreationDate.Compare(ps[j].CreationDate)
			case "lastUpdateDate":
				c = ps[i].LastUpdateDate.Compare(ps[j].LastUpdateDate)
			case ProviderApple, ProviderGoogle:
				c = compareTimes(ps[i].Providers[k.field], ps[j].Providers[k.field])
			default:
				a, _ := text(ps[i], k.field)
				b, _ := text(ps[j], k.field)
				c = strings.Compare(a, b)
			}
			if c != 0 {
				if k.desc {
					return c > 0
				}
				return c < 0
			}
		}
		return false
	})
}
