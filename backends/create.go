package backends

// CheckNewest is the first check of every CreateVersion: newest is the ID
// of the ring's newest version as the backend lists it now ("" for none),
// latest the one the caller knows of. It returns nil when they are the
// same, and otherwise the KindConflict error CreateVersion returns: another
// replica rotated since the caller read the versions, and the caller
// re-reads them rather than create a version after one it never saw.
func CheckNewest(backend string, ring KeyRing, newest, latest string) error {
	if newest == latest {
		return nil
	}
	if newest == "" {
		return Errorf(KindConflict, backend, "key ring %q changed: it has no versions, not %q", ring.Name, latest)
	}
	return Errorf(KindConflict, backend, "key ring %q changed: its newest version is %q, not %q", ring.Name, newest, latest)
}

// LostRace is the KindConflict error of a CreateVersion whose candidate
// lost to another replica's for the same slot: what lost says what became
// of the candidate made here.
func LostRace(backend string, ring KeyRing, winner, lost string) error {
	if winner == "" {
		return Errorf(KindConflict, backend, "key ring %q was rotated concurrently by another replica; %s", ring.Name, lost)
	}
	return Errorf(KindConflict, backend, "key ring %q was rotated concurrently: %s won; %s", ring.Name, winner, lost)
}

// Deviation is a rule of the rotation protocol (see the package
// documentation) that a backend cannot keep, and what happens instead. A
// backend declares each of its own next to its code, documents it, and
// tests that the deviation is what happens, no more.
type Deviation struct {
	Rule    string
	Instead string
}
