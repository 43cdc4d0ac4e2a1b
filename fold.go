package walletsync

import (
	"cmp"
	"slices"
	"strings"
	"unsafe"
)

// Register is the fold state of one (customerId, passId, platform): the
// winning installed/uninstalled event E and the winning observation O
// (SPEC §3). Nothing else is kept, so a customer's state is bounded by its
// passes, not its events. The fields are flat, not two nested structs, so the
// three flags share one word: a register is 80 bytes.
// E is the register's last install/uninstall event (LastEvent…), O its last
// backfill observation (Observation…), as SPEC §2 names them.
type Register struct {
	PassID        string
	LastEventID   string // E's eventId; "" when there is no E
	ObservationID string // O's eventId; "" when there is no O

	LastEventAt            int64 // E.occurredAt; 0 when there is no E
	ObservationAt          int64 // O.occurredAt; 0 when there is no O
	ObservationInstalledAt int64 // O.installedAt; 0 when absent

	Platform             Platform
	LastEventUninstalled bool // E.type = uninstalled
	ObservationInstalled bool // O.installed

	// Installs are the times of this register's install events that
	// arrived in order (see BaseChange) and whose retention window
	// (RetentionDays) is still open at E: the installs a later event may
	// still change the retention of. InstallsUnknown is set on a register
	// restored from a record that predates them; its changes are then
	// unknown.
	Installs        []int64
	InstallsUnknown bool
}

// apply folds e into r and reports whether E or O changed.
func (r *Register) apply(e *Event) bool {
	if e.Type == TypeObserved {
		// O is the largest by (occurredAt, eventId).
		if r.ObservationID != "" && (e.OccurredAt < r.ObservationAt || e.OccurredAt == r.ObservationAt && e.ID <= r.ObservationID) {
			return false
		}
		r.ObservationID, r.ObservationAt, r.ObservationInstalled, r.ObservationInstalledAt = e.ID, e.OccurredAt, e.Installed, e.InstalledAt
		return true
	}
	// E is the largest by (occurredAt, rank, eventId), rank(uninstalled) = 1.
	uninst := e.Type == TypeUninstalled
	if r.LastEventID != "" {
		if e.OccurredAt != r.LastEventAt {
			if e.OccurredAt < r.LastEventAt {
				return false
			}
		} else if uninst != r.LastEventUninstalled {
			if !uninst {
				return false
			}
		} else if e.ID <= r.LastEventID {
			return false
		}
	}
	r.LastEventID, r.LastEventAt, r.LastEventUninstalled = e.ID, e.OccurredAt, uninst
	return true
}

// State is the register's state by SPEC §3: an observation repairs the
// events only when it is newer than E and disagrees with it.
func (r *Register) State() (installed bool, changedAt, installedAt int64) {
	hasE, hasO := r.LastEventID != "", r.ObservationID != ""
	if hasO && (!hasE || r.ObservationAt > r.LastEventAt && r.ObservationInstalled == r.LastEventUninstalled) {
		if !r.ObservationInstalled {
			return false, r.ObservationAt, 0
		}
		if r.ObservationInstalledAt != 0 {
			return true, r.ObservationAt, r.ObservationInstalledAt
		}
		return true, r.ObservationAt, r.ObservationAt
	}
	if r.LastEventUninstalled {
		return false, r.LastEventAt, 0
	}
	return true, r.LastEventAt, r.LastEventAt
}

// Silent reports a register that says nothing about the customer: no
// install or uninstall event, only observations that the pass is not
// installed — what a backfill reports for every platform a pass was never
// added to. Taken literally, SPEC §3 would make such a register's
// observation time the customer's walletLastChangedAt, with
// walletLastEvent "uninstalled", at every backfill: an installed customer
// would read as just uninstalled, and every customer would change every
// night. It is kept (an install event may still arrive and be repaired
// by it, whatever the order) but counts for nothing in the status.
func (r *Register) Silent() bool { return r.LastEventID == "" && !r.ObservationInstalled }

// FieldsOf computes a customer's status fields from its registers.
func FieldsOf(regs []Register) Fields {
	var f Fields
	lastUninstalled := false
	effective := 0
	for i := range regs {
		r := &regs[i]
		if r.Silent() {
			continue
		}
		effective++
		inst, changedAt, installedAt := r.State()
		if inst {
			f.Wallet |= platformBit(r.Platform)
			at := &f.GoogleInstalledAt
			if r.Platform == PlatformApple {
				at = &f.AppleInstalledAt
			}
			if *at == 0 || installedAt < *at {
				*at = installedAt
			}
		}
		switch {
		case changedAt > f.LastChangedAt:
			f.LastChangedAt, lastUninstalled = changedAt, !inst
		case changedAt == f.LastChangedAt && !inst:
			lastUninstalled = true
		}
	}
	switch {
	case effective == 0:
	case lastUninstalled:
		f.LastEvent = LastUninstalled
	default:
		f.LastEvent = LastInstalled
	}
	return f
}

