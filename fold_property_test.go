package walletsync_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/walletsync/walletsync"
	"github.com/walletsync/walletsync/internal/synth"
	"github.com/walletsync/walletsync/wire"
)

// oracle is SPEC §3 written as plainly as possible, from scratch over a set
// of deduplicated events: it is what the incremental Fold is checked against.
func oracle(events []walletsync.Event) map[string]walletsync.Fields {
	type regKey struct {
		customer, pass string
		platform       walletsync.Platform
	}
	rank := func(e *walletsync.Event) int {
		if e.Type == walletsync.TypeUninstalled {
			return 1
		}
		return 0
	}
	eWins := func(a, b *walletsync.Event) bool { // a beats b
		if a.OccurredAt != b.OccurredAt {
			return a.OccurredAt > b.OccurredAt
		}
		if rank(a) != rank(b) {
			return rank(a) > rank(b)
		}
		return a.ID > b.ID
	}
	oWins := func(a, b *walletsync.Event) bool {
		if a.OccurredAt != b.OccurredAt {
			return a.OccurredAt > b.OccurredAt
		}
		return a.ID > b.ID
	}
	E := map[regKey]*walletsync.Event{}
	O := map[regKey]*walletsync.Event{}
	var keys []regKey
	// firstInstalledAt and passIssuedAt: minima over every event, whatever
	// wins the registers.
	first, issued := map[string]int64{}, map[string]int64{}
	least := func(m map[string]int64, c string, at int64) {
		if v, ok := m[c]; !ok || at < v {
			m[c] = at
		}
	}
	for i := range events {
		e := &events[i]
		switch {
		case e.Type == walletsync.TypeIssued:
			least(issued, e.CustomerID, e.OccurredAt)
			continue // no register
		case e.Type == walletsync.TypeInstalled:
			least(first, e.CustomerID, e.OccurredAt)
		case e.Type == walletsync.TypeObserved && e.Installed && e.InstalledAt != 0:
			least(first, e.CustomerID, e.InstalledAt)
		case e.Type == walletsync.TypeObserved && e.Installed:
			least(first, e.CustomerID, e.OccurredAt)
		}
		r := e.Registration
		if e.Type == walletsync.TypeUninstalled && r != nil && r.HasActiveCount && r.HasTotalCount && r.ActiveCount >= 1 && r.TotalCount > r.ActiveCount {
			continue // a device removal never becomes E
		}
		k := regKey{e.CustomerID, e.PassID, e.Platform}
		if E[k] == nil && O[k] == nil {
			keys = append(keys, k)
		}
		if e.Type == walletsync.TypeObserved {
			if O[k] == nil || oWins(e, O[k]) {
				O[k] = e
			}
		} else if E[k] == nil || eWins(e, E[k]) {
			E[k] = e
		}
	}
	type regState struct {
		platform               walletsync.Platform
		installed              bool
		changedAt, installedAt int64
	}
	per := map[string][]regState{}
	for _, k := range keys {
		e, o := E[k], O[k]
		if e == nil && !o.Installed {
			continue // only "not installed" observations: says nothing
		}
		var s regState
		s.platform = k.platform
		if o != nil && (e == nil || o.OccurredAt > e.OccurredAt && o.Installed != (e.Type == walletsync.TypeInstalled)) {
			s.installed, s.changedAt = o.Installed, o.OccurredAt
			if o.Installed {
				s.installedAt = o.OccurredAt
				if o.InstalledAt != 0 {
					s.installedAt = o.InstalledAt
				}
			}
		} else {
			s.installed, s.changedAt = e.Type == walletsync.TypeInstalled, e.OccurredAt
			if s.installed {
				s.installedAt = e.OccurredAt
			}
		}
		per[k.customer] = append(per[k.customer], s)
	}
	out := map[string]walletsync.Fields{}
	for c, regs := range per {
		var f walletsync.Fields
		if len(regs) == 0 {
			continue
		}
		for _, r := range regs {
			if r.changedAt > f.LastChangedAt {
				f.LastChangedAt = r.changedAt
			}
			if !r.installed {
				continue
			}
			if r.platform == walletsync.PlatformApple {
				f.Wallet |= walletsync.WalletApple
				if f.AppleInstalledAt == 0 || r.installedAt < f.AppleInstalledAt {
					f.AppleInstalledAt = r.installedAt
				}
			} else {
				f.Wallet |= walletsync.WalletGoogle
				if f.GoogleInstalledAt == 0 || r.installedAt < f.GoogleInstalledAt {
					f.GoogleInstalledAt = r.installedAt
				}
			}
		}
		f.LastEvent = walletsync.LastInstalled
		for _, r := range regs {
			if r.changedAt == f.LastChangedAt && !r.installed {
				f.LastEvent = walletsync.LastUninstalled
			}
		}
		out[c] = f
	}
	for c, at := range issued {
		f := out[c] // a customer with only issued passes has a status
		f.PassIssuedAt = at
		out[c] = f
	}
	for c, at := range first {
		f := out[c] // a known install keeps a status, registers silent or not
		f.FirstInstalledAt = at
		out[c] = f
	}
	return out
}

