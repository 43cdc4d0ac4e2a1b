package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/walletsync/walletsync/internal/synth"
)

// BenchmarkFoldCommand is `walletsync fold` end to end over a 1M-line file
// (goal ≥ 500,000 lines/s): read, decode, dedupe, fold, sort, print.
func BenchmarkFoldCommand(b *testing.B) {
	path := filepath.Join(b.TempDir(), "events.ndjson")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	const lines = 1_000_000
	var size int64
	for _, l := range synth.Lines(synth.Default(lines)) {
		w.Write(l)
		w.WriteByte('\n')
		size += int64(len(l)) + 1
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		var errb strings.Builder
		code := run(context.Background(), []string{"fold", path}, env{stdout: io.Discard, stderr: &errb, getenv: func(string) string { return "" }})
		if code != 0 || !strings.Contains(errb.String(), `"rejected":0`) {
			b.Fatalf("exit %d: %s", code, errb.String())
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
