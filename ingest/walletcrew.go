package ingest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/wire"
)

// errUnparseable marks a body that is not JSON at all: 400, where a
// well-formed payload that breaks the contract is 422.
var errUnparseable = errors.New("unparseable")

// errIgnored marks a webhook of an event type walletsync does not consume
// (Pass:Updated, Customer:*…): it is acknowledged, not rejected, so that The
// Wallet Crew does not retry it.
var errIgnored = errors.New("ignored")

// webhookEvent maps one Pass:Installed / Pass:Uninstalled / Pass:Created
// delivery to a canonical event (Pass:Created is an issued event: the pass
// was made for the customer, whether or not it reaches a wallet). The payload is read leniently because The Wallet Crew's
// guide documents the event names and the pass fields (those of its runtime
// hooks: passId, passType, identifiers, device, additionalInformation) but
// not one fixed envelope: the pass fields are looked up under "data", then
// "payload", then at the top level; the event name in "type", "event" or
// "eventType"; the time in "date", "occurredAt", "timestamp" or "createdAt".
func webhookEvent(body []byte, deliveryID, customerKey string, now time.Time) (walletsync.Event, error) {
	root, err := decodeObject(body)
	if err != nil {
		return walletsync.Event{}, err
	}
	if err := checkUTF8("the delivery id header", []byte(deliveryID)); err != nil {
		return walletsync.Event{}, err
	}
	name := firstString(root, "type", "event", "eventType", "name")
	var e walletsync.Event
	switch strings.ToLower(name) {
	case "pass:installed":
		e.Type = walletsync.TypeInstalled
	case "pass:uninstalled":
		e.Type = walletsync.TypeUninstalled
	case "pass:created":
		e.Type = walletsync.TypeIssued
	case "":
		return e, errors.New(`type: required ("Pass:Installed", "Pass:Uninstalled" or "Pass:Created")`)
	default:
		return e, fmt.Errorf("%w: event type %q", errIgnored, name)
	}
	data := root
	for _, k := range []string{"data", "payload"} {
		if m, ok := root[k].(map[string]any); ok {
			data = m
			break
		}
	}

	if e.Platform, err = parseDevice(firstString(data, "device", "platform")); err != nil {
		if e.Type != walletsync.TypeIssued {
			return e, err
		}
		// A pass is created before it reaches any wallet: an issued
		// event's platform is optional, and one not understood is none.
		e.Platform = 0
	}
	ids, _ := data["identifiers"].(map[string]any)
	if ids == nil {
		ids = data
	}
	e.PassID = firstString(data, "passId")
	if e.CustomerID, err = ResolveCustomer(ids, customerKey); err != nil && !waits(err, e.PassID) {
		return e, err
	}
	e.PassType = firstString(data, "passType")
	e.Source = "webhook"
	if info, ok := data["additionalInformation"].(map[string]any); ok && e.Type != walletsync.TypeIssued {
		e.Registration = registrationOf(info)
	}

	e.OccurredAt = now.UnixMilli()
	if ts := firstString(root, "date", "occurredAt", "timestamp", "createdAt"); ts != "" {
		if e.OccurredAt, err = wire.ParseTime([]byte(ts)); err != nil {
			return e, fmt.Errorf("date: %v: %q", err, ts)
		}
	}
	e.ID = deliveryID
	if e.ID == "" {
		e.ID = firstString(root, "id", "deliveryId", "eventId")
	}
	if e.ID == "" {
		// No id at all: the same delivery retried hashes the same, so
		// retries still dedupe.
		sum := sha256.Sum256(body)
		e.ID = "twc-" + hex.EncodeToString(sum[:16])
	}
	return e, nil
}

// decodeObject decodes a webhook body: one JSON object, in valid UTF-8
// (encoding/json would turn invalid bytes into U+FFFD, so two different
// delivery ids or customer ids could become one), with numbers kept as
// their text (json.Number), so that a numeric identifier is never rounded
// through float64.
func decodeObject(body []byte) (map[string]any, error) {
	if err := checkUTF8("body", body); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var root map[string]any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("%w: body is not a JSON object: %v", errUnparseable, err)
	}
	if root == nil {
		return nil, fmt.Errorf("%w: body is not a JSON object: null", errUnparseable)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: body is not a JSON object: data after the object", errUnparseable)
	}
	return root, nil
}

// checkUTF8 refuses text that is not valid UTF-8 (400). It is the check the
// canonical decoder makes for every string of /v1/events (there, per field
// of a line), applied to what webhooks and connector calls hand over whole.
func checkUTF8(what string, b []byte) error {
	if utf8.Valid(b) {
		return nil
	}
	i := 0
	for i < len(b) {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			break
		}
		i += n
	}
	return fmt.Errorf("%w: %s is not valid UTF-8 (byte %d is 0x%02x)", errUnparseable, what, i, b[i])
}

