package clickhouse

// The tables of migrations/ that the sink fills and the insight queries
// (queries/clickhouse) read; their columns are in the migrations.
const (
	EventsTable        = "wallet_events"         // one row per clean event (001, 006)
	RetentionTable     = "wallet_retention"      // what events did to the retention of installs (007)
	StatusCurrentTable = "wallet_status_current" // the newest status version per customer (003)
)

// The EventsTable columns of the event fields daily's by parameter groups
// on (SPEC §7): passType, the registration's medium, source.
const (
	PassTypeColumn = "pass_type"
	MediumColumn   = "medium"
	SourceColumn   = "source"
)
