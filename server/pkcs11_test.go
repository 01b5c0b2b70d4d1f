//go:build pkcs11

package server

import (
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/internal/softhsmtest"
)

// The SoftHSM2 key pair of version 1 replaced behind Signet's back, from
// another process (OpenSC's pkcs11-tool, as an operator or an intruder
// with the PIN would): the old objects destroyed and a new pair generated
// with the same CKA_ID and label. Sign finds the new private key and signs
// with it, and the signature does not verify with the published key; the
// refresh finds the new public key and is refused. Not parallel:
// softhsmtest points SOFTHSM2_CONF at the token for the whole process.
func TestPKCS11KeyReplacedBehindSignetsBack(t *testing.T) {
	tok := softhsmtest.New(t)
	cfg := testConfig(t)
	cfg.KeyRings[0].Backend = tok.URI()
	ts := startServer(t, cfg, Options{})
	s := beforeSwap(t, ts)
	v := ts.KeySet().Versions(ts.KeySet().Ring("default"))[0]
	label := "signet/default/1/" + v.Created.UTC().Format(time.RFC3339Nano)
	tok.Tool(t, "--delete-object", "--type", "privkey", "--id", v.ID)
	tok.Tool(t, "--delete-object", "--type", "pubkey", "--id", v.ID)
	tok.Tool(t, "--keypairgen", "--key-type", "EC:prime256v1", "--id", v.ID, "--label", label, "--usage-sign")
	objs, listing := tok.ListObjects(t)
	n := 0
	for _, o := range objs {
		if o.ID == v.ID && o.Label == label {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("the new pair is not on the token as version 1:\n%s", listing)
	}
	signRefused(t, ts)
	s.refusedAfterRefresh(t, ts, 2)
	ts.readyz(t, false)
	if body := ts.statusz(t); !strings.Contains(body, "another public key") {
		t.Errorf("/statusz does not say the public key changed: %s", body)
	}
}
