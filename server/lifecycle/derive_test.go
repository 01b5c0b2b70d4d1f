package lifecycle

import (
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
)

var testSchedule = Schedule{
	TokenDefaultTTL: 5 * time.Minute,
	TokenMaxTTL:     time.Hour,
	JWKSMaxAge:      5 * time.Minute,
	RefreshInterval: time.Minute,
	PublishAhead:    10 * time.Minute,
	RetireAfter:     2 * time.Hour,
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func versionsAt(created ...time.Duration) []backends.Version {
	vs := make([]backends.Version, len(created))
	for i, c := range created {
		vs[i] = backends.Version{ID: string(rune('1' + i)), Algorithm: backends.ES256, Created: t0.Add(c)}
	}
	return vs
}

func statesString(ls []Lifecycle) string {
	var s []string
	for _, l := range ls {
		s = append(s, l.State.String())
	}
	return strings.Join(s, " ")
}

func TestDeriveBoundaries(t *testing.T) {
	const (
		pa = 10 * time.Minute
		ra = 2 * time.Hour
	)
	tests := []struct {
		name     string
		versions []backends.Version
		disabled []int
		at       time.Duration // since t0
		want     string
		active   int
	}{
		{name: "no versions", at: 0, want: "", active: -1},
		{name: "first version signs at once", versions: versionsAt(0), at: 0, want: "active", active: 0},
		{name: "first version before it matures", versions: versionsAt(0), at: pa - 1, want: "active", active: 0},
		{name: "rotation during first publish_ahead is pending", versions: versionsAt(0, time.Minute), at: 2 * time.Minute, want: "active pending", active: 0},
		{name: "new version just before publish_ahead", versions: versionsAt(0, time.Hour), at: time.Hour + pa - time.Nanosecond, want: "active pending", active: 0},
		{name: "new version exactly at publish_ahead", versions: versionsAt(0, time.Hour), at: time.Hour + pa, want: "retiring active", active: 1},
		{name: "old version just before retire_after", versions: versionsAt(0, time.Hour), at: time.Hour + pa + ra - time.Nanosecond, want: "retiring active", active: 1},
		{name: "old version exactly at retire_after", versions: versionsAt(0, time.Hour), at: time.Hour + pa + ra, want: "retired active", active: 1},
		{name: "three versions, middle retiring", versions: versionsAt(0, time.Hour, 3*time.Hour), at: 3*time.Hour + pa, want: "retired retiring active", active: 2},
		{name: "two pending", versions: versionsAt(0, time.Hour, time.Hour+time.Minute), at: time.Hour + 2*time.Minute, want: "active pending pending", active: 0},
		{name: "revoked version", versions: versionsAt(0, time.Hour), disabled: []int{0}, at: time.Hour + 2*time.Minute, want: "revoked active", active: 1},
		// The emergency version does not sign before every replica
		// publishes it, 2 × refresh_interval after its creation.
		{name: "emergency: the new version waits for every replica to publish it", versions: versionsAt(0, time.Hour, 2*time.Hour), disabled: []int{0, 1}, at: 2 * time.Hour, want: "revoked revoked pending", active: -1},
		{name: "emergency: just before every replica publishes it", versions: versionsAt(0, time.Hour, 2*time.Hour), disabled: []int{0, 1}, at: 2*time.Hour + 2*time.Minute - 1, want: "revoked revoked pending", active: -1},
		{name: "emergency: the new version signs once every replica publishes it", versions: versionsAt(0, time.Hour, 2*time.Hour), disabled: []int{0, 1}, at: 2*time.Hour + 2*time.Minute, want: "revoked revoked active", active: 2},
		{name: "all revoked", versions: versionsAt(0), disabled: []int{0}, at: time.Hour, want: "revoked", active: -1},
		{name: "revoked newest does not block the active", versions: versionsAt(0, time.Hour), disabled: []int{1}, at: time.Hour + pa, want: "active revoked", active: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, i := range tt.disabled {
				tt.versions[i].Disabled = true
			}
			states, active, _ := Derive(tt.versions, testSchedule, t0.Add(tt.at))
			if got := statesString(states); got != tt.want || active != tt.active {
				t.Errorf("states %q, active %d; want %q, active %d", got, active, tt.want, tt.active)
			}
		})
	}
}

