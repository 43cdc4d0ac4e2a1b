package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// verifySignature checks The Wallet Crew's x-neostore-signature header
// against every configured secret (several during a rotation).
//
// The Wallet Crew's public guide names the header and the webhook's
// signatureSecret but the stored copy we could read does not spell out the
// computation, so this follows the common scheme the issue prescribes for
// that case: HMAC-SHA256 of the raw request body keyed by the secret,
// accepted as hex or base64 (standard or URL alphabet), with or without a
// "sha256=" prefix. Comparisons are constant-time.
func verifySignature(body []byte, header string, secrets []string) bool {
	candidates := signatureCandidates(header)
	ok := false
	for _, secret := range secrets {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		want := mac.Sum(nil)
		for _, c := range candidates {
			// Every candidate is compared, match or not, so timing says
			// nothing about which secret or encoding matched.
			if hmac.Equal(c, want) {
				ok = true
			}
		}
	}
	return ok
}

// signatureCandidates decodes the header every way verifySignature accepts,
// keeping what has the size of an HMAC-SHA256. None: the header cannot
// match any body, which the webhook handler tells before reading one.
func signatureCandidates(header string) [][]byte {
	sig := strings.TrimSpace(header)
	if i := strings.IndexByte(sig, '='); i > 0 && strings.EqualFold(sig[:i], "sha256") {
		sig = sig[i+1:]
	}
	if sig == "" {
		return nil
	}
	var candidates [][]byte
	if b, err := hex.DecodeString(sig); err == nil && len(b) == sha256.Size {
		candidates = append(candidates, b)
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(sig); err == nil && len(b) == sha256.Size {
			candidates = append(candidates, b)
		}
	}
	return candidates
}

// SignBody is the signature The Wallet Crew is assumed to send, hex-encoded;
// for tests, `walletsync simulate` and documentation examples.
func SignBody(body []byte, secret string) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}
