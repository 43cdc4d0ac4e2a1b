package passapidoc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"
)

const (
	testTenant = "acme"
	testKey    = "key-123"
)

func fixture(n int) []Pass {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ps := make([]Pass, n)
	for i := range ps {
		created := base.Add(time.Duration(i) * time.Minute)
		p := Pass{
			ID:             fmt.Sprintf("pass-%05d", i),
			CreationDate:   created,
			LastUpdateDate: created,
			PassType:       "loyalty",
			Identifiers: map[string]string{
				"customerId": fmt.Sprintf("C%05d", i),
				"email":      fmt.Sprintf("user%d@example.com", i),
			},
			Providers: map[string]*time.Time{ProviderApple: nil, ProviderGoogle: nil},
		}
		if i%3 == 0 {
			at := created.Add(time.Hour)
			p.Providers[ProviderApple] = &at
		}
		if i%5 == 0 {
			at := created.Add(2 * time.Hour)
			p.Providers[ProviderGoogle] = &at
		}
		if i%7 == 0 {
			p.PassType = "giftcard"
		}
		ps[i] = p
	}
	return ps
}

func get(t *testing.T, rawURL, key string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("X-API-KEY", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

func listURL(base, tenant string, q url.Values) string {
	u := base + "/api/" + tenant + "/passes"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func page(idx, size int) url.Values {
	return url.Values{"pageIndex": {strconv.Itoa(idx)}, "pageSize": {strconv.Itoa(size)}}
}

func TestPagingThroughAllPasses(t *testing.T) {
	want := fixture(2500)
	srv := New(testTenant, testKey, want)
	base, stop := srv.Start()
	defer stop()

	var got []Pass
	sizes := []int{}
	for idx := 0; ; idx++ {
		resp, body := get(t, listURL(base, testTenant, page(idx, 1000)), testKey)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("page %d: status %d: %s", idx, resp.StatusCode, body)
		}
		if h := resp.Header.Get("x-pagination-total"); h != "2500" {
			t.Fatalf("page %d: x-pagination-total = %q, want 2500", idx, h)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
			t.Fatalf("page %d: content type %q", idx, ct)
		}
		var items []Pass
		if err := json.Unmarshal(body, &items); err != nil {
			t.Fatalf("page %d: body is not a JSON array of passes: %v", idx, err)
		}
		if items == nil {
			t.Fatalf("page %d: body %q decoded to nil, want an array", idx, body)
		}
		sizes = append(sizes, len(items))
		if len(items) == 0 {
			break
		}
		got = append(got, items...)
		if idx > 10 {
			t.Fatal("paging does not end")
		}
	}
	if fmt.Sprint(sizes) != "[1000 1000 500 0]" {
		t.Fatalf("page sizes = %v, want [1000 1000 500 0]", sizes)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d passes, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.PassType != w.PassType ||
			!g.CreationDate.Equal(w.CreationDate) || !g.LastUpdateDate.Equal(w.LastUpdateDate) ||
			g.Identifiers["customerId"] != w.Identifiers["customerId"] ||
			g.Identifiers["email"] != w.Identifiers["email"] {
			t.Fatalf("pass %d = %+v, want %+v", i, g, w)
		}
		for _, prov := range []string{ProviderApple, ProviderGoogle} {
			gp, wp := g.Providers[prov], w.Providers[prov]
			if (gp == nil) != (wp == nil) || (gp != nil && !gp.Equal(*wp)) {
				t.Fatalf("pass %d providers[%s] = %v, want %v", i, prov, gp, wp)
			}
		}
	}
	if n := srv.Requests(); n != 4 {
		t.Fatalf("Requests() = %d, want 4", n)
	}
}

func TestWireShape(t *testing.T) {
	srv := New(testTenant, testKey, fixture(2))
	base, stop := srv.Start()
	defer stop()

	_, body := get(t, listURL(base, testTenant, nil), testKey)
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw) != 2 {
		t.Fatalf("got %d items", len(raw))
	}
	for _, k := range []string{"id", "secret", "creationDate", "lastUpdateDate", "passType",
		"identifiers", "metadata", "additionalData", "providers"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("item lacks documented property %q: %s", k, body)
		}
	}
	if len(raw[0]) != 9 {
		t.Errorf("item has %d properties, want 9: %s", len(raw[0]), body)
	}
	if s := string(raw[0]["secret"]); s != "null" {
		t.Errorf("empty secret = %s, want null", s)
	}
	var prov map[string]*string
	if err := json.Unmarshal(raw[1]["providers"], &prov); err != nil {
		t.Fatal(err)
	}
	if prov["apple"] != nil || prov["google"] != nil {
		t.Errorf("pass 1 providers = %s, want both null", raw[1]["providers"])
	}
	if err := json.Unmarshal(raw[0]["providers"], &prov); err != nil {
		t.Fatal(err)
	}
	if prov["apple"] == nil || *prov["apple"] != "2025-01-01T01:00:00Z" {
		t.Errorf("pass 0 providers = %s", raw[0]["providers"])
	}
}

