// Package parquet archives wallet.events.clean and wallet.status as Parquet
// files under a directory, Hive-style partitioned by day, and reads the
// archive back for replays and the embedded insights engine.
package parquet

import (
	"cmp"
	"time"

	"github.com/walletsync/walletsync"
)

// EventRow is one archived clean event: every field of the canonical event,
// so an archived event replays to the same bytes, plus where it was read.
// Times are Unix milliseconds with the TIMESTAMP(MILLIS) logical type, which
// DuckDB, ClickHouse and pandas read as timestamps.
type EventRow struct {
	EventID         string   `parquet:"event_id"`
	Type            string   `parquet:"type,dict"`
	Platform        string   `parquet:"platform,dict"`
	CustomerID      string   `parquet:"customer_id"`
	PassID          string   `parquet:"pass_id"`
	PassType        string   `parquet:"pass_type,dict"`
	OccurredAt      int64    `parquet:"occurred_at,timestamp(millisecond)"`
	Installed       *bool    `parquet:"installed,optional"`
	InstalledAt     *int64   `parquet:"installed_at,optional,timestamp(millisecond)"`
	Source          string   `parquet:"source,dict"`
	HasRegistration bool     `parquet:"has_registration"`
	Medium          string   `parquet:"medium,dict"`
	Origin          string   `parquet:"origin,dict"`
	UserAgent       string   `parquet:"user_agent,dict"`
	Tags            []string `parquet:"tags,list"`
	ActiveCount     *int64   `parquet:"registration_active_count,optional"`
	TotalCount      *int64   `parquet:"registration_total_count,optional"`
	KafkaPartition  int32    `parquet:"kafka_partition"`
	KafkaOffset     int64    `parquet:"kafka_offset"`
}

// Column names (EventRow's and StatusRow's parquet tags) for readers that
// scan columns by name (ScanColumns); EventTypeOf and PlatformOf read the
// values of the first two.
const (
	TypeColumn         = "type"
	PlatformColumn     = "platform"
	EventIDColumn      = "event_id"
	CustomerIDColumn   = "customer_id" // of both datasets
	PassIDColumn       = "pass_id"
	PassTypeColumn     = "pass_type"
	OccurredAtColumn   = "occurred_at" // Unix milliseconds
	SourceColumn       = "source"
	MediumColumn       = "medium"
	VersionColumn      = "version"
	WalletStatusColumn = "wallet_status"
	// The registration's device counts, null when absent: DeviceRemovalOf
	// reads a device removal from them.
	ActiveCountColumn = "registration_active_count"
	TotalCountColumn  = "registration_total_count"
)

// StatusRow is one archived status version (SPEC §4); null times are null.
// FirstInstalledAt and PassIssuedAt (issue 18) are the last columns, and
// optional, so that files written before them read with both null;
// LastChangedAt became optional with them, as a customer with issued passes
// only has none (files where it is required read as before).
type StatusRow struct {
	CustomerID        string `parquet:"customer_id"`
	Version           int64  `parquet:"version"`
	WalletStatus      string `parquet:"wallet_status,dict"`
	AppleInstalledAt  *int64 `parquet:"apple_wallet_installed_at,optional,timestamp(millisecond)"`
	GoogleInstalledAt *int64 `parquet:"google_wallet_installed_at,optional,timestamp(millisecond)"`
	LastChangedAt     *int64 `parquet:"wallet_last_changed_at,optional,timestamp(millisecond)"`
	LastEvent         string `parquet:"wallet_last_event,dict"`
	KafkaPartition    int32  `parquet:"kafka_partition"`
	KafkaOffset       int64  `parquet:"kafka_offset"`
	FirstInstalledAt  *int64 `parquet:"first_installed_at,optional,timestamp(millisecond)"`
	PassIssuedAt      *int64 `parquet:"pass_issued_at,optional,timestamp(millisecond)"`
}

