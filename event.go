// Package walletsync is the domain of the walletsync pipeline: the canonical
// wallet event, its validation, the dedupe rule, the fold of events into one
// walletStatus per customer, and the status record. Their byte forms (JSON,
// state records, headers) are package wire's. It knows nothing of Kafka,
// ClickHouse or HTTP; the folders ingest/, processors/, sinks/, queries/
// and api/ adapt those to it.
package walletsync

import (
	"errors"
	"strconv"
	"time"
	"unicode/utf8"
)

// EventType is the kind of a canonical event.
type EventType uint8

const (
	TypeInstalled EventType = iota + 1
	TypeUninstalled
	// TypeObserved is a backfill observation: what the Pass API reported at
	// occurredAt, not a change that happened then.
	TypeObserved
	// TypeIssued: the pass was created for the customer (The Wallet
	// Crew's Pass:Created, a Pass API creation date). It belongs to no
	// register; it feeds passIssuedAt and the funnel (SPEC §3, §7).
	TypeIssued
)

func (t EventType) String() string {
	switch t {
	case TypeInstalled:
		return "installed"
	case TypeUninstalled:
		return "uninstalled"
	case TypeObserved:
		return "observed"
	case TypeIssued:
		return "issued"
	}
	return "unknown"
}

// Platform is the wallet a pass lives in. Zero is none: an issued event's
// platform is optional.
type Platform uint8

const (
	PlatformApple Platform = iota + 1
	PlatformGoogle
)

func (p Platform) String() string {
	switch p {
	case PlatformApple:
		return "apple"
	case PlatformGoogle:
		return "google"
	}
	return "unknown"
}

// Field limits of SPEC §1, in bytes of UTF-8.
const (
	MaxEventIDLen    = 128
	MaxCustomerIDLen = 256
	MaxPassIDLen     = 128
	MaxPassTypeLen   = 64
)

// Event is one canonical wallet event (SPEC §1). Times are Unix milliseconds,
// UTC; zero means absent. PassID is "" for absent, null and "" alike.
type Event struct {
	ID           string
	Type         EventType
	Platform     Platform
	CustomerID   string
	PassID       string
	PassType     string
	OccurredAt   int64
	Installed    bool  // TypeObserved only
	InstalledAt  int64 // TypeObserved only
	Source       string
	Registration *Registration
}

// Registration is where an install came from, as The Wallet Crew reports it.
// The counts are optional; HasActiveCount/HasTotalCount tell a reported zero
// from an absent one without a pointer per field on the hot path.
type Registration struct {
	Medium         string
	Origin         string
	UserAgent      string
	Tags           []string
	ActiveCount    int64
	TotalCount     int64
	HasActiveCount bool
	HasTotalCount  bool
}

// DeviceRemoval reports an uninstall that removed the pass from one device
// while another device of the platform still holds it (SPEC §3): the
// counts, which The Wallet Crew reports as they are after the event, say
// at least one device is still registered (activeCount ≥ 1) and that one
// was lost (totalCount > activeCount). Without both counts an uninstall is
// an uninstall.
func (e *Event) DeviceRemoval() bool {
	r := e.Registration
	return e.Type == TypeUninstalled && r != nil && r.HasActiveCount && r.HasTotalCount &&
		r.ActiveCount >= 1 && r.TotalCount > r.ActiveCount
}

// ValidationError says why a record is not a canonical event. Field is the
// offending field ("json" for syntax errors) and is a bounded set, fit for a
// metric label; Reason is for people.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "json" {
		return e.Reason // already says "invalid JSON: …"
	}
	return e.Field + ": " + e.Reason
}

// Invalid is the ValidationError for field, for the decoders (package wire)
// that report the same rule breaks as Validate.
func Invalid(field, reason string) *ValidationError {
	return &ValidationError{Field: field, Reason: reason}
}

// QuoteValue quotes an offending input for an error message, cut short so a
// huge value cannot flood logs.
func QuoteValue(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

// Validate checks the rules of SPEC §1 that do not depend on the JSON form.
// ParseEvent calls it; producers that build events in code call it too.
func (e *Event) Validate() error { return e.validate(false) }

// ValidateWaiting checks an event that waits for its pass's customer (SPEC
// §6): every rule of Validate but the customer's, whose id must be empty,
// and a passId, which is what it waits by.
func (e *Event) ValidateWaiting() error { return e.validate(true) }

func (e *Event) validate(waiting bool) error {
	if err := CheckLength("eventId", e.ID, 1, MaxEventIDLen); err != nil {
		return err
	}
	if e.Type < TypeInstalled || e.Type > TypeIssued {
		return Invalid("type", `required: "installed", "uninstalled", "observed" or "issued"`)
	}
	if e.Platform != PlatformApple && e.Platform != PlatformGoogle && (e.Type != TypeIssued || e.Platform != 0) {
		return Invalid("platform", `required: "apple" or "google"`)
	}
	switch {
	case !waiting:
		if err := CheckLength("customerId", e.CustomerID, 1, MaxCustomerIDLen); err != nil {
			return err
		}
	case e.CustomerID != "":
		return Invalid("customerId", "must be empty on a waiting event")
	case e.PassID == "":
		return Invalid("passId", "required on a waiting event")
	}
	if err := CheckLength("passId", e.PassID, 0, MaxPassIDLen); err != nil {
		return err
	}
	if err := CheckLength("passType", e.PassType, 0, MaxPassTypeLen); err != nil {
		return err
	}
	if e.OccurredAt == 0 {
		return Invalid("occurredAt", "required")
	}
	if e.OccurredAt < MinTime || e.OccurredAt >= MaxTime {
		return Invalid("occurredAt", ErrTimeRange.Error())
	}
	if e.Type != TypeObserved {
		if e.Installed || e.InstalledAt != 0 {
			return Invalid("installed", `only an "observed" event carries installed and installedAt`)
		}
		return nil
	}
	if e.InstalledAt != 0 {
		if e.InstalledAt < MinTime || e.InstalledAt >= MaxTime {
			return Invalid("installedAt", ErrTimeRange.Error())
		}
		if e.InstalledAt > e.OccurredAt {
			return Invalid("installedAt", formatTime(e.InstalledAt)+" is after occurredAt "+formatTime(e.OccurredAt))
		}
	}
	return nil
}

// CheckLength checks that v is min–max bytes long, as Validate and the
// decoders report it.
func CheckLength(field, v string, min, max int) error {
	if len(v) < min || len(v) > max {
		if min > 0 && v == "" {
			return Invalid(field, "required, must not be empty")
		}
		return Invalid(field, "must be "+strconv.Itoa(min)+"–"+strconv.Itoa(max)+" bytes, got "+strconv.Itoa(len(v)))
	}
	return nil
}

// Timestamps are carried as Unix milliseconds (UTC). Zero is never a valid
// instant (the accepted range starts in 2000), so it doubles as "absent".
const (
	MinTime int64 = 946684800000  // 2000-01-01T00:00:00Z
	MaxTime int64 = 4102444800000 // 2100-01-01T00:00:00Z, exclusive
)

// ErrTimeRange is the error for an instant outside [MinTime, MaxTime).
var ErrTimeRange = errors.New("outside [2000-01-01T00:00:00Z, 2100-01-01T00:00:00Z)")

// formatTime writes ms in the contract's output form for an error message;
// the hot path's formatter (wire.AppendTime) writes the same bytes faster.
func formatTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}