func foldAll(events []walletsync.Event) map[string]walletsync.Fields {
	f := walletsync.NewFold()
	d := walletsync.NewDeduper(0)
	for i := range events {
		if !d.Seen(events[i].ID, 0) {
			f.Apply(&events[i])
		}
	}
	out := map[string]walletsync.Fields{}
	for _, s := range f.Statuses() {
		out[s.CustomerID] = s.Fields
	}
	return out
}

// equalStatuses compares two folds' statuses; a customer missing from one
// side equals one whose fields are all empty (only silent registers, or
// back to silent), which the oracle leaves out.
func equalStatuses(a, b map[string]walletsync.Fields) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

// withDuplicates inserts, after the first occurrence of random events,
// later records with the same eventId and any content: SPEC §2 says they
// are dropped whatever they hold.
func withDuplicates(rng *rand.Rand, evs []walletsync.Event) []walletsync.Event {
	out := slices.Clone(evs)
	for range rng.IntN(len(evs) + 1) {
		i := rng.IntN(len(out))
		dup := out[i]
		if rng.IntN(2) == 0 {
			// Same id, different content.
			dup.Type = walletsync.TypeUninstalled
			dup.Installed, dup.InstalledAt = false, 0
			dup.OccurredAt += 60_000
		}
		j := i + 1 + rng.IntN(len(out)-i)
		out = slices.Insert(out, j, dup)
	}
	return out
}

func TestFoldPermutationsAndDuplicates(t *testing.T) {
	seed := uint64(20261122)
	rng := rand.New(rand.NewPCG(seed, 1))
	for iter := range 400 {
		evs := synth.Random(rng, 1+rng.IntN(40))
		want := oracle(evs)
		if got := foldAll(evs); !equalStatuses(got, want) {
			t.Fatalf("seed %d iter %d: fold differs from the oracle\n got %v\nwant %v\nevents %+v", seed, iter, got, want, evs)
		}
		for p := range 5 {
			perm := slices.Clone(evs)
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			stream := withDuplicates(rng, perm)
			if got := foldAll(stream); !equalStatuses(got, want) {
				t.Fatalf("seed %d iter %d perm %d: permuted and duplicated stream folds differently\n got %v\nwant %v", seed, iter, p, got, want)
			}
		}
	}
}

// firstInstalledAt only ever moves earlier, along any arrival order, and
// passIssuedAt too: a CRM can reward "first install" once.
func TestFirstInstallOnlyMovesEarlier(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for iter := range 300 {
		evs := synth.Random(rng, 1+rng.IntN(50))
		for p := range 4 {
			perm := withDuplicates(rng, slices.Clone(evs))
			rng.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
			f, d := walletsync.NewFold(), walletsync.NewDeduper(0)
			last := map[string]walletsync.Fields{}
			for i := range perm {
				if d.Seen(perm[i].ID, 0) {
					continue
				}
				st, _ := f.Apply(&perm[i])
				was := last[st.CustomerID]
				for _, c := range []struct {
					name      string
					was, next int64
				}{{"firstInstalledAt", was.FirstInstalledAt, st.FirstInstalledAt}, {"passIssuedAt", was.PassIssuedAt, st.PassIssuedAt}} {
					if c.was != 0 && (c.next == 0 || c.next > c.was) {
						t.Fatalf("iter %d perm %d event %d (%+v): %s moved from %d to %d", iter, p, i, perm[i], c.name, c.was, c.next)
					}
				}
				last[st.CustomerID] = st.Fields
			}
		}
	}
}

