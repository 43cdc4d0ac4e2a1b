package httpjson

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The read API answers as it did when it used ingest's helpers: one JSON
// value and a newline, application/json, {"error": msg}, and the bearer
// challenge.
func TestResponsesAreAsBefore(t *testing.T) {
	w := httptest.NewRecorder()
	WriteJSON(w, 200, map[string]int64{"lag": 0})
	if got := w.Body.String(); w.Code != 200 || got != "{\"lag\":0}\n" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("writeJSON: %d %q %v", w.Code, got, w.Header())
	}
	w = httptest.NewRecorder()
	WriteError(w, 404, "no status for this customer")
	if got := w.Body.String(); w.Code != 404 || got != "{\"error\":\"no status for this customer\"}\n" || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("writeError: %d %q %v", w.Code, got, w.Header())
	}
	for h, want := range map[string]bool{
		"Bearer tok": true, "bearer tok": true, "BEARER tok": true, "Bearer  tok": true,
		"Bearer tok2": false, "Bearertok": false, "Basic tok": false, "tok": false, "": false, "Bearer ": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if h != "" {
			r.Header.Set("Authorization", h)
		}
		w := httptest.NewRecorder()
		if got := CheckBearer(w, r, "tok"); got != want {
			t.Errorf("Authorization %q: %v, want %v", h, got, want)
		}
		if want {
			continue
		}
		if body := w.Body.String(); w.Code != 401 || body != "{\"error\":\"missing or wrong bearer token\"}\n" ||
			w.Header().Get("WWW-Authenticate") != `Bearer realm="walletsync"` || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("Authorization %q answered %d %q %v", h, w.Code, body, w.Header())
		}
	}
	if !CheckBearer(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), "") {
		t.Error("no --api-token: a request without a token is refused")
	}
}

// subtle.ConstantTimeCompare on the raw strings returns at once
// when the lengths differ, so its time told the secret's length. Now a
// wrong credential one byte longer than the secret takes as long as one of
// its length. (The gap before the fix was three orders of magnitude; the
// bound allows for a noisy machine.)
func TestEqualSecretTimeDoesNotTellTheLength(t *testing.T) {
	secret := strings.Repeat("s", 1<<20)
	sameLen := strings.Repeat("t", len(secret))
	longer := sameLen + "t"
	fastest := func(got string) time.Duration {
		best := time.Hour
		for range 25 {
			start := time.Now()
			if EqualSecret(got, secret) {
				t.Fatal("a wrong secret matched")
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	a, b := fastest(sameLen), fastest(longer)
	if ratio := float64(a) / float64(b); ratio > 3 || ratio < 1.0/3 {
		t.Errorf("a wrong secret of the right length took %v, one a byte longer %v: the time tells the length", a, b)
	}
	if !EqualSecret(secret, secret) || EqualSecret("", secret) || !EqualSecret("", "") {
		t.Error("EqualSecret is wrong")
	}
}