type customer struct {
	fields  Fields
	version uint64
	regs    []Register
	// inline backs regs while a customer has one register, as most do, and
	// text holds the bytes of the customer id (the map key) and of that
	// register's pass id. With them in one allocation, the lookup of an
	// event's customer and register touches one object, not four: the fold
	// is bound by cache misses, not by instructions.
	inline [1]Register
	text   [textLen]byte
	// dirty: the registers changed since the last TakeChanged. It sits in
	// what would be text's 48th byte, so a customer stays 240 bytes (224
	// before the two fields of issue 18).
	dirty bool
}

const textLen = 47

// newCustomer makes a customer with its first register and returns the
// string to key it by.
func newCustomer(id, passID string, p Platform) (*customer, string) {
	c := &customer{}
	c.regs = c.inline[:0:1]
	var key string
	if n := len(id); n+len(passID) <= textLen {
		copy(c.text[:], id)
		copy(c.text[n:], passID)
		// The strings point into c, which keeps it alive, and text is never
		// written again, so they are as immutable as any Go string.
		key = unsafe.String(&c.text[0], n)
		if passID != "" {
			passID = unsafe.String(&c.text[n], len(passID))
		}
	} else {
		both := id + passID
		key, passID = both[:len(id)], both[len(id):]
	}
	c.regs = append(c.regs, Register{PassID: passID, Platform: p})
	return c, key
}

// Fold is the incremental fold of SPEC §3 over deduplicated events: Apply
// one event at a time and learn whether the customer's status changed. Any
// order of the same events ends in the same Fields. Not safe for concurrent
// use; a streaming processor keeps one Fold per partition.
type Fold struct {
	customers map[string]*customer
	// changed lists the ids of the dirty customers, for TakeChanged, when
	// track is set: other users of a Fold keep no such list.
	changed []string
	track   bool
	// retention is the block ApplyBase's RetentionChanges are cut from.
	retention []RetentionChange
	// uninstallsOnly turns the device-removal rule off (AllUninstalls).
	uninstallsOnly bool
	// newPass: the last event applied was the customer's first of its
	// pass (Applied.NewPass). A field, not a fifth result of apply, which
	// is kept to four so that they stay in registers.
	newPass bool
}

// AllUninstalls turns the device-removal rule of SPEC §3 off: every
// uninstall becomes its register's E, whatever the device counts say. For
// a deployment whose source reports the counts wrongly; the rule is on by
// default.
func (f *Fold) AllUninstalls() { f.uninstallsOnly = true }

// IsDeviceRemoval reports whether the fold treats e as a device removal:
// one that never becomes E and leaves the pass installed.
func (f *Fold) IsDeviceRemoval(e *Event) bool { return !f.uninstallsOnly && e.DeviceRemoval() }

// NewFold returns an empty Fold.
func NewFold() *Fold { return &Fold{customers: make(map[string]*customer)} }

// Apply folds a valid, deduplicated event in. It returns the customer's
// status and whether its fields changed (and so its version went up). An
// event that loses to what the register holds changes nothing.
func (f *Fold) Apply(e *Event) (Status, bool) {
	st, _, changed, _ := f.apply(e)
	return st, changed
}

// BaseChange is what an install or uninstall event does to its register's
// installed state (observations ignored, as the installed-base insight
// counts it) at its place in the register's history: +1 installed after
// not, -1 the reverse, 0 no change. Summed over a register's events up to
// an instant, the changes give its state then, so an installed base is a
// plain sum per day. It is known only for an event that ranks after every
// earlier one of its register (an event arriving in order); a late event
// also changes its successor's, which this fold does not keep.
type BaseChange struct {
	Delta int8
	Known bool
	// Retention is what the event did to the retention of its register's
	// installs (known with the change): an install adds its own entry, and
	// a change of ±1 corrects the installs whose windows it falls in.
	Retention []RetentionChange
}

// RetentionDays are the retention insight's horizons: an install is
// retained after N days if its register's E at install + N days (events up
// to and including that instant) is an install.
func RetentionDays() [3]int64 { return [3]int64{1, 7, 30} }