// Device removals change nothing, the rule can be turned off, and a fold
// that ignores the counts is the round-1 fold.
func TestDeviceRemovalRule(t *testing.T) {
	removal := func(id string, at int64, active, total int64) walletsync.Event {
		return walletsync.Event{ID: id, Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformApple, CustomerID: "c", PassID: "p", OccurredAt: at,
			Registration: &walletsync.Registration{ActiveCount: active, TotalCount: total, HasActiveCount: true, HasTotalCount: true}}
	}
	install := walletsync.Event{ID: "i", Type: walletsync.TypeInstalled, Platform: walletsync.PlatformApple, CustomerID: "c", PassID: "p", OccurredAt: 1772359200000}
	for _, c := range []struct {
		name       string
		e          walletsync.Event
		removal    bool
		allRemoved bool // the status with the rule off
	}{
		{"another device still holds it", removal("r1", 1772359300000, 1, 2), true, true},
		{"last device", removal("r2", 1772359300000, 0, 2), false, true},
		{"counts equal: no device lost", removal("r3", 1772359300000, 1, 1), false, true},
		{"only activeCount", walletsync.Event{ID: "r4", Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformApple, CustomerID: "c", PassID: "p",
			OccurredAt: 1772359300000, Registration: &walletsync.Registration{ActiveCount: 1, HasActiveCount: true}}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, rule := range []bool{true, false} {
				f := walletsync.NewFold()
				if !rule {
					f.AllUninstalls()
				}
				e := c.e
				f.Apply(&install)
				if got := f.IsDeviceRemoval(&e); got != (rule && c.removal) {
					t.Errorf("rule %v: IsDeviceRemoval = %v", rule, got)
				}
				st, changed := f.Apply(&e)
				stillInstalled := st.Wallet == walletsync.WalletApple
				if want := rule && c.removal; stillInstalled != want || changed == want {
					t.Errorf("rule %v: after the uninstall installed=%v changed=%v, want installed=%v", rule, stillInstalled, changed, want)
				}
			}
		})
	}
}

// Apply reports a change exactly when the from-scratch fold of the prefix
// changes for that customer, and version counts those changes.
func TestApplyReportsChangesExactly(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for iter := range 200 {
		evs := synth.Random(rng, 1+rng.IntN(30))
		f := walletsync.NewFold()
		versions := map[string]uint64{}
		prev := map[string]walletsync.Fields{}
		for i := range evs {
			st, changed := f.Apply(&evs[i])
			now := oracle(evs[:i+1])
			c := evs[i].CustomerID
			// A customer with only silent registers has empty fields and
			// no status yet: its first event changes nothing.
			wantChanged := now[c] != prev[c]
			if changed != wantChanged {
				t.Fatalf("iter %d event %d: Apply changed=%v, oracle says %v (before %+v after %+v)", iter, i, changed, wantChanged, prev[c], now[c])
			}
			if changed {
				versions[c]++
			}
			if st.Fields != now[c] || st.Version != versions[c] {
				t.Fatalf("iter %d event %d: Apply returned %+v, want %+v version %d", iter, i, st, now[c], versions[c])
			}
			prev = now
		}
	}
}

// Applying an event again never changes anything: the fold is idempotent,
// which is what makes a duplicate older than the dedupe window harmless.
func TestApplyIdempotent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for range 100 {
		evs := synth.Random(rng, 20)
		f := walletsync.NewFold()
		for i := range evs {
			f.Apply(&evs[i])
		}
		for i := range evs {
			if _, changed := f.Apply(&evs[i]); changed {
				t.Fatalf("re-applying %+v changed the status", evs[i])
			}
		}
	}
}

// State restored from persisted registers carries on exactly like the
// original.
func TestRestoreFromRegisters(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for range 100 {
		evs := synth.Random(rng, 30)
		cut := rng.IntN(len(evs))
		a := walletsync.NewFold()
		for i := range evs[:cut] {
			a.Apply(&evs[i])
		}
		b := walletsync.NewFold()
		// Every customer is persisted (wallet.state gets every register
		// change), also those without a status yet.
		seen := map[string]bool{}
		for _, e := range evs[:cut] {
			if seen[e.CustomerID] {
				continue
			}
			seen[e.CustomerID] = true
			s, _ := a.Status(e.CustomerID)
			r := b.Restore(s, a.Registers(s.CustomerID))
			if r != s {
				t.Fatalf("restored %+v, want %+v", r, s)
			}
		}
		for i := range evs[cut:] {
			sa, ca := a.Apply(&evs[cut+i])
			sb, cb := b.Apply(&evs[cut+i])
			if sa != sb || ca != cb {
				t.Fatalf("after restore: %+v %v vs %+v %v", sb, cb, sa, ca)
			}
		}
	}
}

