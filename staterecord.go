package walletsync

import "strconv"

// AppendStateRecord appends the record a processor writes to wallet.state:
// the status record of SPEC §4 plus the customer's registers, so that a
// processor taking over the partition rebuilds the fold from it.
func AppendStateRecord(dst []byte, s *Status, regs []Register) []byte {
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