// platformName is the platform column's value: "" for none (an issued
// event's platform is optional).
func platformName(p walletsync.Platform) string {
	if p == 0 {
		return ""
	}
	return p.String()
}

func optTime(ms int64) *int64 {
	if ms == 0 {
		return nil
	}
	return &ms
}

// EventToRow converts a clean event.
func EventToRow(e *walletsync.Event, part int32, off int64) EventRow {
	r := EventRow{EventID: e.ID, Type: e.Type.String(), Platform: platformName(e.Platform), CustomerID: e.CustomerID, PassID: e.PassID,
		PassType: e.PassType, OccurredAt: e.OccurredAt, Source: e.Source, KafkaPartition: part, KafkaOffset: off}
	if e.Type == walletsync.TypeObserved {
		inst := e.Installed
		r.Installed = &inst
		r.InstalledAt = optTime(e.InstalledAt)
	}
	if reg := e.Registration; reg != nil {
		r.HasRegistration, r.Medium, r.Origin, r.UserAgent, r.Tags = true, reg.Medium, reg.Origin, reg.UserAgent, reg.Tags
		if reg.HasActiveCount {
			n := reg.ActiveCount
			r.ActiveCount = &n
		}
		if reg.HasTotalCount {
			n := reg.TotalCount
			r.TotalCount = &n
		}
	}
	return r
}

// Event converts back; the result validates as the original did.
func (r *EventRow) Event() walletsync.Event {
	e := walletsync.Event{ID: r.EventID, CustomerID: r.CustomerID, PassID: r.PassID, PassType: r.PassType, OccurredAt: r.OccurredAt, Source: r.Source}
	switch r.Type {
	case "installed":
		e.Type = walletsync.TypeInstalled
	case "uninstalled":
		e.Type = walletsync.TypeUninstalled
	case "observed":
		e.Type = walletsync.TypeObserved
	case "issued":
		e.Type = walletsync.TypeIssued
	}
	switch r.Platform {
	case "apple":
		e.Platform = walletsync.PlatformApple
	case "google":
		e.Platform = walletsync.PlatformGoogle
	}
	if r.Installed != nil {
		e.Installed = *r.Installed
	}
	if r.InstalledAt != nil {
		e.InstalledAt = *r.InstalledAt
	}
	if r.HasRegistration {
		// An empty tag list and no tags are one in Parquet: both read
		// back as none.
		reg := &walletsync.Registration{Medium: r.Medium, Origin: r.Origin, UserAgent: r.UserAgent}
		if len(r.Tags) > 0 {
			reg.Tags = r.Tags
		}
		if r.ActiveCount != nil {
			reg.ActiveCount, reg.HasActiveCount = *r.ActiveCount, true
		}
		if r.TotalCount != nil {
			reg.TotalCount, reg.HasTotalCount = *r.TotalCount, true
		}
		e.Registration = reg
	}
	return e
}

// StatusToRow converts a status version.
func StatusToRow(s *walletsync.Status, part int32, off int64) StatusRow {
	return StatusRow{CustomerID: s.CustomerID, Version: int64(s.Version), WalletStatus: s.Wallet.String(),
		AppleInstalledAt: optTime(s.AppleInstalledAt), GoogleInstalledAt: optTime(s.GoogleInstalledAt),
		LastChangedAt: optTime(s.LastChangedAt), LastEvent: s.LastEvent.String(), KafkaPartition: part, KafkaOffset: off,
		FirstInstalledAt: optTime(s.FirstInstalledAt), PassIssuedAt: optTime(s.PassIssuedAt)}
}

// StatusDay is the day= directory a status version is archived under: the
// day of its last change, or, for a customer with issued passes only, of
// the first issue (else the first install).
func StatusDay(s *walletsync.Status) string {
	return Day(cmp.Or(s.LastChangedAt, s.PassIssuedAt, s.FirstInstalledAt))
}

// Day is the UTC date a time in milliseconds falls on, as the archive's
// day= directories name it.
func Day(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.DateOnly) }