func TestDeduperWindow(t *testing.T) {
	w := walletsync.NewDeduper(0)
	if w.Seen("a", 0) || !w.Seen("a", 1<<60) {
		t.Fatal("a window of zero must remember forever")
	}
	d := walletsync.NewDeduper(walletsync.DefaultDedupeWindow)
	day := int64(24 * 3600 * 1000)
	if d.Seen("x", 0) {
		t.Fatal("first sighting reported as duplicate")
	}
	if !d.Seen("x", 7*day-1) {
		t.Fatal("duplicate inside the window not reported")
	}
	if d.Seen("y", day) || d.Len() != 2 {
		t.Fatal("y")
	}
	if n := d.Expire(7 * day); n != 1 || d.Len() != 1 {
		t.Fatalf("Expire forgot %d ids, left %d; want 1 and 1", n, d.Len())
	}
	if d.Seen("x", 7*day) {
		t.Fatal("an id past its window must count as new again")
	}
	// Remember keeps the earliest sighting, as a restore from several
	// snapshots needs.
	d.Remember(walletsync.KeyOf("z"), 5*day)
	d.Remember(walletsync.KeyOf("z"), 2*day)
	if !d.Seen("z", 9*day-1) {
		t.Fatal("z first seen at day 2 must still be known just before day 9")
	}
	if d.Seen("z", 9*day) {
		t.Fatal("z first seen at day 2 must be forgotten 7 days later")
	}
	a1, a2, b := walletsync.KeyOf("a"), walletsync.KeyOf("a"), walletsync.KeyOf("b")
	if a1 == b || a1 != a2 {
		t.Fatal("KeyOf is not a stable, distinguishing hash")
	}
}

// A status record carries the registers: parsing it and restoring gives the
// same status, version and later behaviour.
func TestStateRecordRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	for range 200 {
		evs := synth.Random(rng, 25)
		a := walletsync.NewFold()
		for i := range evs {
			a.Apply(&evs[i])
		}
		b := walletsync.NewFold()
		for _, s := range a.Statuses() {
			rec := wire.AppendStateRecord(nil, &s, a.Registers(s.CustomerID))
			if !json.Valid(rec) {
				t.Fatalf("invalid JSON %s", rec)
			}
			rs, regs, err := wire.ParseStateRecord(rec)
			if err != nil {
				t.Fatalf("%s: %v", rec, err)
			}
			if got := b.Restore(rs, regs); got != s {
				t.Fatalf("restored %+v from %s, want %+v", got, rec, s)
			}
			if want := a.Registers(s.CustomerID); !reflect.DeepEqual(regs, want) {
				t.Fatalf("registers from %s:\n got %+v\nwant %+v", rec, regs, want)
			}
		}
	}
	// A record written before registers kept their installs: the
	// register's changes are unknown from then on (they would miss the
	// corrections of installs it no longer lists).
	_, regs, err := wire.ParseStateRecord([]byte(`{"customerId":"c","version":1,"registers":[{"passId":"","platform":"apple","e":{"eventId":"a","type":"installed","occurredAt":"2026-03-01T10:00:00Z"}}]}`))
	if err != nil || len(regs) != 1 || !regs[0].InstallsUnknown {
		t.Fatalf("old record: %+v, %v", regs, err)
	}
	f := walletsync.NewFold()
	f.Restore(walletsync.Status{CustomerID: "c", Version: 1}, regs)
	later := walletsync.Event{ID: "b", Type: walletsync.TypeUninstalled, Platform: walletsync.PlatformApple, CustomerID: "c", OccurredAt: 1772359200000 + 3_600_000}
	if base := f.ApplyBase(&later).Base; base.Known || base.Retention != nil {
		t.Errorf("after an old record, an event's change is %+v; want unknown", base)
	}
	for _, bad := range []string{`{}`, `{"customerId":"c","registers":[{"platform":"samsung"}]}`, `{"customerId":"c","registers":[{"platform":"apple"}]}`, `nope`} {
		if _, _, err := wire.ParseStateRecord([]byte(bad)); err == nil {
			t.Errorf("ParseStateRecord(%s) accepted", bad)
		}
	}
}

