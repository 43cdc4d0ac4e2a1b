package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// The read API's own response helpers, so that api does not depend on the
// intake (package ingest). They answer byte for byte as ingest's WriteJSON,
// WriteError and CheckBearer do, which the intake and /healthz keep using:
// one JSON value and a newline, {"error": msg} for errors, the same
// WWW-Authenticate challenge.

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers {"error": msg}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// checkBearer enforces --api-token. The scheme is matched
// case-insensitively (RFC 9110 §11.1, formerly RFC 7235).
func checkBearer(w http.ResponseWriter, r *http.Request, token string) bool {
	if token == "" {
		return true
	}
	scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "Bearer") && equalSecret(strings.TrimLeft(got, " "), token) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="walletsync"`)
	writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
	return false
}

// equalSecret compares a presented credential with the configured one in
// constant time. It compares SHA-256 digests, not the strings:
// subtle.ConstantTimeCompare returns at once for inputs of different
// lengths, so comparing the raw strings tells a caller who times it how long
// the secret is. Digests are always 32 bytes; the time depends only on the
// lengths of the presented value (the caller's own) and of the secret (the
// same for every attempt).
func equalSecret(got, want string) bool {
	g, w := sha256.Sum256([]byte(got)), sha256.Sum256([]byte(want))
	return subtle.ConstantTimeCompare(g[:], w[:]) == 1
}
