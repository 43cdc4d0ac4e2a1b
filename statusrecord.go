package walletsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// AppendStatusRecord appends the record a processor writes to wallet.state:
// the status record of SPEC §4 plus the customer's registers, so that a
// processor taking over the partition rebuilds the fold from it.
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

// ParseStatusRecord reads a wallet.state record (AppendStatusRecord) back into the customer's
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

type statusJSON struct {
	CustomerID        string  `json:"customerId"`
	WalletStatus      *string `json:"walletStatus"`
	AppleInstalledAt  *string `json:"appleWalletInstalledAt"`
	GoogleInstalledAt *string `json:"googleWalletInstalledAt"`
	LastChangedAt     *string `json:"walletLastChangedAt"`
	LastEvent         *string `json:"walletLastEvent"`
	Version           uint64  `json:"version"`
}

// ParseStatus reads a wallet.status record (SPEC §4): the customer, its six
// fields and version. Anything else in the record (registers, in records of
// earlier versions) is ignored. The processors write wallet.status records
// without registers; their state lives in wallet.state.
func ParseStatus(b []byte) (Status, error) {
	var j statusJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Status{}, fmt.Errorf("status record: %w", err)
	}
	if j.CustomerID == "" {
		return Status{}, errors.New("status record: no customerId")
	}
	bad := func(field string) (Status, error) {
		return Status{}, fmt.Errorf("status record %q: bad or missing %s", j.CustomerID, field)
	}
	s := Status{CustomerID: j.CustomerID, Version: j.Version}
	if j.WalletStatus == nil {
		return bad("walletStatus")
	}
	switch *j.WalletStatus {
	case "none":
	case "apple":
		s.Wallet = WalletApple
	case "google":
		s.Wallet = WalletGoogle
	case "both":
		s.Wallet = WalletBoth
	default:
		return bad("walletStatus")
	}
	for _, t := range []struct {
		field string
		v     *string
		dst   *int64
	}{
		{"appleWalletInstalledAt", j.AppleInstalledAt, &s.AppleInstalledAt},
		{"googleWalletInstalledAt", j.GoogleInstalledAt, &s.GoogleInstalledAt},
		{"walletLastChangedAt", j.LastChangedAt, &s.LastChangedAt},
	} {
		if t.v == nil { // null or absent: no time
			continue
		}
		at, err := ParseTime([]byte(*t.v))
		if err != nil {
			return bad(t.field)
		}
		*t.dst = at
	}
	if j.LastEvent != nil {
		switch *j.LastEvent {
		case "installed":
			s.LastEvent = LastInstalled
		case "uninstalled":
			s.LastEvent = LastUninstalled
		default:
			return bad("walletLastEvent")
		}
	}
	return s, nil
}