// wallet.status records are the SPEC §4 record alone; ParseStatus reads
// them back exactly, and reads a record of an earlier version (with
// registers) as the same status.
func TestParseStatus(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	for range 200 {
		evs := synth.Random(rng, 25)
		a := walletsync.NewFold()
		for i := range evs {
			a.Apply(&evs[i])
		}
		for _, s := range a.Statuses() {
			for _, rec := range [][]byte{wire.AppendStatus(nil, &s, true), wire.AppendStateRecord(nil, &s, a.Registers(s.CustomerID))} {
				got, err := wire.ParseStatus(rec)
				if err != nil {
					t.Fatalf("%s: %v", rec, err)
				}
				if got != s {
					t.Fatalf("ParseStatus(%s) = %+v, want %+v", rec, got, s)
				}
			}
		}
	}
	for _, bad := range []string{`{}`, `nope`, `{"customerId":"c"}`, `{"customerId":"c","walletStatus":"samsung"}`,
		`{"customerId":"c","walletStatus":"apple","appleWalletInstalledAt":"yesterday"}`,
		`{"customerId":"c","walletStatus":"none","walletLastEvent":"deleted"}`} {
		if _, err := wire.ParseStatus([]byte(bad)); err == nil {
			t.Errorf("ParseStatus(%s) accepted", bad)
		}
	}
}

// ApplyBase's changes, summed over a register's events up to any instant,
// give the register's installed state then (E among the install/uninstall
// events up to that instant), for every register whose events all arrived
// in rank order; an event's change is unknown exactly when an earlier
// arrival of its register outranks it.
func TestBaseChangesSumToTheInstalledState(t *testing.T) {
	type regKey struct {
		customer, pass string
		platform       walletsync.Platform
	}
	// rank packs an event as the fold orders E: time, then uninstall over
	// install (the id only orders events of one type, which agree).
	rank := func(e *walletsync.Event) int64 {
		r := e.OccurredAt * 2
		if e.Type == walletsync.TypeUninstalled {
			r++
		}
		return r
	}
	rng := rand.New(rand.NewPCG(11, 11))
	checked := 0
	for iter := range 600 {
		evs := synth.Random(rng, 1+rng.IntN(40))
		// Spread the twelve instants a second, a day or three days apart,
		// so that events fall before, on and after the 1, 7 and 30 day
		// horizons of the installs.
		spread := []int64{1, 86_400, 3 * 86_400}[iter%3]
		for i := range evs {
			evs[i].OccurredAt = 1772359200000 + (evs[i].OccurredAt-1772359200000)*spread
		}
		rng.Shuffle(len(evs), func(i, j int) { evs[i], evs[j] = evs[j], evs[i] })
		if iter%2 == 0 { // half the streams in rank order: every change known
			slices.SortStableFunc(evs, func(a, b walletsync.Event) int {
				ra, rb := rank(&a), rank(&b)
				if ra != rb {
					return int(ra - rb)
				}
				return strings.Compare(a.ID, b.ID)
			})
		}
		f := walletsync.NewFold()
		type seen struct {
			e     *walletsync.Event
			delta int8
		}
		hist := map[regKey][]seen{}
		type regAt struct {
			reg regKey
			at  int64
		}
		retained := map[regAt][3]int{} // summed retention changes per install instant
		initial := map[regAt]int{}
		unknown := map[regKey]bool{}
		for i := range evs {
			e := &evs[i]
			base := f.ApplyBase(e).Base
			if e.Type == walletsync.TypeObserved || e.Type == walletsync.TypeIssued {
				continue
			}
			if f.IsDeviceRemoval(e) { // not the register's history: changes nothing
				if !base.Known || base.Delta != 0 || len(base.Retention) != 0 {
					t.Fatalf("iter %d: device removal %+v has base change %+v", iter, *e, base)
				}
				continue
			}
			k := regKey{e.CustomerID, e.PassID, e.Platform}
			outranked := false
			for _, h := range hist[k] {
				if rank(h.e) > rank(e) || rank(h.e) == rank(e) && h.e.ID > e.ID {
					outranked = true
				}
			}
			if base.Known == outranked {
				t.Fatalf("iter %d: event %+v known=%v, but outranked by an earlier arrival=%v", iter, *e, base.Known, outranked)
			}
			if !base.Known {
				unknown[k] = true
			}
			for _, rc := range base.Retention {
				ra := regAt{k, rc.InstallAt}
				sum := retained[ra]
				for n := range sum {
					sum[n] += int(rc.Delta[n])
				}
				retained[ra] = sum
				if rc.Initial {
					initial[ra]++
				}
			}
			hist[k] = append(hist[k], seen{e, base.Delta})
		}
		if iter%2 == 0 && len(unknown) > 0 {
			t.Fatalf("iter %d: a stream in rank order has unknown changes", iter)
		}
		// Retention: per install instant of a register whose changes are
		// all known, one initial entry per install event there, and the
		// entries sum to how many of those installs are retained after
		// each horizon (E at install + N days, events at that instant
		// included, is an install).
		days := walletsync.RetentionDays()
		for k, h := range hist {
			if unknown[k] {
				continue
			}
			installs := map[int64]int{}
			for _, s := range h {
				if s.e.Type == walletsync.TypeInstalled {
					installs[s.e.OccurredAt]++
				}
			}
			for at, n := range installs {
				var want [3]int
				for d, horizon := range days {
					end := at + horizon*86_400_000
					var last *walletsync.Event
					for _, s := range h {
						if s.e.OccurredAt <= end && (last == nil || rank(s.e) > rank(last)) {
							last = s.e
						}
					}
					if last.Type == walletsync.TypeInstalled {
						want[d] = n
					}
				}
				ra := regAt{k, at}
				if initial[ra] != n || retained[ra] != want {
					t.Fatalf("iter %d register %v install at %d (%d events): initial entries %d, retained %v; want %d, %v",
						iter, k, at, n, initial[ra], retained[ra], n, want)
				}
				checked++
			}
		}
		for k, h := range hist {
			if unknown[k] {
				continue
			}
			for at := int64(1772359200000) - 1000; at <= 1772359200000+13_000*spread; at += 500 * spread {
				var sum int
				var last *walletsync.Event
				for _, s := range h {
					if s.e.OccurredAt <= at {
						sum += int(s.delta)
						if last == nil || rank(s.e) > rank(last) {
							last = s.e
						}
					}
				}
				want := 0
				if last != nil && last.Type == walletsync.TypeInstalled {
					want = 1
				}
				if sum != want {
					t.Fatalf("iter %d register %v at %d: changes sum to %d, state is %d", iter, k, at, sum, want)
				}
				checked++
			}
		}
	}
	if checked < 10_000 {
		t.Fatalf("only %d register-instants checked", checked)
	}
}

