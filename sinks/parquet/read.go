package parquet

import (
	"errors"
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
