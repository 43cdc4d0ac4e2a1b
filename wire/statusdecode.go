package wire

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/walletsync/walletsync"
)

// The status and state records are read by a purpose-made decoder, like
// events: a restart reads every customer's state record, and with
// encoding/json that alone took most of the recovery's time.

// recordBytes reads a string of a status or state record, its raw bytes
// valid until the next string is read; null reads as absent (nil, false).
func (d *decoder) recordBytes(field string) ([]byte, bool, error) {
	if d.isNull() {
		return nil, false, nil
	}
	b, ok := d.rawString()
	if !ok {
		return nil, false, fmt.Errorf("%s: %w", field, d.syntax("invalid JSON: expected a string"))
	}
	return b, true, nil
}

// recordString reads a string or null (""). Records are written from
// valid events, so invalid UTF-8 means a corrupt record.
func (d *decoder) recordString(field string) (string, error) {
	s, _, err := d.optionalString(field)
	return s, err
}

// optionalString is recordString that also tells null from "".
func (d *decoder) optionalString(field string) (_ string, present bool, _ error) {
	b, present, err := d.recordBytes(field)
	if err != nil || !present {
		return "", false, err
	}
	if d.nonASCII && !utf8.Valid(b) {
		return "", false, fmt.Errorf("%s: invalid UTF-8", field)
	}
	return string(b), true, nil
}

// recordTime reads a time string or null (0).
func (d *decoder) recordTime(field string) (int64, error) {
	b, present, err := d.recordBytes(field)
	if err != nil || !present {
		return 0, err
	}
	at, err := ParseTime(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", field, err)
	}
	return at, nil
}

// recordInt reads an integer or null (0); unsigned refuses a sign.
func (d *decoder) recordInt(field string, unsigned bool) (int64, uint64, error) {
	if d.isNull() {
		return 0, 0, nil
	}
	start := d.pos
	if err := d.number(); err != nil {
		return 0, 0, fmt.Errorf("%s: %w", field, err)
	}
	raw := d.data[start:d.pos]
	if unsigned {
		n, err := strconv.ParseUint(string(raw), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: not an unsigned integer: %s", field, walletsync.QuoteValue(string(raw)))
		}
		return 0, n, nil
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: not an integer: %s", field, walletsync.QuoteValue(string(raw)))
	}
	return n, 0, nil
}

// recordBool reads true, false or null (false).
func (d *decoder) recordBool(field string) (bool, error) {
	switch v, err := d.boolField(field); {
	case err != nil:
		return false, err
	case d.fieldErr != nil:
		return false, d.fieldErr
	default:
		return v == 1, nil
	}
}

// ParseStateRecord reads a wallet.state record (AppendStateRecord) back
// into what Fold.Restore takes: the status's customer, version,
// firstInstalledAt and passIssuedAt, and the registers. The fields derived
// from registers are not read: Restore derives them again. Unknown fields
// are skipped, null reads as absent, and a field given twice keeps its last
// value.
func ParseStateRecord(b []byte) (st walletsync.Status, regs []walletsync.Register, err error) {
	d := decoder{data: b}
	st, regs, err = d.stateRecord()
	if err != nil {
		return walletsync.Status{}, nil, recordError(st.CustomerID, err)
	}
	return st, regs, nil
}

func (d *decoder) stateRecord() (st walletsync.Status, regs []walletsync.Register, err error) {
	err = d.document(func(key []byte) (err error) {
		switch string(key) {
		case "customerId":
			st.CustomerID, err = d.recordString("customerId")
		case "version":
			_, st.Version, err = d.recordInt("version", true)
		case "firstInstalledAt":
			st.FirstInstalledAt, err = d.recordTime("firstInstalledAt")
		case "passIssuedAt":
			st.PassIssuedAt, err = d.recordTime("passIssuedAt")
		case "registers":
			regs, err = d.registers()
		default:
			err = d.skip(0)
		}
		return err
	})
	if err == nil && st.CustomerID == "" {
		err = errors.New("no customerId")
	}
	return st, regs, err
}

func (d *decoder) registers() ([]walletsync.Register, error) {
	if d.isNull() {
		return nil, nil
	}
	if d.pos >= len(d.data) || d.data[d.pos] != '[' {
		return nil, errors.New("registers: not an array")
	}
	regs := make([]walletsync.Register, 0, 1)
	err := d.array(func() error {
		reg, err := d.register()
		regs = append(regs, reg)
		return err
	})
	if err != nil {
		return nil, err
	}
	return regs, nil
}

func (d *decoder) register() (walletsync.Register, error) {
	var (
		reg      walletsync.Register
		platform string
		hasE     bool
		eType    string
		installs []int64
		hasInst  bool
	)
	err := d.object(func(key []byte) (err error) {
		switch string(key) {
		case "passId":
			reg.PassID, err = d.recordString("register passId")
		case "platform":
			platform, err = d.recordString("register platform")
		case "e":
			if d.isNull() {
				hasE, reg.LastEventID, reg.LastEventAt, eType = false, "", 0, ""
				break
			}
			hasE = true
			reg.LastEventID, eType, reg.LastEventAt, err = d.registerE()
		case "installs":
			installs, hasInst, err = d.installs()
		case "o":
			if d.isNull() {
				reg.ObservationID, reg.ObservationAt, reg.ObservationInstalled, reg.ObservationInstalledAt = "", 0, false, 0
				break
			}
			err = d.registerO(&reg)
			if err == nil && reg.ObservationID == "" {
				err = errors.New("bad register O: no eventId")
			}
		default:
			err = d.skip(1)
		}
		return err
	})
	if err != nil {
		return reg, err
	}
	switch platform {
	case "apple":
		reg.Platform = walletsync.PlatformApple
	case "google":
		reg.Platform = walletsync.PlatformGoogle
	default:
		return reg, fmt.Errorf("register platform %s", strconv.Quote(platform))
	}
	if hasE {
		if reg.LastEventID == "" || reg.LastEventAt == 0 {
			return reg, errors.New("bad register E: no eventId or occurredAt")
		}
		reg.LastEventUninstalled = eType == "uninstalled"
		if !hasInst {
			reg.InstallsUnknown = true
		} else if len(installs) > 0 {
			reg.Installs = installs
		}
	}
	if reg.LastEventID == "" && reg.ObservationID == "" {
		return reg, errors.New("empty register")
	}
	return reg, nil
}

