package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/ingest"
	"github.com/walletsync/walletsync/wire"
)

func foldCommand() command {
	return command{
		name:    "fold",
		args:    "[FILE…]",
		summary: "fold NDJSON events (files or stdin) into statuses, offline",
		help: `
Reads canonical events as NDJSON from the files in order, or from standard
input when there are none, deduplicates them by eventId (the first occurrence
wins), folds them and prints the status of every customer as NDJSON sorted by
customerId (byte order). The output is a pure function of the events: the same
events in any order print the same lines, so "version" is not printed.

Each rejected line goes to standard error as {"line":N,"error":"…"} (with
"file" when reading files); a one-line JSON summary ends standard error. The
exit status is 0 whenever the input could be read, whatever it held; 1 when a
file cannot be opened or read; 2 for bad flags.

Memory is the fold state (about 200 bytes a customer with one pass) plus 16
bytes an event id; the input is streamed, so a file of any size can be folded.`,
		flags: func(fs *flag.FlagSet) func(context.Context, env, []string) int {
			maxLine := fs.Int("max-line", ingest.DefaultMaxLine, "longest input `bytes` per line; a longer line is rejected")
			deviceRemovals := deviceRemovalsFlag(fs)
			return func(ctx context.Context, e env, args []string) int {
				return foldMain(ctx, e, args, *maxLine, !*deviceRemovals)
			}
		},
	}
}

type foldStats struct {
	lines, events, duplicates, rejected int
}

func foldMain(ctx context.Context, e env, files []string, maxLine int, allUninstalls bool) int {
	start := time.Now()
	fold := walletsync.NewFold()
	if allUninstalls {
		fold.AllUninstalls()
	}
	dedupe := walletsync.NewDeduper(0) // a file is deduplicated whole
	var dec wire.Decoder
	var st foldStats
	errw := bufio.NewWriter(e.stderr)
	defer errw.Flush()

	foldOne := func(name string, r io.Reader) error {
		lr := ingest.NewLineReader(r, maxLine)
		var buf []byte
		for {
			if st.lines&0xfff == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			line, n, err := lr.Next()
			if err == io.EOF {
				st.lines += n
				return nil
			}
			if err != nil && !errors.Is(err, ingest.ErrLineTooLong) {
				return err
			}
			if err == nil {
				var ev walletsync.Event
				if ev, err = dec.Parse(line); err == nil {
					if dedupe.Seen(ev.ID, 0) {
						st.duplicates++
					} else {
						st.events++
						fold.Apply(&ev)
					}
					continue
				}
			}
			st.rejected++
			buf = append(buf[:0], `{`...)
			if name != "" {
				buf = append(buf, `"file":`...)
				buf = wire.AppendJSONString(buf, name)
				buf = append(buf, ',')
			}
			buf = append(buf, `"line":`...)
			buf = strconv.AppendInt(buf, int64(n), 10)
			buf = append(buf, `,"error":`...)
			buf = wire.AppendJSONString(buf, err.Error())
			buf = append(buf, "}\n"...)
			errw.Write(buf)
		}
	}

	if len(files) == 0 {
		if err := foldOne("", e.stdin); err != nil {
			fmt.Fprintf(errw, "walletsync fold: reading standard input: %v\n", err)
			return exitFail
		}
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(errw, "walletsync fold: %v\n", err)
			return exitFail
		}
		err = foldOne(name, f)
		f.Close()
		if err != nil {
			fmt.Fprintf(errw, "walletsync fold: reading %s: %v\n", name, err)
			return exitFail
		}
	}

	out := bufio.NewWriterSize(e.stdout, 64<<10)
	var buf []byte
	statuses := fold.Statuses()
	for i := range statuses {
		buf = wire.AppendStatus(buf[:0], &statuses[i], false)
		buf = append(buf, '\n')
		out.Write(buf)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(errw, "walletsync fold: writing output: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(errw, `{"summary":"fold","lines":%d,"events":%d,"duplicates":%d,"rejected":%d,"customers":%d,"seconds":%.3f}`+"\n",
		st.lines, st.events, st.duplicates, st.rejected, len(statuses), time.Since(start).Seconds())
	return exitOK
}
