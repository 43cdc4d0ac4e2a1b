// Package passapi backfills install status from The Wallet Crew's Pass API:
// a client that pages through every pass with its installation status, a
// backfill that turns each (pass, platform) into an `observed` event on
// wallet.events with a checkpoint in Kafka, and its schedule.
package passapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/walletsync/walletsync/internal/backoff"
	"golang.org/x/time/rate"
)

// Pass is one pass as the API lists it: GET /api/{tenant}/passes answers
// an array of passes with "id", "passType", "identifiers" and, per
// provider ("apple", "google"), the installation date or null.
type Pass struct {
	ID          string
	PassType    string
	Identifiers map[string]any
	// Installed: per platform name, whether installed and since when
	// (Unix ms; 0 when the API gave no parseable date).
	Installed map[string]int64
	Present   map[string]bool
	// CreatedAt is the pass's creation date (Unix ms; 0 when the listing
	// gives none, or none that parses): its issued event.
	CreatedAt int64
}

// The defaults of ClientConfig's zero values.
const (
	DefaultAuthHeader       = "X-API-KEY"
	DefaultCreatedField     = "creationDate"
	DefaultProvidersField   = "providers"
	DefaultIdentifiersField = "identifiers"
	DefaultPageSize         = 100
	DefaultRate             = 5 // requests per second
	DefaultMaxAttempts      = 8
)

// ClientConfig configures a Client. Where The Wallet Crew's reference is
// thin, the header and field names are settings.
type ClientConfig struct {
	BaseURL    string // e.g. https://app.neostore.cloud
	Tenant     string
	APIKey     string
	AuthHeader string // default X-API-KEY
	// ProvidersField names the object holding each provider's
	// installation date (default "providers"); IdentifiersField the
	// external identifiers (default "identifiers").
	ProvidersField   string
	IdentifiersField string
	// CreatedField names the pass's creation date, which becomes an
	// issued event (default "creationDate", the listing's documented
	// field; "-" reads none).
	CreatedField string
	PageSize     int     // default 100
	Rate         float64 // requests per second (default 5)
	MaxAttempts  int     // per page (default 8)
	HTTP         *http.Client
}

// Client pages through the Pass API.
type Client struct {
	cfg ClientConfig
	lim *rate.Limiter
}

// NewClient checks the configuration.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.BaseURL == "" || cfg.Tenant == "" {
		return nil, errors.New("pass API: the URL and the tenant are required")
	}
	if cfg.AuthHeader == "" {
		cfg.AuthHeader = DefaultAuthHeader
	}
	if cfg.CreatedField == "" {
		cfg.CreatedField = DefaultCreatedField
	}
	if cfg.ProvidersField == "" {
		cfg.ProvidersField = DefaultProvidersField
	}
	if cfg.IdentifiersField == "" {
		cfg.IdentifiersField = DefaultIdentifiersField
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = DefaultPageSize
	}
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultRate
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 30 * time.Second}
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	return &Client{cfg: cfg, lim: rate.NewLimiter(rate.Limit(cfg.Rate), 1)}, nil
}

// StatusError is an answer that is not 2xx.
type StatusError struct {
	Status     int
	RetryAfter time.Duration
	Body       string
}

func (e *StatusError) Error() string {
	b := e.Body
	if len(b) > 200 {
		b = b[:200] + "…"
	}
	return fmt.Sprintf("pass API: HTTP %d: %s", e.Status, b)
}

func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status == 429 || se.Status == 408 || se.Status >= 500
	}
	return true // transport errors
}

// pageRetry spaces the retries of a page: 0.5 s, 1 s, 2 s … up to 15 s,
// unless the API sent Retry-After.
var pageRetry = backoff.Policy{Base: 500 * time.Millisecond, Max: 15 * time.Second}

