package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrNoCustomer is ResolveCustomer's error for identifiers that lack the
// key (or hold it null or empty): an event that names its pass is then kept
// until the pass's customer is known (SPEC §6), where a key of the wrong
// kind is refused.
var ErrNoCustomer = errors.New("the event names no customer")

// maxExactFloat is 2^53: above it a float64 no longer holds every integer,
// so a number decoded as float64 may already be another customer's id.
const maxExactFloat = 1 << 53

// ResolveCustomer finds the customer id in a payload's identifiers by the
// configured key (SPEC §6). The key is tried first as a literal name, since
// The Wallet Crew identifiers may contain dots ("y2.customerId"), then as a
// dotted path into nested objects. E-mail addresses are trimmed and
// lower-cased so that one person is one CRM record.
//
// Ids are kept as the bytes the payload holds: no Unicode normalisation
// (an NFC and an NFD spelling of one name are two customers, because a CRM
// key must be reproduced exactly), and a number is its decimal text as
// sent, which needs the payload decoded with json.Decoder.UseNumber. A
// float64 (a payload decoded without it) is accepted only while it is an
// exact integer or fraction below 2^53; a larger one has lost digits and is
// refused rather than merged with another customer.
func ResolveCustomer(identifiers map[string]any, key string) (string, error) {
	v, ok := identifiers[key]
	if !ok && strings.Contains(key, ".") {
		var cur any = identifiers
		for _, part := range strings.Split(key, ".") {
			m, isMap := cur.(map[string]any)
			if !isMap {
				cur = nil
				break
			}
			cur = m[part]
		}
		v, ok = cur, cur != nil
	}
	if !ok || v == nil {
		return "", fmt.Errorf("identifiers: no %q, so %w", key, ErrNoCustomer)
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = x.String()
	case float64:
		if math.Abs(x) >= maxExactFloat {
			return "", fmt.Errorf("identifiers: %q is a number too large to be exact as float64 (%g); the payload must be decoded with json.Decoder.UseNumber", key, x)
		}
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return "", fmt.Errorf("identifiers: %q is a boolean, not an identifier", key)
	default:
		return "", fmt.Errorf("identifiers: %q is not a string or number", key)
	}
	if isEmailKey(key) {
		s = strings.ToLower(strings.TrimSpace(s))
	}
	if s == "" {
		return "", fmt.Errorf("identifiers: %q is empty, so %w", key, ErrNoCustomer)
	}
	return s, nil
}

func isEmailKey(key string) bool {
	i := strings.LastIndexByte(key, '.')
	return strings.EqualFold(key[i+1:], "email")
}
