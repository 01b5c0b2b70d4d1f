//go:build pkcs11

package server

import (
	"strings"
	"testing"

	"github.com/signet-dev/signet/internal/softhsmtest"
)

// On SoftHSM2, every ring's key (the CA's included) is on the token,
// sensitive and never extractable, and the chains are certificate objects
// with the CKA_ID of their version's key pair. Not parallel: softhsmtest
// points SOFTHSM2_CONF at the token for the whole process.
func TestX5CPKCS11(t *testing.T) {
	tok := softhsmtest.New(t)
	cfg := x5cRings(t, tok.URI())
	cfg.KeyRings = append(cfg.KeyRings, vaultPKIRing(t, tok.URI()))
	ts := startServer(t, cfg, Options{Getenv: vaultEnv})
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca", "self": "self", "pki": "pki"})
	checkCARing(t, ts)

	ca := ts.KeySet().Versions(ts.KeySet().Ring("ca"))[0]
	var access string
	for _, block := range strings.Split(tok.Tool(t, "--list-objects", "--type", "privkey"), "Private Key Object") {
		if strings.Contains(block, "ID:         "+ca.ID) {
			for _, line := range strings.Split(block, "\n") {
				if a, ok := strings.CutPrefix(strings.TrimSpace(line), "Access:"); ok {
					access = strings.TrimSpace(a)
				}
			}
		}
	}
	if !strings.Contains(access, "always sensitive") || !strings.Contains(access, "never extractable") {
		t.Errorf("the CA's private key (CKA_ID %s) has access %q, want always sensitive and never extractable", ca.ID, access)
	}
	objs, listing := tok.ListObjects(t)
	certs := map[string]int{}
	for _, o := range objs {
		if strings.HasPrefix(o.Class, "Certificate Object") {
			certs[o.ID]++
		}
	}
	for _, ring := range []string{"ca", "default", "pss", "self"} {
		v := ts.KeySet().Versions(ts.KeySet().Ring(ring))[0]
		if certs[v.ID] != len(v.Certificates) || certs[v.ID] == 0 {
			t.Errorf("%s: %d certificate objects with CKA_ID %s, want its chain's %d:\n%s", ring, certs[v.ID], v.ID, len(v.Certificates), listing)
		}
	}
}
