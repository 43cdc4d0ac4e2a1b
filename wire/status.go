package wire

import (
	"strconv"

	"github.com/walletsync/walletsync"
)

// AppendStatus appends the status record: the eight fields always, null where
// empty, and "version" when withVersion.
func AppendStatus(dst []byte, s *walletsync.Status, withVersion bool) []byte {
	dst = append(dst, `{"customerId":`...)
	dst = AppendJSONString(dst, s.CustomerID)
	dst = append(dst, `,"walletStatus":"`...)
	dst = append(dst, s.Wallet.String()...)
	dst = append(dst, `","appleWalletInstalledAt":`...)
	dst = appendNullTime(dst, s.AppleInstalledAt)
	dst = append(dst, `,"googleWalletInstalledAt":`...)
	dst = appendNullTime(dst, s.GoogleInstalledAt)
	dst = append(dst, `,"walletLastChangedAt":`...)
	dst = appendNullTime(dst, s.LastChangedAt)
	dst = append(dst, `,"walletLastEvent":`...)
	if s.LastEvent == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, '"')
		dst = append(dst, s.LastEvent.String()...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"firstInstalledAt":`...)
	dst = appendNullTime(dst, s.FirstInstalledAt)
	dst = append(dst, `,"passIssuedAt":`...)
	dst = appendNullTime(dst, s.PassIssuedAt)
	if withVersion {
		dst = append(dst, `,"version":`...)
		dst = strconv.AppendUint(dst, s.Version, 10)
	}
	return append(dst, '}')
}

func appendNullTime(dst []byte, ms int64) []byte {
	if ms == 0 {
		return append(dst, "null"...)
	}
	dst = append(dst, '"')
	dst = AppendTime(dst, ms)
	return append(dst, '"')
}
