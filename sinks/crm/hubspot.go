package crm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// HubSpot writes the status into contact properties through the CRM v3
// contacts batch upsert (POST /crm/v3/objects/contacts/batch/upsert, at most
// 100 inputs), the contact found by a unique property (IDProperty). The
// properties are created on first use when missing
// (GET/POST /crm/v3/properties/contacts).
type HubSpot struct {
	base, token, idProp string
	client              *http.Client

	mu      sync.Mutex
	ensured bool
}

// HubSpotConfig configures HubSpot.
type HubSpotConfig struct {
	BaseURL string // default https://api.hubapi.com
	Token   string // a private app's access token (Bearer)
	// IDProperty: the unique contact property holding walletsync's
	// customerId (default "email"; any other is created as a unique
	// string property when missing).
	IDProperty string
	Client     *http.Client
}

// HubSpotBatchLimit is the batch upsert's documented maximum.
const HubSpotBatchLimit = 100

// HubSpot property names (SPEC's status fields, as the CRM guide names
// them), plus the version, which lets anyone reading the CRM see ordering.
// The guide names no property for firstInstalledAt and passIssuedAt: they
// take the wallet prefix, as the version does, because a contact's
// properties share one namespace with everything else known of the
// contact (a bare firstInstalledAt could as well be an app's).
const (
	PropWalletStatus     = "walletStatus"
	PropAppleAt          = "appleWalletInstalledAt"
	PropGoogleAt         = "googleWalletInstalledAt"
	PropLastChangedAt    = "walletLastChangedAt"
	PropLastEvent        = "walletLastEvent"
	PropFirstInstalledAt = "walletFirstInstalledAt"
	PropPassIssuedAt     = "walletPassIssuedAt"
	PropStatusVersion    = "walletStatusVersion"
	hubspotGroupName     = "contactinformation"
	// DefaultHubSpotURL and DefaultHubSpotIDProperty are the zero values'
	// meaning in HubSpotConfig.
	DefaultHubSpotURL        = "https://api.hubapi.com"
	DefaultHubSpotIDProperty = "email"
)

// NewHubSpot checks the configuration.
func NewHubSpot(cfg HubSpotConfig) (*HubSpot, error) {
	if cfg.Token == "" {
		return nil, errors.New("hubspot: no access token")
	}
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultHubSpotURL
	}
	if cfg.IDProperty == "" {
		cfg.IDProperty = DefaultHubSpotIDProperty
	}
	return &HubSpot{base: strings.TrimRight(cfg.BaseURL, "/"), token: cfg.Token, idProp: cfg.IDProperty, client: defaultClient(cfg.Client)}, nil
}

func (h *HubSpot) Name() string  { return "hubspot" }
func (h *HubSpot) MaxBatch() int { return HubSpotBatchLimit }

func (h *HubSpot) header() http.Header {
	return http.Header{"Authorization": {"Bearer " + h.token}, "Content-Type": {"application/json"}}
}

type hubspotProperty struct {
	Name           string          `json:"name"`
	Label          string          `json:"label"`
	Type           string          `json:"type"`
	FieldType      string          `json:"fieldType"`
	GroupName      string          `json:"groupName"`
	HasUniqueValue bool            `json:"hasUniqueValue,omitempty"`
	Options        []hubspotOption `json:"options,omitempty"`
}

type hubspotOption struct {
	Label        string `json:"label"`
	Value        string `json:"value"`
	DisplayOrder int    `json:"displayOrder"`
}

func hubspotProperties(idProp string) []hubspotProperty {
	opts := func(vs ...string) []hubspotOption {
		var out []hubspotOption
		for i, v := range vs {
			out = append(out, hubspotOption{Label: v, Value: v, DisplayOrder: i})
		}
		return out
	}
	ps := []hubspotProperty{
		{Name: PropWalletStatus, Label: "Wallet status", Type: "enumeration", FieldType: "select", Options: opts("none", "apple", "google", "both")},
		{Name: PropAppleAt, Label: "Apple Wallet installed at", Type: "datetime", FieldType: "date"},
		{Name: PropGoogleAt, Label: "Google Wallet installed at", Type: "datetime", FieldType: "date"},
		{Name: PropLastChangedAt, Label: "Wallet last changed at", Type: "datetime", FieldType: "date"},
		{Name: PropLastEvent, Label: "Wallet last event", Type: "enumeration", FieldType: "select", Options: opts("installed", "uninstalled")},
		{Name: PropFirstInstalledAt, Label: "Wallet first installed at", Type: "datetime", FieldType: "date"},
		{Name: PropPassIssuedAt, Label: "Wallet pass issued at", Type: "datetime", FieldType: "date"},
		{Name: PropStatusVersion, Label: "Wallet status version", Type: "number", FieldType: "number"},
	}
	if idProp != "email" && idProp != "hs_object_id" {
		ps = append(ps, hubspotProperty{Name: idProp, Label: idProp, Type: "string", FieldType: "text", HasUniqueValue: true})
	}
	for i := range ps {
		ps[i].GroupName = hubspotGroupName
	}
	return ps
}

