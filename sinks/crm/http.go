package crm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/walletsync/walletsync/wire"
)

// do sends one request and turns any answer but 2xx into an *HTTPError;
// transport failures (resets, timeouts) come back as they are, retryable.
func do(ctx context.Context, client *http.Client, method, url string, body []byte, header http.Header) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, resp.StatusCode, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		// Not followed (defaultClient): the destination's URL is wrong.
		b = []byte(fmt.Sprintf("a redirect to %q, which walletsync does not follow: point the destination at the final URL", resp.Header.Get("Location")))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return b, resp.StatusCode, &HTTPError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After")), Body: string(b)}
	}
	return b, resp.StatusCode, nil
}

// parseRetryAfter reads seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// timeOrEmpty formats a status timestamp as SPEC §4 does, "" for null.
func timeOrEmpty(ms int64) string {
	if ms == 0 {
		return ""
	}
	return string(wire.AppendTime(nil, ms))
}

// defaultClient returns the client requests go through: c (or a new one)
// made not to follow redirects. Go's client would follow a 301/302 as a GET
// without the body and count the target's 200 as a delivery, sending the
// signature headers to another host on the way; a redirect is the
// destination's failure, answered as it is (an *HTTPError, retried).
func defaultClient(c *http.Client) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	} else {
		out.Timeout = 30 * time.Second
	}
	out.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &out
}

// requestKey is a request's idempotency key and Standard Webhooks message
// id: for one item derived from its key (customerId:version), for a batch
// from its items' keys, so that a retried request carries the same key. It
// is a hash, never the key itself: a customerId may hold any UTF-8 (or
// control characters), and HTTP stacks read header bytes as ISO-8859-1, so a
// raw id would break every receiver's signature check or could not be sent
// at all. The readable key travels in the body (customerId, version).
func requestKey(items []*Item) string {
	if len(items) == 1 {
		return headerKey(items[0].Key)
	}
	h := sha256.New()
	for _, it := range items {
		h.Write([]byte(it.Key))
		h.Write([]byte{0})
	}
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// headerKey is the printable-ASCII form of an item key for HTTP headers.
func headerKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return "msg_" + hex.EncodeToString(h[:16])
}
