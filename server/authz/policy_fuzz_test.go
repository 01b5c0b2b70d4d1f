package authz

import (
	"testing"
	"time"
)

// FuzzParsePolicy feeds arbitrary YAML to the policy parser (the file is
// reloaded whenever it changes, so a broken edit meets it in production):
// it must accept or refuse, never panic, and what it accepts must judge
// requests without panicking.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"", "grants: []", `
grants:
  - identity: "spiffe://corp.test/ns/payments/**"
    sign:
      - key_rings: [default]
        audiences: ["ledger", "payments-*"]
        subjects: ["$caller", "batch-*"]
        claims: [scope]
        max_ttl: 10m
        typ: [JWT, at+jwt]
        rate: {per_second: 0.5, burst: 3}
    list: [default]
  - identity: "spiffe://corp.test/team/security"
    rotate: ["*"]
    list: ["*"]
`, "grants: [{identity: ''}]", "grants: [{identity: 'dns:x', sign: [{key_rings: [nope], audiences: [a]}]}]"} {
		f.Add([]byte(s))
	}
	rings := map[string]time.Duration{"default": time.Hour}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parsePolicy(data, rings)
		if err != nil {
			return
		}
		p.authorizeSign("spiffe://corp.test/ns/payments/sa/api", SignRequest{Ring: "default", Subject: "batch-1",
			Audience: []string{"ledger"}, Claims: []string{"scope"}, TTL: time.Minute, Typ: "JWT"})
		p.authorizeRing("spiffe://corp.test/team/security", "rotate", "default")
	})
}
