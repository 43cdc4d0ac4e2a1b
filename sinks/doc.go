// Package sinks will hold the adapters that take wallet.status and
// wallet.events.clean out of Kafka: the CRMs, ClickHouse and the Parquet
// archive (issues 4–6).
package sinks