// RetentionChange is a change to one install's retention. Summed per
// install over its entries — its own (Initial, every horizon 1, since an
// install arriving in order is its register's E) and the corrections of
// the events after it — Delta gives whether it is retained after each of
// RetentionDays, for a register whose events all arrived in order.
type RetentionChange struct {
	InstallAt int64
	Initial   bool
	Delta     [3]int8
}

const dayMs = 86_400_000

// Applied is what ApplyBase did with one event.
type Applied struct {
	// Status is the customer's status after the event.
	Status Status
	// RegistersChanged: the customer's state changed: its registers, or
	// the first install or issue it keeps beside them. They can change
	// while the status does not (a second pass installed where one
	// already is): whoever persists state for recovery must persist it
	// then too.
	RegistersChanged bool
	// StatusChanged: the status fields changed (and Version with them).
	StatusChanged bool
	// NewPass: the event is the first of its (non-empty) pass for the
	// customer that the fold has seen: the customer holds the pass, which
	// whoever resolves events by pass must learn (SPEC §6).
	NewPass bool
	// Base is the event's BaseChange.
	Base BaseChange
}

// ApplyBase is Apply that also reports whether the customer's registers
// changed, and the event's BaseChange.
func (f *Fold) ApplyBase(e *Event) Applied {
	f.newPass = false
	st, regs, changed, base := f.apply(e)
	return Applied{Status: st, RegistersChanged: regs, StatusChanged: changed, Base: base, NewPass: f.newPass}
}

// apply is ApplyBase with the results apart: small enough to stay in
// registers, where an Applied returned from the fold's body was measured
// 7% slower (BenchmarkFold).
func (f *Fold) apply(e *Event) (st Status, registersChanged, statusChanged bool, base BaseChange) {
	c := f.customers[e.CustomerID]
	if e.Type == TypeIssued || e.Type == TypeUninstalled && f.IsDeviceRemoval(e) {
		return f.applyBeside(c, e)
	}
	if c == nil {
		var key string
		c, key = newCustomer(e.CustomerID, e.PassID, e.Platform)
		f.customers[key] = c
		f.newPass = e.PassID != ""
	}
	// The first install is the least over every install seen, whether or
	// not it wins its register.
	first := c.fields.FirstInstalledAt
	if at := installTime(e); at != 0 && (first == 0 || at < first) {
		first = at
	}
	var r *Register
	for i := range c.regs {
		if c.regs[i].Platform == e.Platform && c.regs[i].PassID == e.PassID {
			r = &c.regs[i]
			break
		}
	}
	if r == nil {
		// A new register; a new pass unless the other platform has it.
		f.newPass = e.PassID != "" && !c.holds(e.PassID)
		c.regs = append(c.regs, Register{PassID: e.PassID, Platform: e.Platform})
		r = &c.regs[len(c.regs)-1]
	}
	wasInstalled := r.LastEventID != "" && !r.LastEventUninstalled
	if r.apply(e) {
		if e.Type != TypeObserved && !r.InstallsUnknown {
			base = BaseChange{Delta: b2i(e.Type == TypeInstalled) - b2i(wasInstalled), Known: true}
			base.Retention = r.retain(e, base.Delta, f)
		}
		registersChanged = true
	} else if first != c.fields.FirstInstalledAt {
		registersChanged = true // an earlier install that lost its register
	}
	if registersChanged {
		f.markChanged(c, e.CustomerID)
		if nf := c.status(FieldsOf(c.regs), first); nf != c.fields {
			c.fields = nf
			c.version++
			statusChanged = true
		}
	}
	return Status{CustomerID: e.CustomerID, Fields: c.fields, Version: c.version}, registersChanged, statusChanged, base
}

// status completes the fields derived from the registers with the two the
// customer keeps beside them (first: the earliest install now known). A
// customer has a status once a register counts, a pass was issued or an
// install is known (SPEC §3); until then every field is empty. The last
// keeps a status whose registers all fell silent (an installed observation
// superseded by a not-installed one) from taking back a firstInstalledAt a
// CRM already acted on. The two live in fields alone, so that a customer
// stays within a 240-byte allocation.
func (c *customer) status(f Fields, first int64) Fields {
	f.PassIssuedAt = c.fields.PassIssuedAt
	f.FirstInstalledAt = first
	return f
}

// installTime is when e says the customer installed a pass, for
// firstInstalledAt: an install's occurredAt, an installed observation's
// installedAt (else its occurredAt); 0 for any other event.
func installTime(e *Event) int64 {
	switch {
	case e.Type == TypeInstalled:
		return e.OccurredAt
	case e.Type == TypeObserved && e.Installed && e.InstalledAt != 0:
		return e.InstalledAt
	case e.Type == TypeObserved && e.Installed:
		return e.OccurredAt
	}
	return 0
}

