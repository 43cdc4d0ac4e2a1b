// Package walletsync is the domain of the walletsync pipeline: the canonical
// wallet event, its validation, the dedupe rule, the fold of events into one
// walletStatus per customer, and the status record. It knows nothing of
// Kafka, ClickHouse or HTTP; the folders ingest/, processors/, sinks/,
// queries/ and api/ adapt those to it.
package walletsync

import (
	"strconv"
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
)

func (t EventType) String() string {
	switch t {
	case TypeInstalled:
		return "installed"
	case TypeUninstalled:
		return "uninstalled"
	case TypeObserved:
		return "observed"
	}
	return "unknown"
}

// Platform is the wallet a pass lives in.
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

func invalid(field, reason string) *ValidationError {
	return &ValidationError{Field: field, Reason: reason}
}

// quoteValue quotes an offending input for an error message, cut short so a
// huge value cannot flood logs.
func quoteValue(s string) string {
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
func (e *Event) Validate() error {
	if err := checkLen("eventId", e.ID, 1, MaxEventIDLen); err != nil {
		return err
	}
	if e.Type < TypeInstalled || e.Type > TypeObserved {
		return invalid("type", `required: "installed", "uninstalled" or "observed"`)
	}
	if e.Platform != PlatformApple && e.Platform != PlatformGoogle {
		return invalid("platform", `required: "apple" or "google"`)
	}
	if err := checkLen("customerId", e.CustomerID, 1, MaxCustomerIDLen); err != nil {
		return err
	}
	if err := checkLen("passId", e.PassID, 0, MaxPassIDLen); err != nil {
		return err
	}
	if err := checkLen("passType", e.PassType, 0, MaxPassTypeLen); err != nil {
		return err
	}
	if e.OccurredAt == 0 {
		return invalid("occurredAt", "required")
	}
	if e.OccurredAt < MinTime || e.OccurredAt >= MaxTime {
		return invalid("occurredAt", errTimeRange.Error())
	}
	if e.Type != TypeObserved {
		if e.Installed || e.InstalledAt != 0 {
			return invalid("installed", `only an "observed" event carries installed and installedAt`)
		}
		return nil
	}
	if e.InstalledAt != 0 {
		if e.InstalledAt < MinTime || e.InstalledAt >= MaxTime {
			return invalid("installedAt", errTimeRange.Error())
		}
		if e.InstalledAt > e.OccurredAt {
			return invalid("installedAt", FormatTime(e.InstalledAt)+" is after occurredAt "+FormatTime(e.OccurredAt))
		}
	}
	return nil
}

func checkLen(field, v string, min, max int) error {
	if len(v) < min || len(v) > max {
		if min > 0 && v == "" {
			return invalid(field, "required, must not be empty")
		}
		return invalid(field, "must be "+strconv.Itoa(min)+"–"+strconv.Itoa(max)+" bytes, got "+strconv.Itoa(len(v)))
	}
	return nil
}
