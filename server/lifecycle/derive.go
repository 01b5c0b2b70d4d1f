package lifecycle

import (
	"fmt"
	"time"

	"github.com/signet-dev/signet/backends"
)

// Schedule is a key ring's lifecycle schedule: how long tokens live, how
// long verifiers may cache the JWKS, and when versions are published, sign
// and retire. (The config file calls these fields the ring's policy; in code
// "policy" means only the authorization policy of server/authz.)
type Schedule struct {
	TokenDefaultTTL time.Duration
	TokenMaxTTL     time.Duration
	JWKSMaxAge      time.Duration // Cache-Control max-age of the JWKS
	RefreshInterval time.Duration // how often a replica re-reads versions
	PublishAhead    time.Duration // how long a new version is published before it signs
	RetireAfter     time.Duration // how long a replaced version stays published
	RotationPeriod  time.Duration // 0: manual rotation only
	// Unpublished: the ring's keys are never in a JWKS (a CA ring; New sets
	// it), so no verifier waits for its kids and an emergency version signs
	// at once.
	Unpublished bool
}

// Validate refuses a schedule under which a verifier could meet a kid it has
// not fetched yet, or lose a kid while tokens it signed are still valid. The
// error names the field in the config file's terms.
func (p Schedule) Validate() error {
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"token_default_ttl", p.TokenDefaultTTL}, {"token_max_ttl", p.TokenMaxTTL},
		{"jwks_max_age", p.JWKSMaxAge}, {"refresh_interval", p.RefreshInterval},
	}
	for _, f := range positive {
		if f.d <= 0 {
			return fmt.Errorf("%s must be positive, got %v", f.name, f.d)
		}
	}
	if p.PublishAhead < 0 || p.RetireAfter < 0 || p.RotationPeriod < 0 {
		return fmt.Errorf("publish_ahead, retire_after and rotation_period may not be negative")
	}
	if p.TokenDefaultTTL > p.TokenMaxTTL {
		return fmt.Errorf("token_default_ttl %v exceeds token_max_ttl %v", p.TokenDefaultTTL, p.TokenMaxTTL)
	}
	if min := p.JWKSMaxAge + p.RefreshInterval; p.PublishAhead < min {
		return fmt.Errorf("publish_ahead %v is shorter than jwks_max_age + refresh_interval = %v: "+
			"verifiers holding a cached JWKS (or replicas that have not refreshed) would meet the new kid before they know it",
			p.PublishAhead, min)
	}
	if min := p.TokenMaxTTL + p.JWKSMaxAge + p.RefreshInterval; p.RetireAfter < min {
		return fmt.Errorf("retire_after %v is shorter than token_max_ttl + jwks_max_age + refresh_interval = %v: "+
			"a replaced key would leave the JWKS while tokens it signed are still valid", p.RetireAfter, min)
	}
	if p.RotationPeriod != 0 && p.RotationPeriod < p.PublishAhead {
		return fmt.Errorf("rotation_period %v is shorter than publish_ahead %v: every new key would be replaced before it signs",
			p.RotationPeriod, p.PublishAhead)
	}
	return nil
}

// EmergencyDelay is how long after an emergency rotation its version starts
// signing: every other replica starts a refresh within refresh_interval and
// has the version in its JWKS when that refresh has read it, which takes
// less than another refresh_interval on any backend that keeps up with its
// refreshes. Until then Sign answers Unavailable.
// A ring whose keys are never published (a CA ring) has none: its version
// is needed at once to re-issue the leaves of the rings it serves.
func (p Schedule) EmergencyDelay() time.Duration {
	if p.Unpublished {
		return 0
	}
	return 2 * p.RefreshInterval
}

// State is a version's derived lifecycle state.
type State int

const (
	StatePending State = iota + 1
	StateActive
	StateRetiring
	StateRetired
	StateRevoked
)

var stateNames = map[State]string{StatePending: "pending", StateActive: "active", StateRetiring: "retiring",
	StateRetired: "retired", StateRevoked: "revoked"}

func (s State) String() string { return stateNames[s] }

// Published reports whether the state's key belongs in the JWKS.
func (s State) Published() bool { return s == StatePending || s == StateActive || s == StateRetiring }

// Lifecycle is one version's derived state and the times that bound it.
type Lifecycle struct {
	State State
	// ActivatesAt is when the version signs (or started signing); zero for
	// revoked versions.
	ActivatesAt time.Time
	// RetiresAt is when the version leaves the JWKS; zero while no enabled
	// version follows it.
	RetiresAt time.Time
}