func (f *Fold) markChanged(c *customer, id string) {
	if f.track && !c.dirty {
		c.dirty = true
		f.changed = append(f.changed, id)
	}
}

// applyBeside folds the events that touch no register: an issued event
// (passIssuedAt only ever moves earlier) and a device removal (it changes
// nothing, SPEC §3). Both are rare, so they stay off apply's hot path.
func (f *Fold) applyBeside(c *customer, e *Event) (st Status, registersChanged, statusChanged bool, base BaseChange) {
	if e.Type != TypeIssued {
		// A device removal changes no register, in any order of arrival:
		// its base change is a known 0, and it corrects no retention.
		base.Known = true
		if c == nil {
			return Status{CustomerID: e.CustomerID}, false, false, base
		}
		return Status{CustomerID: e.CustomerID, Fields: c.fields, Version: c.version}, false, false, base
	}
	f.newPass = e.PassID != "" && (c == nil || !c.holds(e.PassID))
	if c == nil {
		var key string
		c, key = newCustomer(e.CustomerID, "", 0)
		c.regs = c.regs[:0]
		f.customers[key] = c
	}
	if at := c.fields.PassIssuedAt; at == 0 || e.OccurredAt < at {
		c.fields.PassIssuedAt = e.OccurredAt
		c.fields = c.status(FieldsOf(c.regs), c.fields.FirstInstalledAt)
		c.version++
		f.markChanged(c, e.CustomerID)
		registersChanged, statusChanged = true, true
	}
	return Status{CustomerID: e.CustomerID, Fields: c.fields, Version: c.version}, registersChanged, statusChanged, base
}

// retain applies an event arriving in order (so after every install in
// r.Installs) to the retention of those installs, and records it when it
// is one. Installs whose longest window has closed are let go.
func (r *Register) retain(e *Event, delta int8, f *Fold) []RetentionChange {
	if len(r.Installs) == 0 && e.Type != TypeInstalled {
		return nil
	}
	days := RetentionDays()
	// The changes are written straight into the fold's block: one per
	// install kept at most, and the event's own.
	out := f.retentionRoom(len(r.Installs) + 1)
	// Filtered in place: the register alone holds its Installs (Registers
	// copies them, Restore takes them over).
	keep := r.Installs[:0]
	for _, at := range r.Installs {
		if delta != 0 {
			var d [3]int8
			for k, n := range days {
				if e.OccurredAt <= at+n*dayMs {
					d[k] = delta
				}
			}
			if d != ([3]int8{}) {
				out = append(out, RetentionChange{InstallAt: at, Delta: d})
			}
		}
		if e.OccurredAt <= at+days[len(days)-1]*dayMs {
			keep = append(keep, at)
		}
	}
	if e.Type == TypeInstalled {
		out = append(out, RetentionChange{InstallAt: e.OccurredAt, Initial: true, Delta: [3]int8{1, 1, 1}})
		keep = append(keep, e.OccurredAt)
	}
	if len(keep) == 0 {
		keep = nil
	}
	r.Installs = keep
	if len(out) == 0 {
		return nil
	}
	// Kept in the block, and capped at its length: a caller may keep and
	// even append to it.
	f.retention = f.retention[:len(f.retention)+len(out)]
	return out[:len(out):len(out)]
}

// retentionRoom returns an empty slice with room for n changes at the end
// of the fold's current block, so that the changes of most events cost no
// allocation of their own; retain keeps what it writes there.
func (f *Fold) retentionRoom(n int) []RetentionChange {
	if cap(f.retention)-len(f.retention) < n {
		f.retention = make([]RetentionChange, 0, max(256, n))
	}
	end := len(f.retention)
	return f.retention[end:end:cap(f.retention)]
}

func b2i(b bool) int8 {
	if b {
		return 1
	}
	return 0
}

// Status returns a customer's current status.
func (f *Fold) Status(customerID string) (Status, bool) {
	c, ok := f.customers[customerID]
	if !ok {
		return Status{}, false
	}
	return Status{CustomerID: customerID, Fields: c.fields, Version: c.version}, true
}

// TrackChanged makes the fold list the customers whose registers change,
// for TakeChanged. It costs a list entry per changed customer until taken,
// so only a fold whose state is persisted asks for it.
func (f *Fold) TrackChanged() { f.track = true }

