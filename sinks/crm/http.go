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

	"github.com/walletsync/walletsync"
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
	return string(walletsync.AppendTime(nil, ms))
}

func defaultClient(c *http.Client) *http.Client {
	if c != nil {
		return c
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// requestKey is a request's idempotency key: the item's own for one item,
// for a batch one derived from its items' keys, so that a retried batch
// carries the same key.
func requestKey(items []*Item) string {
	if len(items) == 1 {
		return items[0].Key
	}
	h := sha256.New()
	for _, it := range items {
		h.Write([]byte(it.Key))
		h.Write([]byte{0})
	}
	return "batch_" + hex.EncodeToString(h.Sum(nil)[:16])
}
