package kafka

import (
	"fmt"
	"sync"
	"time"
)

// DefaultMinFreeBytes is the space the embedded broker and the archive
// leave free on their disk: below it the broker refuses new records and the
// archive its rolls, so that what must still be written to end cleanly —
// the markers that abort or commit open transactions, offset commits — has
// room. A transaction whose abort marker cannot be written is worse than a
// refused write: kfake then shows its records as committed (docs/operations.md, Known
// issues), so a disk allowed to fill to the last byte can break exactly
// once.
const DefaultMinFreeBytes = 64 << 20

// DiskGuard tells whether a directory's disk has fallen below its reserve.
// It asks the file system at most every 50 ms, so it can sit on every
// produce request.
type DiskGuard struct {
	dir string
	min uint64

	mu      sync.Mutex
	checked time.Time
	err     error
}

// NewDiskGuard guards dir with a reserve of minFree bytes; nil when minFree
// is 0 or less (no reserve).
func NewDiskGuard(dir string, minFree int64) *DiskGuard {
	if minFree <= 0 || dir == "" {
		return nil
	}
	return &DiskGuard{dir: dir, min: uint64(minFree)}
}

// Err is why writes are refused now (the disk's free space below the
// reserve), or nil. A nil guard never refuses.
func (g *DiskGuard) Err() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.checked) < 50*time.Millisecond {
		return g.err
	}
	g.checked = time.Now()
	free, err := freeBytes(g.dir)
	switch {
	case err != nil:
		g.err = nil // unknown: do not refuse on a failed statfs
	case free < g.min:
		g.err = fmt.Errorf("%s has %d MiB free, below the %d MiB reserve: new writes are refused until space returns", g.dir, free>>20, g.min>>20)
	default:
		g.err = nil
	}
	return g.err
}
