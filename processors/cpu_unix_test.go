//go:build unix

package processors_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time the test process has used so far: every
// goroutine's, the in-process broker's and the clients' included.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
