// Package httpjson is how walletsync's HTTP APIs answer: one JSON value
// and a newline, {"error": msg} for errors, and the bearer-token check with
// its WWW-Authenticate challenge. The intake (ingest), the read API (api),
// the health endpoints and the local test servers share it, so that every
// endpoint answers alike and the constant-time comparison of secrets is
// written once.
package httpjson

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// WriteJSON answers with a JSON body.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers {"error": msg}.
func WriteError(w http.ResponseWriter, code int, msg string) {
	WriteJSON(w, code, map[string]string{"error": msg})
}

// CheckBearer enforces --api-token. The scheme is matched
// case-insensitively (RFC 9110 §11.1, formerly RFC 7235).
func CheckBearer(w http.ResponseWriter, r *http.Request, token string) bool {
	if token == "" {
		return true
	}
	scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "Bearer") && EqualSecret(strings.TrimLeft(got, " "), token) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="walletsync"`)
	WriteError(w, http.StatusUnauthorized, "missing or wrong bearer token")
	return false
}

// EqualSecret compares a presented credential with the configured one in
// constant time. It compares SHA-256 digests, not the strings:
// subtle.ConstantTimeCompare returns at once for inputs of different
// lengths, so comparing the raw strings tells a caller who times it how long
// the secret is. Digests are always 32 bytes; the time depends only on the
// lengths of the presented value (the caller's own) and of the secret (the
// same for every attempt).
func EqualSecret(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