// parseDevice reads the hooks' device parameter ("apple" or "google"),
// tolerating the spellings a hand-written script might send.
func parseDevice(v string) (walletsync.Platform, error) {
	switch d := strings.ToLower(strings.TrimSpace(v)); d {
	case "apple", "ios", "applewallet", "apple wallet":
		return walletsync.PlatformApple, nil
	case "google", "android", "googlewallet", "google wallet", "googlepay":
		return walletsync.PlatformGoogle, nil
	case "":
		return 0, errors.New(`device: required ("apple" or "google")`)
	default:
		return 0, fmt.Errorf(`device: must be "apple" or "google", got %q`, d)
	}
}

func registrationOf(info map[string]any) *walletsync.Registration {
	r := &walletsync.Registration{}
	if src, ok := info["registrationSource"].(map[string]any); ok {
		r.Medium = firstString(src, "medium")
		r.Origin = firstString(src, "origin")
		r.UserAgent = firstString(src, "userAgent")
		if tags, ok := src["tags"].([]any); ok {
			for _, t := range tags {
				if s, ok := t.(string); ok {
					r.Tags = append(r.Tags, s)
				}
			}
		}
	}
	if ri, ok := info["registrationInformation"].(map[string]any); ok {
		r.ActiveCount, r.HasActiveCount = count(ri["activeRegistrationCount"])
		r.TotalCount, r.HasTotalCount = count(ri["totalRegistrationCount"])
	}
	if r.Medium == "" && r.Origin == "" && r.UserAgent == "" && r.Tags == nil && !r.HasActiveCount && !r.HasTotalCount {
		return nil
	}
	return r
}

// count reads a non-negative integer count (1, or 1.0 and 1e2 as
// encoding/json would have read them).
func count(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(x.String(), 10, 64); err == nil {
			return n, n >= 0
		}
		f, err := x.Float64()
		if err != nil || f < 0 || f >= math.MaxInt64 || f != math.Trunc(f) {
			return 0, false
		}
		return int64(f), true
	case float64:
		if x < 0 || x >= math.MaxInt64 || x != math.Trunc(x) {
			return 0, false
		}
		return int64(x), true
	}
	return 0, false
}

// waits reports whether an event whose customer could not be resolved
// (err) is kept to wait for its pass's customer instead of refused: it
// lacks the key, and it names a pass (SPEC §6). A pass id with a NUL byte
// cannot be a wallet.passes key (the NUL ends the pass), so such an event
// is refused as before.
func waits(err error, passID string) bool {
	return errors.Is(err, ErrNoCustomer) && passID != "" && !strings.ContainsRune(passID, 0)
}

func firstString(m map[string]any, keys ...string) string {
	for _, k := range keys {
		if s, ok := m[k].(string); ok && s != "" {
			return s
		}
	}
	return ""
}

// connectorEvent maps the custom connector's form post (the runtime hook's
// parameters) to a canonical event. Nothing in it identifies the call or
// dates it, so ingest stamps a random id and the time of receipt.
func connectorEvent(form url.Values, customerKey string, now time.Time) (walletsync.Event, error) {
	var e walletsync.Event
	// url.ParseQuery decodes %FF as the byte 0xff: refuse, as for a webhook
	// body, what would otherwise reach Kafka as an id no consumer can read.
	for k, vs := range form {
		if err := checkUTF8("form field name "+strconv.Quote(k), []byte(k)); err != nil {
			return e, err
		}
		for _, v := range vs {
			if err := checkUTF8("form field "+strconv.Quote(k), []byte(v)); err != nil {
				return e, err
			}
		}
	}
	switch v := strings.ToLower(strings.TrimSpace(form.Get("isInstalled"))); v {
	case "true", "1", "yes":
		e.Type = walletsync.TypeInstalled
	case "false", "0", "no":
		e.Type = walletsync.TypeUninstalled
	case "":
		return e, errors.New("isInstalled: required (true or false)")
	default:
		return e, fmt.Errorf("isInstalled: must be true or false, got %q", v)
	}
	var err error
	if e.Platform, err = parseDevice(form.Get("device")); err != nil {
		return e, err
	}
	ids := map[string]any{}
	for k, v := range form {
		if len(v) > 0 {
			ids[k] = v[0]
		}
	}
	e.PassID = form.Get("passId")
	if e.CustomerID, err = ResolveCustomer(ids, customerKey); err != nil && !waits(err, e.PassID) {
		return e, fmt.Errorf("form field %s", strings.TrimPrefix(err.Error(), "identifiers: "))
	}
	e.PassType = form.Get("passType")
	e.Source = "connector"
	e.OccurredAt = now.UnixMilli()
	var id [16]byte
	_, _ = rand.Read(id[:])
	e.ID = "connector-" + hex.EncodeToString(id[:])
	return e, nil
}
