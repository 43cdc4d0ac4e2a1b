package crm

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/walletsync/walletsync/wire"
)

// Webhook POSTs status records as JSON to one URL, signed as Standard
// Webhooks specifies: webhook-id (the idempotency key), webhook-timestamp
// (Unix seconds) and webhook-signature ("v1," and the base64 HMAC-SHA256
// of "id.timestamp.body" under the secret).
type Webhook struct {
	url    string
	secret []byte
	batch  int
	client *http.Client
	now    func() time.Time
}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	URL string
	// Secret: "whsec_" and base64 (the Standard Webhooks form), or any
	// other string, used as it is.
	Secret string
	// Batch: up to this many records per request, sent as a JSON array
	// (default 1: one object per request, what most receivers expect).
	Batch  int
	Client *http.Client
}

// NewWebhook checks the configuration.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.URL == "" {
		return nil, errors.New("webhook: no URL")
	}
	if !strings.HasPrefix(cfg.URL, "http://") && !strings.HasPrefix(cfg.URL, "https://") {
		return nil, errors.New("webhook: the URL must start with http:// or https://")
	}
	if cfg.Secret == "" {
		return nil, errors.New("webhook: no signing secret")
	}
	key, err := WebhookKey(cfg.Secret)
	if err != nil {
		return nil, err
	}
	return &Webhook{url: cfg.URL, secret: key, batch: max(cfg.Batch, 1), client: defaultClient(cfg.Client), now: time.Now}, nil
}

// WebhookKey is the HMAC key a secret stands for.
func WebhookKey(secret string) ([]byte, error) {
	if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, errors.New("webhook: a whsec_ secret must be base64 after the prefix")
		}
		return key, nil
	}
	return []byte(secret), nil
}

// SignWebhook returns the webhook-signature value for a message.
func SignWebhook(key []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func (w *Webhook) Name() string  { return "webhook" }
func (w *Webhook) MaxBatch() int { return w.batch }

// Deliver sends one object, or an array when batching. A batch's message id
// is derived from its items' keys, so a retried batch keeps its id.
func (w *Webhook) Deliver(ctx context.Context, items []*Item) error {
	var body []byte
	if w.batch == 1 {
		body = wire.AppendStatus(nil, &items[0].Status, true)
	} else {
		body = append(body, '[')
		for i, it := range items {
			if i > 0 {
				body = append(body, ',')
			}
			body = wire.AppendStatus(body, &it.Status, true)
		}
		body = append(body, ']')
	}
	id := requestKey(items)
	ts := w.now().Unix()
	_, _, err := do(ctx, w.client, http.MethodPost, w.url, body, http.Header{
		"Content-Type":      {"application/json"},
		"Webhook-Id":        {id},
		"Webhook-Timestamp": {strconv.FormatInt(ts, 10)},
		"Webhook-Signature": {SignWebhook(w.secret, id, ts, body)},
		"Idempotency-Key":   {id},
	})
	return err
}