// Retention changes survive their header encoding; malformed text is refused.
func TestRetentionChangesRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 13))
	for range 200 {
		var in []walletsync.RetentionChange
		for range rng.IntN(4) {
			c := walletsync.RetentionChange{InstallAt: rng.Int64N(1 << 42), Initial: rng.IntN(2) == 0}
			for k := range c.Delta {
				c.Delta[k] = int8(rng.IntN(3) - 1)
			}
			in = append(in, c)
		}
		out, err := wire.ParseRetentionChanges(wire.AppendRetentionChanges(nil, in))
		if err != nil || !reflect.DeepEqual(out, in) {
			t.Fatalf("round trip of %+v: %+v, %v", in, out, err)
		}
	}
	for _, bad := range []string{"1,1,1,1", "x,1,1,1,1", "1,2,1,1,1", "1,1,1,1,2", "1,1,1,1,1;", "1,1,1,1,1,1"} {
		if _, err := wire.ParseRetentionChanges([]byte(bad)); err == nil {
			t.Errorf("ParseRetentionChanges(%q) accepted", bad)
		}
	}
}

// The processors' recovery: at checkpoints, the customers TakeChanged
// reports are persisted (AppendRecord); a fold restored from the latest
// record of each customer, with the events after the last checkpoint folded
// again, is the original fold, versions and all — also when the replay
// starts earlier than the checkpoint, since folding an event twice changes
// nothing.
func TestCheckpointAndReplayRestoreTheFold(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	for iter := range 200 {
		evs := synth.Random(rng, 1+rng.IntN(60))
		a := walletsync.NewFold()
		a.TrackChanged()
		persisted := map[string][]byte{} // compacted wallet.state
		last := 0                        // events before the last checkpoint
		checkpoint := func(at int) {
			n := 0
			a.TakeChanged(func(id string) {
				n++
				st, regs, ok := a.Record(id)
				if !ok {
					t.Fatalf("changed customer %s unknown to the fold", id)
				}
				persisted[id] = wire.AppendStateRecord(nil, &st, regs)
			})
			if a.Changed() != 0 {
				t.Fatalf("Changed() = %d right after TakeChanged", a.Changed())
			}
			last = at
		}
		changedSince := map[string]bool{}
		for i := range evs {
			if rng.IntN(8) == 0 {
				if a.Changed() != len(changedSince) {
					t.Fatalf("iter %d: Changed() = %d, %d customers changed", iter, a.Changed(), len(changedSince))
				}
				checkpoint(i)
				clear(changedSince)
			}
			if a.ApplyBase(&evs[i]).RegistersChanged {
				changedSince[evs[i].CustomerID] = true
			}
		}
		b := walletsync.NewFold()
		b.TrackChanged()
		for _, rec := range persisted {
			rs, regs, err := wire.ParseStateRecord(rec)
			if err != nil {
				t.Fatal(err)
			}
			b.Restore(rs, regs)
		}
		if b.Changed() != 0 {
			t.Fatalf("Restore marked %d customers changed", b.Changed())
		}
		for i := rng.IntN(last + 1); i < len(evs); i++ {
			b.ApplyBase(&evs[i])
		}
		untracked := walletsync.NewFold()
		for i := range evs {
			untracked.Apply(&evs[i])
		}
		if untracked.Changed() != 0 {
			t.Fatalf("a fold that does not track changes lists %d customers", untracked.Changed())
		}
		for _, e := range evs {
			sa, _ := a.Status(e.CustomerID)
			sb, _ := b.Status(e.CustomerID)
			if sa != sb {
				t.Fatalf("iter %d: customer %s: restored and replayed %+v, original %+v", iter, e.CustomerID, sb, sa)
			}
		}
	}
}

