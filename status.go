package walletsync

import "strconv"

// WalletStatus is which platforms have at least one installed pass. It is a
// bit set: apple is 1, google is 2, both is their union.
type WalletStatus uint8

const (
	WalletNone   WalletStatus = 0
	WalletApple  WalletStatus = 1
	WalletGoogle WalletStatus = 2
	WalletBoth   WalletStatus = WalletApple | WalletGoogle
)

func (w WalletStatus) String() string {
	switch w {
	case WalletApple:
		return "apple"
	case WalletGoogle:
		return "google"
	case WalletBoth:
		return "both"
	}
	return "none"
}

// WalletStatuses lists every WalletStatus in the order reports use.
var WalletStatuses = [...]WalletStatus{WalletNone, WalletApple, WalletGoogle, WalletBoth}

func platformBit(p Platform) WalletStatus {
	if p == PlatformApple {
		return WalletApple
	}
	return WalletGoogle
}

// LastEvent is walletLastEvent; zero means no register yet.
type LastEvent uint8

const (
	LastInstalled LastEvent = iota + 1
	LastUninstalled
)

func (l LastEvent) String() string {
	switch l {
	case LastInstalled:
		return "installed"
	case LastUninstalled:
		return "uninstalled"
	}
	return ""
}

// Fields are a customer's status fields besides customerId (SPEC §3). They
// are comparable with ==, which is how a change is detected.
type Fields struct {
	Wallet            WalletStatus
	LastEvent         LastEvent
	AppleInstalledAt  int64 // 0 = null
	GoogleInstalledAt int64 // 0 = null
	LastChangedAt     int64
}

// Status is the status record of SPEC §4.
type Status struct {
	CustomerID string
	Fields
	// Version counts the changes of Fields seen by the process that folded
	// them. It depends on arrival order, so it is not part of a fold's pure
	// result.
	Version uint64
}

// AppendJSON appends the status record: the six fields always, null where
// empty, and "version" when withVersion.
func (s *Status) AppendJSON(dst []byte, withVersion bool) []byte {
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
