package ingest

import (
	"fmt"
	"strconv"
	"strings"
)

// ResolveCustomer finds the customer id in a payload's identifiers by the
// configured key (SPEC §6). The key is tried first as a literal name, since
// The Wallet Crew identifiers may contain dots ("y2.customerId"), then as a
// dotted path into nested objects. E-mail addresses are trimmed and
// lower-cased so that one person is one CRM record.
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
		return "", fmt.Errorf("identifiers: no %q, so the event names no customer", key)
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case float64:
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
		return "", fmt.Errorf("identifiers: %q is empty, so the event names no customer", key)
	}
	return s, nil
}

func isEmailKey(key string) bool {
	i := strings.LastIndexByte(key, '.')
	return strings.EqualFold(key[i+1:], "email")
}
