// Package ingest adapts the outside world's event sources — files, HTTP
// webhooks and connector calls, the Pass API — to canonical events.
package ingest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxLine is the longest NDJSON line read, by `walletsync fold` (its
// --max-line default) and by POST /v1/events (each line, and the one object
// of an application/json body), so that a file ingest accepts folds too. A
// canonical event is a few hundred bytes, so a megabyte is a broken or
// hostile line, not an event.
const DefaultMaxLine = 1 << 20

// ErrLineTooLong is returned (wrapped, with the limit) for a line over the
// limit; the reader skips it and goes on.
var ErrLineTooLong = errors.New("line too long")

// LineReader reads an NDJSON stream one line at a time in memory bounded by
// the line limit, however large the stream. Blank lines are skipped but
// counted, so numbers match what an editor shows.
type LineReader struct {
	r    *bufio.Reader
	max  int
	line int
}

// NewLineReader reads r with lines of at most maxLine bytes (0: DefaultMaxLine).
func NewLineReader(r io.Reader, maxLine int) *LineReader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	// +2 leaves room for the "\r\n" of a line exactly at the limit.
	size := max(maxLine+2, 16)
	return &LineReader{r: bufio.NewReaderSize(r, size), max: maxLine}
}

// Next returns the next non-blank line (without its line ending, valid until
// the next call) and its 1-based number. It returns io.EOF at the end, and an
// error wrapping ErrLineTooLong for a line over the limit, after which the
// caller may go on calling Next.
func (l *LineReader) Next() ([]byte, int, error) {
	for {
		b, err := l.r.ReadSlice('\n')
		if len(b) == 0 && err == io.EOF {
			return nil, l.line, io.EOF
		}
		l.line++
		if errors.Is(err, bufio.ErrBufferFull) {
			if err := l.discardLine(); err != nil && err != io.EOF {
				return nil, l.line, err
			}
			return nil, l.line, fmt.Errorf("%w: over %d bytes", ErrLineTooLong, l.max)
		}
		if err != nil && err != io.EOF {
			return nil, l.line, err
		}
		b = bytes.TrimRight(b, "\r\n")
		if len(b) > l.max {
			return nil, l.line, fmt.Errorf("%w: over %d bytes", ErrLineTooLong, l.max)
		}
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		return b, l.line, nil
	}
}

func (l *LineReader) discardLine() error {
	for {
		_, err := l.r.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}