func (d *decoder) registerE() (id, typ string, at int64, err error) {
	err = d.object(func(key []byte) (err error) {
		switch string(key) {
		case "eventId":
			id, err = d.recordString("register E eventId")
		case "type":
			typ, err = d.recordString("register E type")
		case "occurredAt":
			at, err = d.recordTime("register E occurredAt")
		default:
			err = d.skip(2)
		}
		return err
	})
	return id, typ, at, err
}

func (d *decoder) registerO(reg *walletsync.Register) error {
	reg.ObservationID, reg.ObservationAt, reg.ObservationInstalled, reg.ObservationInstalledAt = "", 0, false, 0
	err := d.object(func(key []byte) (err error) {
		switch string(key) {
		case "eventId":
			reg.ObservationID, err = d.recordString("register O eventId")
		case "installed":
			reg.ObservationInstalled, err = d.recordBool("register O installed")
		case "installedAt":
			reg.ObservationInstalledAt, err = d.recordTime("register O installedAt")
		case "occurredAt":
			reg.ObservationAt, err = d.recordTime("register O occurredAt")
		default:
			err = d.skip(2)
		}
		return err
	})
	if err == nil && reg.ObservationAt == 0 {
		err = errors.New("bad register O: no occurredAt")
	}
	return err
}

// installs reads the array of install times; present tells [] from an
// absent or null one, which marks a record written before registers kept
// them.
func (d *decoder) installs() (at []int64, present bool, err error) {
	if d.isNull() {
		return nil, false, nil
	}
	if d.pos >= len(d.data) || d.data[d.pos] != '[' {
		return nil, false, errors.New("register installs: not an array")
	}
	err = d.array(func() error {
		n, _, err := d.recordInt("register installs", false)
		at = append(at, n)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return at, true, nil
}

// ParseStatus reads a wallet.status record (SPEC §4): the customer, its
// eight fields and version; records written before firstInstalledAt and
// passIssuedAt existed read them as null. Anything else in the record (registers, in records of
// earlier versions) is skipped. The processors write wallet.status records
// without registers; their state lives in wallet.state.
func ParseStatus(b []byte) (walletsync.Status, error) {
	d := decoder{data: b}
	s, err := d.status()
	if err != nil {
		return walletsync.Status{}, recordError(s.CustomerID, err)
	}
	return s, nil
}

// recordError names the record, and its customer once known.
func recordError(customerID string, err error) error {
	if customerID != "" {
		return fmt.Errorf("status record %q: %w", customerID, err)
	}
	return fmt.Errorf("status record: %w", err)
}

func (d *decoder) status() (s walletsync.Status, err error) {
	var (
		wallet, last       string
		hasWallet, hasLast bool // false: null or absent
	)
	err = d.document(func(key []byte) (err error) {
		switch string(key) {
		case "customerId":
			s.CustomerID, err = d.recordString("customerId")
		case "walletStatus":
			wallet, hasWallet, err = d.optionalString("walletStatus")
		case "appleWalletInstalledAt":
			s.AppleInstalledAt, err = d.recordTime("appleWalletInstalledAt")
		case "googleWalletInstalledAt":
			s.GoogleInstalledAt, err = d.recordTime("googleWalletInstalledAt")
		case "walletLastChangedAt":
			s.LastChangedAt, err = d.recordTime("walletLastChangedAt")
		case "walletLastEvent":
			last, hasLast, err = d.optionalString("walletLastEvent")
		case "firstInstalledAt":
			s.FirstInstalledAt, err = d.recordTime("firstInstalledAt")
		case "passIssuedAt":
			s.PassIssuedAt, err = d.recordTime("passIssuedAt")
		case "version":
			_, s.Version, err = d.recordInt("version", true)
		default:
			err = d.skip(0)
		}
		return err
	})
	if err != nil {
		return s, err
	}
	if s.CustomerID == "" {
		return s, errors.New("no customerId")
	}
	if !hasWallet {
		return s, errors.New("missing walletStatus")
	}
	switch wallet {
	case "none":
	case "apple":
		s.Wallet = walletsync.WalletApple
	case "google":
		s.Wallet = walletsync.WalletGoogle
	case "both":
		s.Wallet = walletsync.WalletBoth
	default:
		return s, fmt.Errorf("walletStatus %s", walletsync.QuoteValue(wallet))
	}
	if hasLast {
		switch last {
		case "installed":
			s.LastEvent = walletsync.LastInstalled
		case "uninstalled":
			s.LastEvent = walletsync.LastUninstalled
		default:
			return s, fmt.Errorf("walletLastEvent %s", walletsync.QuoteValue(last))
		}
	}
	return s, nil
}
