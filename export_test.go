package walletsync

// ParseEventGeneral is ParseEvent without its canonical fast path, for the
// tests that hold the two to the same answers.
func ParseEventGeneral(data []byte) (Event, error) {
	d := decoder{data: data}
	return d.parse()
}
