package parquet

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	pq "github.com/parquet-go/parquet-go"
)

// ReadDataset calls fn for the rows of a dataset's complete files whose day
// is in [fromDay, toDay) ("" leaves that side open), day by day in order,
// in batches. Rows are reused between calls: fn must copy what it keeps.
func ReadDataset[T any](dir, dataset, fromDay, toDay string, fn func(rows []T) error) error {
	files, _, err := Files(dir, dataset, false)
	if err != nil {
		return err
	}
	days := make([]string, 0, len(files))
	for d := range files {
		if (fromDay == "" || d >= fromDay) && (toDay == "" || d < toDay) {
			days = append(days, d)
		}
	}
	sort.Strings(days)
	buf := make([]T, 4096)
	for _, d := range days {
		for _, path := range files[d] {
			if err := readFile(path, buf, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func readFile[T any](path string, buf []T, fn func([]T) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	pf, err := pq.OpenFile(f, st.Size())
	if err != nil {
		return err
	}
	r := pq.NewGenericReader[T](pf)
	defer r.Close()
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if ferr := fn(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ScanColumns reads only the named top-level columns of a dataset's
// complete files whose day is in [fromDay, toDay), and calls fn with
// row-aligned batches: cols[i][j] is column i of the batch's j-th row.
// Values (and their bytes) are reused between calls. Reading columns
// page by page this way is some 25 times faster than decoding rows into
// structs, which is what lets the embedded engine scan 10M events quickly.
func ScanColumns(dir, dataset, fromDay, toDay string, names []string, fn func(cols [][]pq.Value) error) error {
	files, _, err := Files(dir, dataset, false)
	if err != nil {
		return err
	}
	days := make([]string, 0, len(files))
	for d := range files {
		if (fromDay == "" || d >= fromDay) && (toDay == "" || d < toDay) {
			days = append(days, d)
		}
	}
	sort.Strings(days)
	const batch = 4096
	bufs := make([][]pq.Value, len(names))
	for i := range bufs {
		bufs[i] = make([]pq.Value, batch)
	}
	for _, d := range days {
		for _, path := range files[d] {
			if err := scanFile(path, names, bufs, fn); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	return nil
}

// columnCursor reads one column chunk's values across its pages.
type columnCursor struct {
	pages pq.Pages
	vals  pq.ValueReader
}

// read fills buf as far as the chunk goes; n < len(buf) only at its end.
func (c *columnCursor) read(buf []pq.Value) (int, error) {
	n := 0
	for n < len(buf) {
		if c.vals == nil {
			p, err := c.pages.ReadPage()
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			c.vals = p.Values()
		}
		k, err := c.vals.ReadValues(buf[n:])
		n += k
		if errors.Is(err, io.EOF) {
			c.vals = nil
		} else if err != nil {
			return n, err
		}
	}
	return n, nil
}

func scanFile(path string, names []string, bufs [][]pq.Value, fn func([][]pq.Value) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	pf, err := pq.OpenFile(f, st.Size())
	if err != nil {
		return err
	}
	idx := make([]int, len(names))
	for i, name := range names {
		leaf, ok := pf.Schema().Lookup(name)
		if !ok {
			return fmt.Errorf("no column %q", name)
		}
		idx[i] = leaf.ColumnIndex
	}
	out := make([][]pq.Value, len(names))
	for _, rg := range pf.RowGroups() {
		cursors := make([]*columnCursor, len(names))
		for i, ci := range idx {
			cursors[i] = &columnCursor{pages: rg.ColumnChunks()[ci].Pages()}
		}
		err := func() error {
			defer func() {
				for _, c := range cursors {
					c.pages.Close()
				}
			}()
			for {
				n := -1
				for i, c := range cursors {
					k, err := c.read(bufs[i])
					if err != nil {
						return err
					}
					if n >= 0 && k != n {
						return fmt.Errorf("columns of unequal length (%d, %d): only top-level, non-repeated columns can be scanned", n, k)
					}
					n = k
				}
				if n <= 0 {
					return nil
				}
				for i := range out {
					out[i] = bufs[i][:n]
				}
				if err := fn(out); err != nil {
					return err
				}
				if n < len(bufs[0]) {
					return nil
				}
			}
		}()
		if err != nil {
			return err
		}
	}
	return nil
}