// Page fetches one page (zero-based), sorted by id so that pages are stable
// while passes are added, and the total count the API reports (-1 when it
// sent none). Throttled to the configured rate; 429, 5xx and transport
// errors are retried with backoff, honouring Retry-After.
func (c *Client) Page(ctx context.Context, index int) ([]Pass, int, error) {
	var err error
	for attempt := 1; ; attempt++ {
		var passes []Pass
		var total int
		if err = c.lim.Wait(ctx); err != nil {
			return nil, 0, err
		}
		passes, total, err = c.page(ctx, index)
		if err == nil {
			return passes, total, nil
		}
		if !retryable(err) || attempt >= c.cfg.MaxAttempts {
			return nil, 0, err
		}
		wait := pageRetry.Delay(attempt)
		var se *StatusError
		if errors.As(err, &se) && se.RetryAfter > 0 {
			wait = se.RetryAfter
		}
		if err := backoff.Wait(ctx, wait); err != nil {
			return nil, 0, err
		}
	}
}

func (c *Client) page(ctx context.Context, index int) ([]Pass, int, error) {
	q := url.Values{}
	q.Set("pageIndex", strconv.Itoa(index))
	q.Set("pageSize", strconv.Itoa(c.cfg.PageSize))
	q.Set("sortBy[0].field", "id")
	q.Set("sortBy[0].direction", "ASC")
	u := c.cfg.BaseURL + "/api/" + url.PathEscape(c.cfg.Tenant) + "/passes?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set(c.cfg.AuthHeader, c.cfg.APIKey)
	req.Header.Set("Accept", "application/json")
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode/100 != 2 {
		se := &StatusError{Status: resp.StatusCode, Body: string(body)}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			se.RetryAfter = time.Duration(s) * time.Second
		}
		return nil, 0, se
	}
	total := -1
	if t, err := strconv.Atoi(resp.Header.Get("x-pagination-total")); err == nil {
		total = t
	}
	passes, err := c.decode(body)
	return passes, total, err
}

// decode reads the page: an array of passes, or an object wrapping it in
// "items", "data" or "passes".
func (c *Client) decode(body []byte) ([]Pass, error) {
	var raw []map[string]any
	// Numbers keep their decimal text (an identifier 9007199254740993 is
	// not 9007199254740992's customer).
	unmarshal := func(b []byte, v any) error {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		return d.Decode(v)
	}
	if err := unmarshal(body, &raw); err != nil {
		var wrapped map[string]json.RawMessage
		if json.Unmarshal(body, &wrapped) != nil {
			return nil, fmt.Errorf("pass API: the page is not a JSON array of passes")
		}
		found := false
		for _, k := range []string{"items", "data", "passes"} {
			if v, ok := wrapped[k]; ok && unmarshal(v, &raw) == nil {
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("pass API: the page holds no array of passes")
		}
	}
	out := make([]Pass, 0, len(raw))
	for _, m := range raw {
		p := Pass{Installed: map[string]int64{}, Present: map[string]bool{}}
		p.ID, _ = m["id"].(string)
		p.PassType, _ = m["passType"].(string)
		p.Identifiers, _ = m[c.cfg.IdentifiersField].(map[string]any)
		if s, ok := m[c.cfg.CreatedField].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
				p.CreatedAt = t.UnixMilli()
			}
		}
		providers, _ := m[c.cfg.ProvidersField].(map[string]any)
		for name, v := range providers {
			name = strings.ToLower(name)
			// The documented form is the installation date; a boolean
			// or an object holding the date is read too.
			if obj, ok := v.(map[string]any); ok {
				v = firstOf(obj, "installationDate", "installedAt", "date")
			}
			switch x := v.(type) {
			case string:
				p.Present[name] = true
				if t, err := time.Parse(time.RFC3339Nano, x); err == nil {
					p.Installed[name] = t.UnixMilli()
				}
			case bool:
				p.Present[name] = x
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func firstOf(m map[string]any, keys ...string) any {
	for _, k := range keys {
		if v, ok := m[k]; ok && v != nil {
			return v
		}
	}
	return nil
}
