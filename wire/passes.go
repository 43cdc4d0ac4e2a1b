package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/walletsync/walletsync"
)

// The records of wallet.passes (SPEC §6, identity repair). A pass's holder
// is keyed by its passId; an event waiting for the pass's customer by
// passId, a NUL byte and its eventId, so that each waiting event is its own
// compacted key whose tombstone ends its wait. Both keys start with the
// passId up to the NUL, which is what the topic is partitioned by.

// HolderKey is the key of a pass's holder record.
func HolderKey(passID string) []byte { return []byte(passID) }

// WaitingKey is the key of an event waiting on its pass.
func WaitingKey(passID, eventID string) []byte {
	k := make([]byte, 0, len(passID)+1+len(eventID))
	k = append(k, passID...)
	k = append(k, 0)
	return append(k, eventID...)
}

// SplitPassKey reads a wallet.passes key: the pass, and the waiting
// event's id when the key is one (waiting).
func SplitPassKey(key []byte) (passID, eventID string, waiting bool) {
	if i := bytes.IndexByte(key, 0); i >= 0 {
		return string(key[:i]), string(key[i+1:]), true
	}
	return string(key), "", false
}

// Holder says who holds a pass: the customer an event or the Pass API named
// for it, and when. Of two holders of one pass the later At wins (the
// later offset on a tie): a pass that changes hands is held by its newest
// customer.
type Holder struct {
	PassID     string `json:"passId"`
	CustomerID string `json:"customerId"`
	// At is when the customer was named: the teaching event's occurredAt,
	// or the backfill run's start (ms).
	At int64 `json:"-"`
	// Source is "event" (the processors, for an event naming both) or
	// "backfill" (the Pass API's identifiers).
	Source string `json:"source"`
}

type holderJSON struct {
	Holder
	At string `json:"at"`
}

// AppendHolder appends a holder record's value, by hand: the processors
// write one for every new pass, on their hot path.
func AppendHolder(dst []byte, h *Holder) []byte {
	dst = append(dst, `{"passId":`...)
	dst = AppendJSONString(dst, h.PassID)
	dst = append(dst, `,"customerId":`...)
	dst = AppendJSONString(dst, h.CustomerID)
	dst = append(dst, `,"source":`...)
	dst = AppendJSONString(dst, h.Source)
	dst = append(dst, `,"at":"`...)
	dst = AppendTime(dst, h.At)
	return append(dst, `"}`...)
}

// ParseHolder reads a holder record's value.
func ParseHolder(b []byte) (Holder, error) {
	var j holderJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Holder{}, fmt.Errorf("holder record: %w", err)
	}
	h := j.Holder
	var err error
	if h.At, err = ParseTime([]byte(j.At)); err != nil {
		return Holder{}, fmt.Errorf("holder record: at: %w", err)
	}
	if h.PassID == "" || h.CustomerID == "" {
		return Holder{}, errors.New("holder record: passId and customerId are required")
	}
	return h, nil
}

// AppendWaiting appends the value of a waiting event: its canonical form
// with an empty customerId, which the resolver fills in.
func AppendWaiting(dst []byte, e *walletsync.Event) []byte {
	w := *e
	w.CustomerID = ""
	return AppendEvent(dst, &w)
}

// ParseWaiting reads a waiting event: a canonical event but for its
// customerId, which is empty; every other rule of SPEC §1 holds.
func ParseWaiting(b []byte) (walletsync.Event, error) {
	d := decoder{data: b, waiting: true}
	return d.parse()
}
