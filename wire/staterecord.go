package wire

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/walletsync/walletsync"
)

// CheckpointKey keys the checkpoint marker on wallet.state, next to the
// customers' state records: the marker says up to which wallet.events.clean
// offset the records before it hold the fold. 0xff never occurs in UTF-8, and
// a customerId is UTF-8, so it is no customer's key.
const CheckpointKey = "\xffwalletsync-checkpoint"

// AppendCheckpoint appends a checkpoint marker's value, {"cleanOffset":N}.
func AppendCheckpoint(dst []byte, cleanOffset int64) []byte {
	dst = strconv.AppendInt(append(dst, `{"cleanOffset":`...), cleanOffset, 10)
	return append(dst, '}')
}

// ParseCheckpoint reads a checkpoint marker's {"cleanOffset":N}.
func ParseCheckpoint(b []byte) (int64, error) {
	var m struct {
		CleanOffset *int64 `json:"cleanOffset"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.CleanOffset == nil || *m.CleanOffset < 0 {
		return 0, fmt.Errorf("checkpoint marker %q: want {\"cleanOffset\":N}", b)
	}
	return *m.CleanOffset, nil
}

// AppendStateRecord appends the record a processor writes to wallet.state:
// the status record of SPEC §4 plus the customer's registers, so that a
// processor taking over the partition rebuilds the fold from it.
func AppendStateRecord(dst []byte, s *walletsync.Status, regs []walletsync.Register) []byte {
	dst = AppendStatus(dst, s, true)
	dst = dst[:len(dst)-1] // reopen the object
	dst = append(dst, `,"registers":[`...)
	for i := range regs {
		r := &regs[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"passId":`...)
		dst = AppendJSONString(dst, r.PassID)
		dst = append(dst, `,"platform":"`...)
		dst = append(dst, r.Platform.String()...)
		dst = append(dst, '"')
		if r.LastEventID != "" {
			dst = append(dst, `,"e":{"eventId":`...)
			dst = AppendJSONString(dst, r.LastEventID)
			dst = append(dst, `,"type":"`...)
			if r.LastEventUninstalled {
				dst = append(dst, "uninstalled"...)
			} else {
				dst = append(dst, "installed"...)
			}
			dst = append(dst, `","occurredAt":`...)
			dst = appendNullTime(dst, r.LastEventAt)
			dst = append(dst, '}')
			// Written even when empty: a register with E and no
			// "installs" comes from a record that predates them.
			if !r.InstallsUnknown {
				dst = append(dst, `,"installs":[`...)
				for k, at := range r.Installs {
					if k > 0 {
						dst = append(dst, ',')
					}
					dst = strconv.AppendInt(dst, at, 10)
				}
				dst = append(dst, ']')
			}
		}
		if r.ObservationID != "" {
			dst = append(dst, `,"o":{"eventId":`...)
			dst = AppendJSONString(dst, r.ObservationID)
			if r.ObservationInstalled {
				dst = append(dst, `,"installed":true`...)
			} else {
				dst = append(dst, `,"installed":false`...)
			}
			if r.ObservationInstalledAt != 0 {
				dst = append(dst, `,"installedAt":`...)
				dst = appendNullTime(dst, r.ObservationInstalledAt)
			}
			dst = append(dst, `,"occurredAt":`...)
			dst = appendNullTime(dst, r.ObservationAt)
			dst = append(dst, '}')
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}
