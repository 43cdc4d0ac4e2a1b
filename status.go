package walletsync

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
	// FirstInstalledAt is the earliest install known, on any pass or
	// platform; it only ever moves earlier. PassIssuedAt is the earliest
	// issued event. Both are the customer's, not derived from registers
	// (which keep only each register's winning events).
	FirstInstalledAt int64 // 0 = null
	PassIssuedAt     int64 // 0 = null
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
