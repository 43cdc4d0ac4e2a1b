// Package processors will hold the streaming side of the fold: Kafka
// consumers that dedupe wallet.events, fold them per partition and emit
// wallet.events.clean and wallet.status exactly once (issue 3).
package processors
