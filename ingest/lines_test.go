package ingest

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestLineReader(t *testing.T) {
	in := "a\r\n\n  \nbbbbbbbbbbbb\ncc\n" + strings.Repeat("x", 5000) + "\nlast"
	for name, r := range map[string]io.Reader{
		"whole":    strings.NewReader(in),
		"one byte": iotest.OneByteReader(strings.NewReader(in)),
	} {
		lr := NewLineReader(r, 10)
		type got struct {
			line string
			n    int
			long bool
		}
		var all []got
		for {
			l, n, err := lr.Next()
			if err == io.EOF {
				break
			}
			if err != nil && !errors.Is(err, ErrLineTooLong) {
				t.Fatal(err)
			}
			all = append(all, got{string(l), n, err != nil})
		}
		want := []got{{"a", 1, false}, {"", 4, true}, {"cc", 5, false}, {"", 6, true}, {"last", 7, false}}
		if len(all) != len(want) {
			t.Fatalf("%s: got %+v, want %+v", name, all, want)
		}
		for i := range want {
			if all[i] != want[i] {
				t.Errorf("%s: line %d = %+v, want %+v", name, i, all[i], want[i])
			}
		}
	}
}

func TestLineReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	lr := NewLineReader(iotest.ErrReader(boom), 0)
	if _, _, err := lr.Next(); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the reader's error", err)
	}
}
