// Package queries will hold the insight queries of SPEC §7 behind one
// interface, with a ClickHouse engine and an embedded one (issues 4 and 6).
package queries