// The registers Registers returns, and the retention changes ApplyBase
// returns, are the caller's: later events do not change them, though the
// fold keeps its install times in place and cuts the changes from shared
// blocks.
func TestFoldResultsAreTheCallers(t *testing.T) {
	const day = 86_400_000
	base := int64(1772359200000)
	f := walletsync.NewFold()
	ev := func(i int, typ walletsync.EventType) walletsync.Event {
		return walletsync.Event{ID: fmt.Sprintf("e%03d", i), Type: typ, Platform: walletsync.PlatformApple, CustomerID: "c", OccurredAt: base + int64(i)*day/2}
	}
	var kept [][]walletsync.RetentionChange
	var want [][]walletsync.RetentionChange
	var regs [][]walletsync.Register
	var wantRegs [][]walletsync.Register
	var extended [][]walletsync.RetentionChange
	for i := range 400 {
		typ := walletsync.TypeInstalled
		if i%3 == 1 {
			typ = walletsync.TypeUninstalled
		}
		e := ev(i, typ)
		bc := f.ApplyBase(&e).Base
		kept = append(kept, bc.Retention)
		want = append(want, slices.Clone(bc.Retention))
		r := f.Registers("c")
		regs = append(regs, r)
		deep := slices.Clone(r)
		for k := range deep {
			deep[k].Installs = slices.Clone(deep[k].Installs)
		}
		wantRegs = append(wantRegs, deep)
		if len(bc.Retention) > 0 {
			// A caller may append to what it was given.
			ext := append(bc.Retention, walletsync.RetentionChange{InstallAt: -int64(i)})
			extended = append(extended, ext)
		}
	}
	for i := range kept {
		if !reflect.DeepEqual(kept[i], want[i]) {
			t.Fatalf("event %d: retention changes became %+v, were %+v", i, kept[i], want[i])
		}
		if !reflect.DeepEqual(regs[i], wantRegs[i]) {
			t.Fatalf("event %d: registers became %+v, were %+v", i, regs[i], wantRegs[i])
		}
	}
	for _, ext := range extended {
		last := ext[len(ext)-1]
		if last.InstallAt > 0 || !reflect.DeepEqual(ext[:len(ext)-1], want[-last.InstallAt]) {
			t.Fatalf("a caller's extended changes became %+v", ext)
		}
	}
	if len(wantRegs[399][0].Installs) < 2 {
		t.Fatalf("the test needs installs kept across events: %+v", wantRegs[399])
	}
}

