package walletsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// AppendStatusRecord appends the record a processor writes to wallet.status
// (SPEC §4): the status with its version, plus the customer's registers, so
// that a processor taking over the partition rebuilds the fold from the
// compacted topic alone.
func AppendStatusRecord(dst []byte, s *Status, regs []Register) []byte {
	dst = s.AppendJSON(dst, true)
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
		if r.EID != "" {
			dst = append(dst, `,"e":{"eventId":`...)
			dst = AppendJSONString(dst, r.EID)
			dst = append(dst, `,"type":"`...)
			if r.EUninstalled {
				dst = append(dst, "uninstalled"...)
			} else {
				dst = append(dst, "installed"...)
			}
			dst = append(dst, `","occurredAt":`...)
			dst = appendNullTime(dst, r.EAt)
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
		if r.OID != "" {
			dst = append(dst, `,"o":{"eventId":`...)
			dst = AppendJSONString(dst, r.OID)
			if r.OInstalled {
				dst = append(dst, `,"installed":true`...)
			} else {
				dst = append(dst, `,"installed":false`...)
			}
			if r.OInstalledAt != 0 {
				dst = append(dst, `,"installedAt":`...)
				dst = appendNullTime(dst, r.OInstalledAt)
			}
			dst = append(dst, `,"occurredAt":`...)
			dst = appendNullTime(dst, r.OAt)
			dst = append(dst, '}')
		}
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

type recordJSON struct {
	CustomerID string         `json:"customerId"`
	Version    uint64         `json:"version"`
	Registers  []registerJSON `json:"registers"`
}

type registerJSON struct {
	PassID   string `json:"passId"`
	Platform string `json:"platform"`
	E        *struct {
		EventID    string `json:"eventId"`
		Type       string `json:"type"`
		OccurredAt string `json:"occurredAt"`
	} `json:"e"`
	Installs *[]int64 `json:"installs"`
	O        *struct {
		EventID     string `json:"eventId"`
		Installed   bool   `json:"installed"`
		InstalledAt string `json:"installedAt"`
		OccurredAt  string `json:"occurredAt"`
	} `json:"o"`
}

// ParseStatusRecord reads a wallet.status record back into the customer's
// id, version and registers. The six fields are not read: Fold.Restore
// derives them from the registers.
func ParseStatusRecord(b []byte) (customerID string, version uint64, regs []Register, err error) {
	var r recordJSON
	if err := json.Unmarshal(b, &r); err != nil {
		return "", 0, nil, fmt.Errorf("status record: %w", err)
	}
	if r.CustomerID == "" {
		return "", 0, nil, errors.New("status record: no customerId")
	}
	regs = make([]Register, 0, len(r.Registers))
	for _, rj := range r.Registers {
		reg := Register{PassID: rj.PassID}
		switch rj.Platform {
		case "apple":
			reg.Platform = PlatformApple
		case "google":
			reg.Platform = PlatformGoogle
		default:
			return "", 0, nil, fmt.Errorf("status record %q: register platform %q", r.CustomerID, rj.Platform)
		}
		if rj.E != nil {
			at, err := ParseTime([]byte(rj.E.OccurredAt))
			if err != nil || rj.E.EventID == "" {
				return "", 0, nil, fmt.Errorf("status record %q: bad register E", r.CustomerID)
			}
			reg.EID, reg.EAt, reg.EUninstalled = rj.E.EventID, at, rj.E.Type == "uninstalled"
			if rj.Installs == nil {
				reg.InstallsUnknown = true
			} else if len(*rj.Installs) > 0 {
				reg.Installs = *rj.Installs
			}
		}
		if rj.O != nil {
			at, err := ParseTime([]byte(rj.O.OccurredAt))
			if err != nil || rj.O.EventID == "" {
				return "", 0, nil, fmt.Errorf("status record %q: bad register O", r.CustomerID)
			}
			reg.OID, reg.OAt, reg.OInstalled = rj.O.EventID, at, rj.O.Installed
			if rj.O.InstalledAt != "" {
				if reg.OInstalledAt, err = ParseTime([]byte(rj.O.InstalledAt)); err != nil {
					return "", 0, nil, fmt.Errorf("status record %q: bad register installedAt", r.CustomerID)
				}
			}
		}
		if reg.EID == "" && reg.OID == "" {
			return "", 0, nil, fmt.Errorf("status record %q: empty register", r.CustomerID)
		}
		regs = append(regs, reg)
	}
	return r.CustomerID, r.Version, regs, nil
}