func TestDefaultsAndLimits(t *testing.T) {
	srv := New(testTenant, testKey, fixture(50))
	base, stop := srv.Start()
	defer stop()

	resp, body := get(t, listURL(base, testTenant, nil), testKey)
	var items []Pass
	if err := json.Unmarshal(body, &items); err != nil || resp.StatusCode != 200 {
		t.Fatalf("default page: %d %v", resp.StatusCode, err)
	}
	if len(items) != DefaultPageSize || items[0].ID != "pass-00000" {
		t.Fatalf("default page has %d items starting %q", len(items), items[0].ID)
	}

	for _, q := range []url.Values{page(0, 1001), page(-1, 10), page(0, 0), {"pageSize": {"abc"}}} {
		resp, _ := get(t, listURL(base, testTenant, q), testKey)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%v: status %d, want 400", q, resp.StatusCode)
		}
		if resp.Header.Get("x-pagination-total") != "" {
			t.Errorf("%v: total header on an error", q)
		}
	}

	resp, body = get(t, listURL(base, testTenant, page(99, 10)), testKey)
	if resp.StatusCode != 200 || string(body) != "[]" || resp.Header.Get("x-pagination-total") != "50" {
		t.Fatalf("past the end: %d %q total %q", resp.StatusCode, body, resp.Header.Get("x-pagination-total"))
	}
}

func TestAuthAndTenant(t *testing.T) {
	srv := New(testTenant, testKey, fixture(3))
	srv.ForbiddenAPIKey = "no-scope"
	base, stop := srv.Start()
	defer stop()

	cases := []struct {
		name, tenant, key string
		want              int
	}{
		{"wrong key", testTenant, "nope", http.StatusUnauthorized},
		{"missing key", testTenant, "", http.StatusUnauthorized},
		{"key without scope", testTenant, "no-scope", http.StatusForbidden},
		{"other tenant", "other", testKey, http.StatusNotFound},
		{"good", testTenant, testKey, http.StatusOK},
	}
	for _, c := range cases {
		resp, body := get(t, listURL(base, c.tenant, nil), c.key)
		if resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d (%s)", c.name, resp.StatusCode, c.want, body)
		}
	}
	resp, _ := get(t, base+"/api/"+testTenant+"/other", testKey)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("other path: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodDelete, listURL(base, testTenant, nil), nil)
	req.Header.Set("X-API-KEY", testKey)
	dr, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	dr.Body.Close()
	if dr.StatusCode != http.StatusMethodNotAllowed || dr.Header.Get("Allow") != "GET" {
		t.Errorf("DELETE: %d Allow=%q", dr.StatusCode, dr.Header.Get("Allow"))
	}
}

func TestThrottleAndFailureInjection(t *testing.T) {
	srv := New(testTenant, testKey, fixture(10))
	base, stop := srv.Start()
	defer stop()
	u := listURL(base, testTenant, page(0, 5))

	srv.ThrottleNext(2, 7)
	for i := 0; i < 2; i++ {
		resp, _ := get(t, u, testKey)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("throttled request %d: status %d", i, resp.StatusCode)
		}
		if ra := resp.Header.Get("Retry-After"); ra != "7" {
			t.Fatalf("throttled request %d: Retry-After %q, want 7", i, ra)
		}
	}
	resp, _ := get(t, u, testKey)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("x-pagination-total") != "10" {
		t.Fatalf("after throttle: %d", resp.StatusCode)
	}

	srv.FailNext(1, http.StatusServiceUnavailable)
	srv.ThrottleNext(1, 1)
	resp, _ = get(t, u, testKey)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("throttle before failure: %d", resp.StatusCode)
	}
	resp, _ = get(t, u, testKey)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("injected 503: %d", resp.StatusCode)
	}
	srv.FailNext(1, http.StatusInternalServerError)
	resp, _ = get(t, u, testKey)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("injected 500: %d", resp.StatusCode)
	}
	resp, _ = get(t, u, testKey)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after failures: %d", resp.StatusCode)
	}
	if srv.Requests() != 7 || srv.Faults() != 5 {
		t.Fatalf("Requests()=%d Faults()=%d, want 7 and 5", srv.Requests(), srv.Faults())
	}
	srv.ResetCounters()
	if srv.Requests() != 0 || srv.Faults() != 0 {
		t.Fatal("ResetCounters")
	}
}

func TestFilterAndSort(t *testing.T) {
	srv := New(testTenant, testKey, fixture(30))
	base, stop := srv.Start()
	defer stop()

	list := func(q url.Values) ([]Pass, string) {
		t.Helper()
		resp, body := get(t, listURL(base, testTenant, q), testKey)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%v: status %d %s", q, resp.StatusCode, body)
		}
		var items []Pass
		if err := json.Unmarshal(body, &items); err != nil {
			t.Fatal(err)
		}
		return items, resp.Header.Get("x-pagination-total")
	}

	items, total := list(url.Values{
		"filter[0].field": {"passType"}, "filter[0].operator": {"equals"}, "filter[0].value": {"giftcard"},
	})
	if total != "5" || len(items) != 5 || items[1].ID != "pass-00007" {
		t.Fatalf("passType filter: total %s, %d items", total, len(items))
	}

	items, total = list(url.Values{
		"filter[0].field": {"installationStatus"}, "filter[0].operator": {"contains"}, "filter[0].value": {"apple"},
		"sortBy[0].field": {"creationDate"}, "sortBy[0].direction": {"DESC"},
	})
	if total != "10" || items[0].ID != "pass-00027" || items[9].ID != "pass-00000" {
		t.Fatalf("apple filter desc: total %s first %s", total, items[0].ID)
	}

	items, total = list(url.Values{
		"filter[0].field": {"identifiers.customerId"}, "filter[0].operator": {"equals"}, "filter[0].value": {"C00012"},
	})
	if total != "1" || items[0].ID != "pass-00012" {
		t.Fatalf("identifier filter: total %s", total)
	}

	resp, _ := get(t, listURL(base, testTenant, url.Values{
		"filter[0].field": {"colour"}, "filter[0].operator": {"equals"}, "filter[0].value": {"x"},
	}), testKey)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown filter field: %d", resp.StatusCode)
	}
}