// A state record written before firstInstalledAt and passIssuedAt existed
// restores: the first install is recomputed from what the registers hold
// (an installed E, an installed O, the installs kept for retention); one
// whose register was uninstalled since, past its retention windows, is
// lost, and the next install event moves it earlier again.
func TestStateRecordsOfRoundOneRestore(t *testing.T) {
	old := `{"customerId":"c","walletStatus":"apple","appleWalletInstalledAt":"2026-03-05T10:00:00.000Z","googleWalletInstalledAt":null,` +
		`"walletLastChangedAt":"2026-03-05T10:00:00.000Z","walletLastEvent":"installed","version":4,"registers":[` +
		`{"passId":"a","platform":"apple","e":{"eventId":"e2","type":"installed","occurredAt":"2026-03-05T10:00:00.000Z"},"installs":[1772359200000,1772704800000]},` +
		`{"passId":"b","platform":"google","o":{"eventId":"o1","installed":true,"installedAt":"2026-02-20T08:00:00.000Z","occurredAt":"2026-03-06T03:00:00.000Z"}},` +
		`{"passId":"c","platform":"google","e":{"eventId":"e9","type":"uninstalled","occurredAt":"2026-03-07T10:00:00.000Z"}}]}`
	rs, regs, err := wire.ParseStateRecord([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if rs.FirstInstalledAt != 0 || rs.PassIssuedAt != 0 {
		t.Fatalf("a round-1 record read with times %+v", rs)
	}
	f := walletsync.NewFold()
	st := f.Restore(rs, regs)
	feb20 := int64(1771574400000) // 2026-02-20T08:00:00Z, the installed observation's installedAt
	if st.FirstInstalledAt != feb20 || st.PassIssuedAt != 0 || st.Version != 4 || st.Wallet != walletsync.WalletBoth {
		t.Fatalf("restored %+v, want firstInstalledAt %d from the registers", st, feb20)
	}
	// The record written back carries it, and reads back the same.
	rec, regs2, _ := f.Record("c")
	back := wire.AppendStateRecord(nil, &rec, regs2)
	rs2, _, err := wire.ParseStateRecord(back)
	if err != nil || rs2.FirstInstalledAt != feb20 {
		t.Fatalf("written back as %s: %+v %v", back, rs2, err)
	}
	// An older install seen later moves it earlier; a later one does not.
	for _, c := range []struct {
		at   int64
		want int64
	}{{feb20 + 1000, feb20}, {feb20 - 1000, feb20 - 1000}} {
		e := walletsync.Event{ID: fmt.Sprint("late-", c.at), Type: walletsync.TypeInstalled, Platform: walletsync.PlatformGoogle, CustomerID: "c", PassID: "c", OccurredAt: c.at}
		if st, _ := f.Apply(&e); st.FirstInstalledAt != c.want {
			t.Errorf("after an install at %d: firstInstalledAt %d, want %d", c.at, st.FirstInstalledAt, c.want)
		}
	}
}

func TestAppliedNewPass(t *testing.T) {
	f := walletsync.NewFold()
	ev := func(id, customer, pass string, p walletsync.Platform, typ walletsync.EventType) walletsync.Applied {
		return f.ApplyBase(&walletsync.Event{ID: id, Type: typ, Platform: p, CustomerID: customer, PassID: pass, OccurredAt: 1_772_000_000_000})
	}
	for i, c := range []struct {
		a    walletsync.Applied
		want bool
	}{
		{ev("1", "c", "p1", walletsync.PlatformApple, walletsync.TypeInstalled), true},    // a new customer
		{ev("2", "c", "p1", walletsync.PlatformApple, walletsync.TypeUninstalled), false}, // the same register
		{ev("3", "c", "p1", walletsync.PlatformGoogle, walletsync.TypeInstalled), false},  // the pass on the other platform
		{ev("4", "c", "p2", walletsync.PlatformGoogle, walletsync.TypeInstalled), true},   // a second pass
		{ev("5", "c", "", walletsync.PlatformApple, walletsync.TypeInstalled), false},     // no pass
		{ev("6", "d", "p9", 0, walletsync.TypeIssued), true},                              // issued: a pass without a register
		{ev("7", "d", "p9", 0, walletsync.TypeIssued), true},                              // an issued-only pass has no register: each (deduplicated) issue teaches again, the same holder
	} {
		if c.a.NewPass != c.want {
			t.Errorf("event %d: NewPass %v, want %v", i+1, c.a.NewPass, c.want)
		}
	}
}