// Derive computes every version's state from the versions (oldest first),
// the schedule and now. It returns the index of the active version (-1 when no
// version is enabled) and the earliest future instant at which any state
// changes (zero if none will without a new version or revocation).
//
// For the enabled versions, oldest first:
//   - active: the newest version whose created + publish_ahead <= now, or,
//     if there is none, the oldest enabled version. the design names this
//     fallback for first start and after an emergency revocation, when one
//     version is enabled and oldest and newest are the same; taking the
//     oldest keeps its promise that a rotation in the first publish_ahead
//     after first start is pending too, instead of signing at once. After
//     an emergency revocation (older versions exist, all disabled) the
//     fallback signs only from created + EmergencyDelay, when every replica
//     has re-read the versions and publishes it: until then no version
//     signs, so that no verifier meets its kid in a token before the JWKS
//     of every replica holds it;
//   - pending: newer than the active one;
//   - retiring: older than the active one while now < activation of its
//     successor + retire_after;
//   - retired: older than that.
//
// Disabled versions are revoked.
func Derive(versions []backends.Version, p Schedule, now time.Time) (states []Lifecycle, active int, next time.Time) {
	states = make([]Lifecycle, len(versions))
	active = -1
	oldestEnabled := -1
	for i, v := range versions {
		if v.Disabled {
			states[i].State = StateRevoked
			continue
		}
		if oldestEnabled == -1 {
			oldestEnabled = i
		}
		if !v.Created.Add(p.PublishAhead).After(now) {
			active = i
		}
	}
	if oldestEnabled == -1 {
		return states, -1, time.Time{}
	}
	activation := func(i int) time.Time {
		switch {
		case i != oldestEnabled:
			return versions[i].Created.Add(p.PublishAhead)
		case i > 0:
			// Older versions exist and are all disabled: an emergency
			// rotation's version, published by every replica only after
			// they re-read the versions.
			return versions[i].Created.Add(p.EmergencyDelay())
		default:
			// The first version signs from its creation, matured or not.
			return versions[i].Created
		}
	}
	// The first version signs at once, even if the backend stamped its
	// creation a little ahead of this replica's clock (clock skew; Key Vault
	// rounds the time it records up to the second).
	if active == -1 && (oldestEnabled == 0 || !activation(oldestEnabled).After(now)) {
		active = oldestEnabled
	}
	later := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	successor := -1 // the next enabled version after i, walking backwards
	for i := len(versions) - 1; i >= 0; i-- {
		if versions[i].Disabled {
			continue
		}
		later(versions[i].Created.Add(p.PublishAhead)) // maturing can change which version is active
		s := &states[i]
		s.ActivatesAt = activation(i)
		if successor >= 0 {
			s.RetiresAt = activation(successor).Add(p.RetireAfter)
		}
		if i == oldestEnabled && i > 0 {
			later(s.ActivatesAt) // an emergency version starts signing
		}
		switch {
		case i > active:
			s.State = StatePending
		case i == active:
			s.State = StateActive
		case now.Before(s.RetiresAt):
			s.State = StateRetiring
			later(s.RetiresAt)
		default:
			s.State = StateRetired
		}
		successor = i
	}
	return states, active, next
}

// snapshot is a ring's versions from one read, with their states derived
// at one instant. It is immutable once stored.
type snapshot struct {
	versions []*Version // oldest first
	active   *Version   // nil: nothing can sign
	next     time.Time  // when a state changes by the clock alone; zero: never
	read     uint64     // the ticket of the read the versions came from (slot.ticket)
	origin   origin     // when the versions were read, and whether this replica read them from the backend
}

// origin is where a snapshot's versions come from: a read of the ring's
// backend by this replica (seed empty), or a seed taken at start-up while
// the backend did not answer (seed says from where: startup.go).
type origin struct {
	at   time.Time // when the versions were read from the backend; zero: never (a ring started empty)
	seed string
}

// due reports whether the clock has passed the snapshot's next boundary, so
// that its states are no longer those of now.
func (s *snapshot) due(now time.Time) bool { return !s.next.IsZero() && !now.Before(s.next) }

// derive computes the snapshot of vs at now for a ring with schedule sched
// and x5c configuration cert (nil: none): the one place where a version's
// state, whether it is withheld, and which version signs are decided. It
// is pure: the same arguments give the same snapshot.
//
// States come from the schedule over every version (Derive). Then a
// version that is or may become published (pending, active, retiring) is
// withheld, neither published nor signing, if its stored chain is for
// another key, or if the ring requires a chain and it has none valid
// jwks_max_age from now (a chain that lapses sooner leaves the JWKS, or with
// x5c.required false loses its x5c, before a cached JWKS could carry it
// past its notAfter). Withholding never changes a state: when the version
// the schedule makes active is withheld, the one before it keeps signing
// only while it is retiring and not withheld itself; a retired or revoked
// version never signs or is published again.
func derive(vs []*Version, sched Schedule, cert *CertSpec, read uint64, now time.Time) *snapshot {
	plain := make([]backends.Version, len(vs))
	for i, v := range vs {
		plain[i] = v.Version
	}
	states, active, next := Derive(plain, sched, now)
	later := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	s := &snapshot{versions: make([]*Version, len(vs)), read: read}
	for i, v := range vs {
		c := *v
		c.Lifecycle = states[i]
		if cert != nil && c.State.Published() {
			if c.Chain != nil {
				lapse := c.Chain.Expires().Add(-sched.JWKSMaxAge)
				if now.Before(lapse) {
					later(lapse)
				} else {
					c.Chain, c.CertProblem = nil, "its certificate chain expires at "+
						c.Chain.Expires().UTC().Format(time.RFC3339)+", within jwks_max_age, and has not been renewed"
				}
			}
			c.Withheld = c.certWrongKey || cert.Required && c.Chain == nil
		}
		s.versions[i] = &c
	}
	if active >= 0 && s.versions[active].Withheld {
		prev := active - 1
		for prev >= 0 && s.versions[prev].Disabled {
			prev--
		}
		active = -1
		if prev >= 0 && s.versions[prev].State == StateRetiring && !s.versions[prev].Withheld {
			active = prev
		}
	}
	if active >= 0 {
		s.active = s.versions[active]
	}
	s.next = next
	return s
}

// newestEnabled is the newest version of vs that is not disabled, or nil.
// Whether a ring needs a first version is decided on this alone: a version
// withheld for want of a certificate chain is still a version, and creating
// another would not obtain a chain any sooner.
func newestEnabled(vs []*Version) *Version {
	for i := len(vs) - 1; i >= 0; i-- {
		if !vs[i].Disabled {
			return vs[i]
		}
	}
	return nil
}

// find is the version of vs with backend id id, or nil.
func find(vs []*Version, id string) *Version {
	for _, v := range vs {
		if v.ID == id {
			return v
		}
	}
	return nil
}