// EnsureProperties creates the properties that are missing; once it
// succeeded it is not asked again.
func (h *HubSpot) EnsureProperties(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ensured {
		return nil
	}
	for _, p := range hubspotProperties(h.idProp) {
		_, status, err := do(ctx, h.client, http.MethodGet, h.base+"/crm/v3/properties/contacts/"+url.PathEscape(p.Name), nil, h.header())
		if err == nil {
			continue
		}
		if status != http.StatusNotFound {
			return fmt.Errorf("hubspot: reading property %s: %w", p.Name, err)
		}
		body, _ := json.Marshal(p)
		if _, status, err := do(ctx, h.client, http.MethodPost, h.base+"/crm/v3/properties/contacts", body, h.header()); err != nil && status != http.StatusConflict {
			return fmt.Errorf("hubspot: creating property %s: %w", p.Name, err)
		}
	}
	h.ensured = true
	return nil
}

type hubspotInput struct {
	ID         string            `json:"id"`
	IDProperty string            `json:"idProperty"`
	Properties map[string]string `json:"properties"`
}

// HubSpotProperties are the property values written for a status ("" clears
// a timestamp that is null).
func HubSpotProperties(it *Item) map[string]string {
	s := &it.Status
	return map[string]string{
		PropWalletStatus:     s.Wallet.String(),
		PropAppleAt:          timeOrEmpty(s.AppleInstalledAt),
		PropGoogleAt:         timeOrEmpty(s.GoogleInstalledAt),
		PropLastChangedAt:    timeOrEmpty(s.LastChangedAt),
		PropLastEvent:        s.LastEvent.String(),
		PropFirstInstalledAt: timeOrEmpty(s.FirstInstalledAt),
		PropPassIssuedAt:     timeOrEmpty(s.PassIssuedAt),
		PropStatusVersion:    strconv.FormatUint(s.Version, 10),
	}
}

// Deliver upserts the batch. A 207 answer lists per-input errors; the
// inputs it names by id failed, the others were written.
func (h *HubSpot) Deliver(ctx context.Context, items []*Item) error {
	if err := h.EnsureProperties(ctx); err != nil {
		return err
	}
	in := struct {
		Inputs []hubspotInput `json:"inputs"`
	}{}
	for _, it := range items {
		in.Inputs = append(in.Inputs, hubspotInput{ID: it.Status.CustomerID, IDProperty: h.idProp, Properties: HubSpotProperties(it)})
	}
	body, _ := json.Marshal(in)
	hdr := h.header()
	hdr.Set("Idempotency-Key", requestKey(items))
	resp, status, err := do(ctx, h.client, http.MethodPost, h.base+"/crm/v3/objects/contacts/batch/upsert", body, hdr)
	if err != nil {
		return err
	}
	if status != http.StatusMultiStatus {
		return nil
	}
	var multi struct {
		Errors []struct {
			Status   string `json:"status"`
			Category string `json:"category"`
			Message  string `json:"message"`
			Context  struct {
				IDs []string `json:"ids"`
			} `json:"context"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(resp, &multi); err != nil {
		return fmt.Errorf("hubspot: unreadable 207 answer: %w", err)
	}
	byID := map[string]int{}
	for i, it := range items {
		byID[it.Status.CustomerID] = i
	}
	be := &BatchError{Failed: map[int]error{}}
	for _, e := range multi.Errors {
		herr := &HTTPError{Status: http.StatusBadRequest, Body: e.Category + ": " + e.Message}
		for _, id := range e.Context.IDs {
			if i, ok := byID[id]; ok {
				be.Failed[i] = herr
			}
		}
	}
	if len(be.Failed) == 0 {
		return nil
	}
	return be
}
