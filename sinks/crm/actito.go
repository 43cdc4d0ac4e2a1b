package crm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Actito writes the status into a custom table of an Actito entity
// (neostore_wallets by default, the table The Wallet Crew's Actito connector
// keeps install status in), one record per customer keyed by the customer
// column. Authentication is Actito's API-key scheme: GET /auth/token with
// the key in the Authorization header returns a bearer token valid for
// expiresIn (15 min); it is renewed before it expires, and at once after a
// 401. Records are written with the v4 custom-table record upsert,
// POST /v4/entity/{entity}/customTable/{table}/record, whose body lists
// {"name","value"} properties. Actito has no batch upsert short of its
// asynchronous file imports, so every record is one request.
type Actito struct {
	base, key, entity, table, keyColumn string
	client                              *http.Client
	now                                 func() time.Time

	mu      sync.Mutex
	token   string
	expires time.Time
}

// The defaults of ActitoConfig's zero values: the API's public
// environment, and the table and key column The Wallet Crew's Actito
// connector uses.
const (
	DefaultActitoURL       = "https://api.actito.com"
	DefaultActitoTable     = "neostore_wallets"
	DefaultActitoKeyColumn = "customerId"
)

// ActitoConfig configures Actito.
type ActitoConfig struct {
	BaseURL   string // default https://api.actito.com (per environment: api1, api3, api-pre1…)
	APIKey    string
	Entity    string
	Table     string // default neostore_wallets
	KeyColumn string // the table's column holding customerId (default customerId)
	Client    *http.Client
}

// NewActito checks the configuration.
func NewActito(cfg ActitoConfig) (*Actito, error) {
	if cfg.APIKey == "" {
		return nil, errors.New("actito: no API key")
	}
	if cfg.Entity == "" {
		return nil, errors.New("actito: no entity")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultActitoURL
	}
	if cfg.Table == "" {
		cfg.Table = DefaultActitoTable
	}
	if cfg.KeyColumn == "" {
		cfg.KeyColumn = DefaultActitoKeyColumn
	}
	return &Actito{base: strings.TrimRight(cfg.BaseURL, "/"), key: cfg.APIKey, entity: cfg.Entity, table: cfg.Table,
		keyColumn: cfg.KeyColumn, client: defaultClient(cfg.Client), now: time.Now}, nil
}

func (a *Actito) Name() string  { return "actito" }
func (a *Actito) MaxBatch() int { return 1 }

// accessToken returns a token valid for at least a minute more.
func (a *Actito) accessToken(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && a.now().Before(a.expires.Add(-time.Minute)) {
		return a.token, nil
	}
	body, _, err := do(ctx, a.client, http.MethodGet, a.base+"/auth/token", nil, http.Header{"Authorization": {a.key}, "Accept": {"application/json"}})
	if err != nil {
		return "", fmt.Errorf("actito: getting a token: %w", err)
	}
	var tok struct {
		AccessToken string `json:"accessToken"`
		ExpiresIn   string `json:"expiresIn"` // "900s"
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return "", fmt.Errorf("actito: unreadable token answer: %q", truncate(string(body), 200))
	}
	ttl, err := time.ParseDuration(tok.ExpiresIn)
	if err != nil || ttl <= 0 {
		ttl = 15 * time.Minute
	}
	a.token, a.expires = tok.AccessToken, a.now().Add(ttl)
	return a.token, nil
}

func (a *Actito) dropToken(old string) {
	a.mu.Lock()
	if a.token == old {
		a.token = ""
	}
	a.mu.Unlock()
}

type actitoProperty struct {
	Name  string `json:"name"`
	Value any    `json:"value"`
}

// ActitoColumns are the record's columns for a status, named as SPEC §4
// names the fields (the table holds wallet status only, so no name needs
// the prefix a HubSpot contact property takes); timestamps as SPEC §4
// writes them, null where empty.
func ActitoColumns(keyColumn string, it *Item) []actitoProperty {
	s := &it.Status
	ts := func(ms int64) any {
		if ms == 0 {
			return nil
		}
		return timeOrEmpty(ms)
	}
	return []actitoProperty{
		{keyColumn, s.CustomerID},
		{"walletStatus", s.Wallet.String()},
		{"appleWalletInstalledAt", ts(s.AppleInstalledAt)},
		{"googleWalletInstalledAt", ts(s.GoogleInstalledAt)},
		{"walletLastChangedAt", ts(s.LastChangedAt)},
		{"walletLastEvent", s.LastEvent.String()},
		{"firstInstalledAt", ts(s.FirstInstalledAt)},
		{"passIssuedAt", ts(s.PassIssuedAt)},
		{"version", s.Version},
	}
}

// Deliver upserts one record.
func (a *Actito) Deliver(ctx context.Context, items []*Item) error {
	it := items[0]
	body, _ := json.Marshal(struct {
		Properties []actitoProperty `json:"properties"`
	}{ActitoColumns(a.keyColumn, it)})
	u := a.base + "/v4/entity/" + url.PathEscape(a.entity) + "/customTable/" + url.PathEscape(a.table) + "/record"
	for try := 0; ; try++ {
		tok, err := a.accessToken(ctx)
		if err != nil {
			return err
		}
		_, status, err := do(ctx, a.client, http.MethodPost, u, body, http.Header{
			"Authorization":   {"Bearer " + tok},
			"Content-Type":    {"application/json"},
			"Accept":          {"application/json"},
			"Idempotency-Key": {headerKey(it.Key)},
		})
		if status == http.StatusUnauthorized && try == 0 {
			// Expired or revoked token: one new token, one more try.
			a.dropToken(tok)
			continue
		}
		return err
	}
}