func TestDeriveTimes(t *testing.T) {
	vs := versionsAt(0, time.Hour)
	states, _, next := Derive(vs, testSchedule, t0.Add(time.Hour))
	// v1 signs from creation (it was alone); v2 from created + publish_ahead.
	if !states[0].ActivatesAt.Equal(t0) {
		t.Errorf("v1 activates at %v, want %v", states[0].ActivatesAt, t0)
	}
	wantV2 := t0.Add(time.Hour + testSchedule.PublishAhead)
	if !states[1].ActivatesAt.Equal(wantV2) {
		t.Errorf("v2 activates at %v, want %v", states[1].ActivatesAt, wantV2)
	}
	if want := wantV2.Add(testSchedule.RetireAfter); !states[0].RetiresAt.Equal(want) {
		t.Errorf("v1 retires at %v, want %v", states[0].RetiresAt, want)
	}
	if !states[1].RetiresAt.IsZero() {
		t.Errorf("v2 has nothing after it but retires at %v", states[1].RetiresAt)
	}
	if !next.Equal(wantV2) {
		t.Errorf("next change at %v, want v2's activation %v", next, wantV2)
	}
	// Walking the clock to each reported change reaches every state in turn.
	var seen []string
	now := t0.Add(time.Hour)
	for range 5 {
		states, _, next = Derive(vs, testSchedule, now)
		seen = append(seen, statesString(states))
		if next.IsZero() {
			break
		}
		now = next
	}
	if got := strings.Join(seen, " | "); got != "active pending | retiring active | retired active" {
		t.Errorf("walking the boundaries saw %q", got)
	}
}

// The emergency version's activation is a boundary the Run loop wakes at.
// A ring's first version signs at once, even when the backend's clock put
// its creation a little after this replica's now.
func TestDeriveFirstVersionAheadOfTheClock(t *testing.T) {
	vs := versionsAt(0)
	states, active, _ := Derive(vs, testSchedule, t0.Add(-time.Second))
	if active != 0 || states[0].State != StateActive {
		t.Errorf("first version stamped a second ahead: active %d, state %v; want 0, active", active, states[0].State)
	}
}

func TestDeriveEmergencyActivation(t *testing.T) {
	vs := versionsAt(0, time.Hour)
	vs[0].Disabled = true
	states, active, next := Derive(vs, testSchedule, t0.Add(time.Hour))
	want := t0.Add(time.Hour + testSchedule.EmergencyDelay())
	if active != -1 || !states[1].ActivatesAt.Equal(want) || !next.Equal(want) {
		t.Errorf("active %d, activates at %v, next %v; want -1 and %v, %v", active, states[1].ActivatesAt, next, want, want)
	}
	// A ring whose keys are never published (a CA ring) has no verifier to
	// wait for: its emergency version signs at once.
	ca := testSchedule
	ca.Unpublished = true
	states, active, _ = Derive(vs, ca, t0.Add(time.Hour))
	if active != 1 || states[1].State != StateActive || !states[1].ActivatesAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("unpublished ring: active %d, state %v, activates at %v; want 1, active, %v",
			active, states[1].State, states[1].ActivatesAt, t0.Add(time.Hour))
	}
}

func TestScheduleValidate(t *testing.T) {
	ok := testSchedule
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid schedule refused: %v", err)
	}
	tests := []struct {
		name   string
		change func(*Schedule)
		want   string
	}{
		{"publish_ahead too short", func(p *Schedule) { p.PublishAhead = p.JWKSMaxAge + p.RefreshInterval - 1 }, "publish_ahead"},
		{"retire_after too short", func(p *Schedule) { p.RetireAfter = p.TokenMaxTTL + p.JWKSMaxAge + p.RefreshInterval - 1 }, "retire_after"},
		{"default ttl above max", func(p *Schedule) { p.TokenDefaultTTL = 2 * p.TokenMaxTTL }, "token_default_ttl"},
		{"zero max ttl", func(p *Schedule) { p.TokenMaxTTL = 0 }, "token_max_ttl"},
		{"zero refresh", func(p *Schedule) { p.RefreshInterval = 0 }, "refresh_interval"},
		{"negative rotation", func(p *Schedule) { p.RotationPeriod = -1 }, "rotation_period"},
		{"rotation shorter than publish_ahead", func(p *Schedule) { p.RotationPeriod = p.PublishAhead / 2 }, "rotation_period"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testSchedule
			tt.change(&p)
			err := p.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
	// The boundaries themselves are allowed.
	p := testSchedule
	p.PublishAhead = p.JWKSMaxAge + p.RefreshInterval
	p.RetireAfter = p.TokenMaxTTL + p.JWKSMaxAge + p.RefreshInterval
	if err := p.Validate(); err != nil {
		t.Errorf("schedule at the exact minimums refused: %v", err)
	}
}
