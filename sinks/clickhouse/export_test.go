package clickhouse

// SetCrashAfterInsert makes the sink stop, as a crash would, right after an
// insert and before its offsets are committed, whenever f says so.
func SetCrashAfterInsert(s *Sink, f func() bool) { s.crashAfterInsert = f }