// TakeChanged calls fn with every customer whose registers changed since
// the previous call (or since TrackChanged), once each, and forgets them:
// what a processor persists at a checkpoint.
func (f *Fold) TakeChanged(fn func(customerID string)) {
	for _, id := range f.changed {
		if c := f.customers[id]; c != nil && c.dirty {
			c.dirty = false
			fn(id)
		}
	}
	clear(f.changed)
	f.changed = f.changed[:0]
}

// Changed is the number of customers TakeChanged would report.
func (f *Fold) Changed() int { return len(f.changed) }

// Record returns what a customer's state record holds, for encoding it
// (wire.AppendStateRecord) on the processor's hot path: its status (with
// firstInstalledAt and passIssuedAt, which Restore takes back) and its
// registers, not copied: regs is the fold's own and valid until the next
// Apply. ok is false for an unknown customer.
func (f *Fold) Record(customerID string) (st Status, regs []Register, ok bool) {
	c := f.customers[customerID]
	if c == nil {
		return Status{}, nil, false
	}
	return Status{CustomerID: customerID, Fields: c.fields, Version: c.version}, c.regs, true
}

// holds reports whether the customer has a register of the pass, on either
// platform.
func (c *customer) holds(passID string) bool {
	for i := range c.regs {
		if c.regs[i].PassID == passID {
			return true
		}
	}
	return false
}

// Registers returns a copy of a customer's registers, for persisting state.
func (f *Fold) Registers(customerID string) []Register {
	c, ok := f.customers[customerID]
	if !ok {
		return nil
	}
	regs := slices.Clone(c.regs)
	for i := range regs {
		regs[i].Installs = slices.Clone(regs[i].Installs)
	}
	return regs
}

// Restore replaces a customer's state with persisted registers and version,
// as a processor does when it takes over a partition. The fields are derived
// again from the registers rather than trusted. The fold takes the
// registers' Installs over: the caller must not change them afterwards.
//
// st gives the customer, its version and the two times kept beside the
// registers (firstInstalledAt, passIssuedAt); its other fields are ignored.
// A record written before firstInstalledAt existed has none: it is then
// the earliest install the registers still show (an installed E, an
// installed O, the installs kept for retention), which misses an install
// whose register has since been uninstalled and whose retention windows
// have closed.
func (f *Fold) Restore(st Status, regs []Register) Status {
	id := st.CustomerID
	if len(regs) == 0 && st.PassIssuedAt == 0 {
		delete(f.customers, id)
		return Status{CustomerID: id}
	}
	var c *customer
	var key string
	if len(regs) == 0 {
		c, key = newCustomer(id, "", 0)
		c.regs = c.regs[:0]
	} else {
		c, key = newCustomer(id, regs[0].PassID, regs[0].Platform)
		c.regs[0] = regs[0]
		c.regs[0].PassID = c.inline[0].PassID
		c.regs = append(c.regs, regs[1:]...)
	}
	c.version = st.Version
	c.fields.PassIssuedAt = st.PassIssuedAt
	c.fields = c.status(FieldsOf(c.regs), earliest(st.FirstInstalledAt, registersFirstInstall(c.regs)))
	f.customers[key] = c
	return Status{CustomerID: id, Fields: c.fields, Version: st.Version}
}

// registersFirstInstall is the earliest install the registers show.
func registersFirstInstall(regs []Register) int64 {
	var first int64
	for i := range regs {
		r := &regs[i]
		if r.LastEventID != "" && !r.LastEventUninstalled {
			first = earliest(first, r.LastEventAt)
		}
		if r.ObservationInstalled {
			first = earliest(first, cmp.Or(r.ObservationInstalledAt, r.ObservationAt))
		}
		for _, at := range r.Installs {
			first = earliest(first, at)
		}
	}
	return first
}

// earliest is the lesser of two times, 0 being none.
func earliest(a, b int64) int64 {
	if a == 0 || b != 0 && b < a {
		return b
	}
	return a
}

// Len is the number of customers.
func (f *Fold) Len() int { return len(f.customers) }

// Statuses returns every customer's status sorted by customerId bytes,
// except customers whose registers are all silent and who have no issued
// pass: they have no status yet (the processors never emit one for them
// either).
func (f *Fold) Statuses() []Status {
	out := make([]Status, 0, len(f.customers))
	for id, c := range f.customers {
		if c.version == 0 {
			continue
		}
		out = append(out, Status{CustomerID: id, Fields: c.fields, Version: c.version})
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.CustomerID, b.CustomerID) })
	return out
}
