package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	vaultapi "github.com/hashicorp/vault/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/internal/kmstest"
	"github.com/signet-dev/signet/internal/output"
	"github.com/signet-dev/signet/internal/vaulttest"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/lifecycle"
	"github.com/signet-dev/signet/server/x5c"
)

// x5cRings configures, on the backend URI given, a CA ring "ca" (ES384,
// usage: ca) and three signing rings: "default" (ES256) and "pss" (PS256)
// issued by it, and "self" (EdDSA) self-signed. algs overrides the
// algorithms of ca, default, pss and self for backends that lack some.
func x5cRings(t *testing.T, backend string, algs ...backends.Algorithm) config.Config {
	t.Helper()
	if len(algs) == 0 {
		algs = []backends.Algorithm{backends.ES384, backends.ES256, backends.PS256, backends.EdDSA}
	}
	cfg := testConfig(t)
	ring := func(name string, alg backends.Algorithm, x *config.X5CConfig) config.RingConfig {
		r := config.DefaultRing
		r.Name, r.Backend, r.Algorithm, r.X5C = name, backend, string(alg), x
		return r
	}
	ca := ring("ca", algs[0], &config.X5CConfig{Subject: config.SubjectConfig{CommonName: "Signet test CA", Organization: []string{"Signet"}}})
	ca.Usage = "ca"
	cfg.KeyRings = []config.RingConfig{ca,
		ring("default", algs[1], &config.X5CConfig{CARing: "ca"}),
		ring("pss", algs[2], &config.X5CConfig{CARing: "ca", DNSNames: []string{"signet.test"}}),
		ring("self", algs[3], &config.X5CConfig{SelfSigned: true}),
	}
	return cfg
}

// ringChain is the DER chain of the ring's active version, from ListKeys.
func ringChain(t *testing.T, ts *testServer, ring string) [][]byte {
	t.Helper()
	resp, err := ts.client.ListKeys(ctxT(t), &signetv1.ListKeysRequest{KeyRing: ring})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range resp.GetVersions() {
		if v.GetState() == signetv1.KeyState_KEY_STATE_ACTIVE {
			if len(v.GetCertificateChain()) == 0 {
				t.Fatalf("the active version of %s has no chain: %s", ring, v.GetCertificateProblem())
			}
			return v.GetCertificateChain()
		}
	}
	t.Fatalf("ring %s has no active version", ring)
	return nil
}

type jwkJSON struct {
	Kid      string   `json:"kid"`
	X5c      []string `json:"x5c"`
	X5tS256  string   `json:"x5t#S256"`
	Kty      string   `json:"kty"`
	Raw      json.RawMessage
	Verifier *gojose.JSONWebKey
}

// jwksKeys fetches the JWKS over HTTP and returns its keys by kid.
func jwksKeys(t *testing.T, ts *testServer) (map[string]jwkJSON, []byte) {
	t.Helper()
	_, body := ts.get(t, JWKSPath)
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	out := map[string]jwkJSON{}
	for _, raw := range doc.Keys {
		var k jwkJSON
		if err := json.Unmarshal(raw, &k); err != nil {
			t.Fatal(err)
		}
		k.Raw = raw
		var jk gojose.JSONWebKey // go-jose checks x5c against the key and x5t#S256
		if err := jk.UnmarshalJSON(raw); err != nil {
			t.Fatalf("go-jose refuses JWK %s: %v", k.Kid, err)
		}
		k.Verifier = &jk
		out[k.Kid] = k
	}
	return out, body
}

func pemFile(t *testing.T, name string, ders ...[]byte) string {
	t.Helper()
	var buf bytes.Buffer
	for _, d := range ders {
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// checkX5C checks, for each signing ring, that the JWKS entry of its
// active version carries its chain as x5c (base64 DER) and x5t#S256, and
// that the chain verifies against the ring's trust anchor with Go's
// x509.Verify, OpenSSL and Python's cryptography; and that a token signed
// by the ring verifies with the key of the leaf certificate, in Go, in
// PyJWT and in node's jose (importX509). anchors maps each ring to the ring whose active chain's last
// certificate is its trust anchor.
func checkX5C(t *testing.T, ts *testServer, anchors map[string]string) {
	t.Helper()
	keys, _ := jwksKeys(t, ts)
	for ring, anchorRing := range anchors {
		chain := ringChain(t, ts, ring)
		anchorChain := ringChain(t, ts, anchorRing)
		anchorDER := anchorChain[len(anchorChain)-1]
		tok := sign(t, ts, ring)
		parsed, err := jwt.ParseSigned(tok.GetToken(), []gojose.SignatureAlgorithm{gojose.ES256, gojose.ES384, gojose.ES512,
			gojose.RS256, gojose.RS384, gojose.RS512, gojose.PS256, gojose.PS384, gojose.PS512, gojose.EdDSA})
		if err != nil {
			t.Fatal(err)
		}
		k, ok := keys[tok.GetKid()]
		if !ok {
			t.Fatalf("%s: kid %s is not in the JWKS", ring, tok.GetKid())
		}
		if len(k.X5c) != len(chain) {
			t.Fatalf("%s: x5c has %d certificates, ListKeys %d", ring, len(k.X5c), len(chain))
		}
		for i, c := range k.X5c {
			der, err := base64.StdEncoding.DecodeString(c) // standard base64 with padding, RFC 7517 4.7
			if err != nil || !bytes.Equal(der, chain[i]) {
				t.Fatalf("%s: x5c[%d] is not the standard base64 of the chain's DER (%v)", ring, i, err)
			}
		}
		sum := sha256.Sum256(chain[0])
		if k.X5tS256 != base64.RawURLEncoding.EncodeToString(sum[:]) {
			t.Errorf("%s: x5t#S256 %q is not the leaf's SHA-256", ring, k.X5tS256)
		}

		// Go: the chain to the anchor, and the token with the leaf's key.
		leaf, err := x509.ParseCertificate(chain[0])
		if err != nil {
			t.Fatal(err)
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		root, _ := x509.ParseCertificate(anchorDER)
		roots.AddCert(root)
		for _, d := range chain[1:] {
			c, _ := x509.ParseCertificate(d)
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: ts.KeySet().Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: x509.Verify: %v", ring, err)
		}
		if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
			t.Errorf("%s: leaf has CA %v, key usage %v; want no CA bit and digitalSignature only", ring, leaf.IsCA, leaf.KeyUsage)
		}
		var claims jwt.Claims
		if err := parsed.Claims(leaf.PublicKey, &claims); err != nil {
			t.Errorf("%s: the token does not verify with the leaf certificate's key: %v", ring, err)
		}
		if !k.Verifier.Key.(interface{ Equal(crypto.PublicKey) bool }).Equal(leaf.PublicKey) {
			t.Errorf("%s: the JWK's key is not the leaf's", ring)
		}

		// OpenSSL.
		anchorFile := pemFile(t, "anchor.pem", anchorDER)
		args := []string{"verify", "-CAfile", anchorFile}
		if len(chain) > 2 {
			args = append(args, "-untrusted", pemFile(t, "untrusted.pem", chain[1:len(chain)-1]...))
		}
		args = append(args, pemFile(t, "leaf.pem", chain[0]))
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("%s: openssl %s: %v\n%s", ring, strings.Join(args, " "), err, out)
		}

		// Python: cryptography's path validation, then PyJWT with the leaf's key.
		root0, _ := os.Getwd()
		py := exec.Command("/usr/bin/python3", filepath.Join(root0, "..", "scripts", "verify_x5c.py"),
			ts.httpURL+JWKSPath, anchorFile, testIssuer(ts), "svc-b")
		py.Stdin = strings.NewReader(tok.GetToken() + "\n")
		out, err := py.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte(`"ok": true`)) {
			t.Errorf("%s: verify_x5c.py: %v\n%s", ring, err, out)
		}

		// node's jose: the key imported from the leaf certificate (importX509).
		node := exec.Command("node", filepath.Join(root0, "..", "scripts", "verify_jose.mjs"), ts.httpURL+JWKSPath, testIssuer(ts), "svc-b")
		node.Env = append(os.Environ(), "JOSE_PREFIX="+filepath.Join(root0, "..", "bin", "npm"), "JOSE_KEY_FROM=x5c")
		node.Stdin = strings.NewReader(tok.GetToken() + "\n")
		if out, err := node.CombinedOutput(); err != nil || !bytes.Contains(out, []byte(`"ok":true`)) {
			t.Errorf("%s: verify_jose.mjs with the key from x5c: %v\n%s", ring, err, out)
		}
	}
}

func testIssuer(ts *testServer) string { return ts.cfg.Issuer }

func TestX5CLocal(t *testing.T) {
	t.Parallel()
	ts := startServer(t, x5cRings(t, "local://"+t.TempDir()), Options{})
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca", "self": "self"})
	checkCARing(t, ts)
}

// checkCARing: the CA ring is never in the JWKS, refuses Sign with
// FailedPrecondition, and its certificate is a CA with path length 0.
func checkCARing(t *testing.T, ts *testServer) {
	t.Helper()
	caDER := ringChain(t, ts, "ca")
	ca, err := x509.ParseCertificate(caDER[0])
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v, MaxPathLen %d (zero %v), key usage %v", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero, ca.KeyUsage)
	}
	keys, _ := jwksKeys(t, ts)
	for _, v := range ts.KeySet().Versions(ts.KeySet().Ring("ca")) {
		if _, ok := keys[v.Kid]; ok {
			t.Errorf("CA version %s is in the JWKS", v.ID)
		}
	}
	_, err = ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "ca", Audience: []string{"svc"}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "CA ring") ||
		signetclient.ReasonOf(err) != signetv1.ErrorReason_KEY_RING_IS_CA {
		t.Errorf("Sign on the CA ring: %v (reason %v), want FailedPrecondition KEY_RING_IS_CA saying it is a CA ring",
			err, signetclient.ReasonOf(err))
	}
}

// Rotating the CA ring (revoking the old CA version, so the new one issues
// at once: a CA ring's keys are never published, so its emergency version
// does not wait for replicas to publish it) re-issues the leaves of the
// rings it serves, and they verify against the new CA certificate, not the
// old one.
func TestX5CCARotationReissuesLeaves(t *testing.T) {
	t.Parallel()
	ts := startServer(t, x5cRings(t, "local://"+t.TempDir()), Options{})
	oldCA := ringChain(t, ts, "ca")[0]
	if _, err := ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "ca", RevokePrevious: true}); err != nil {
		t.Fatal(err)
	}
	newCA := ringChain(t, ts, "ca")[0]
	if bytes.Equal(oldCA, newCA) {
		t.Fatal("the CA ring's certificate did not change with its version")
	}
	for _, ring := range []string{"default", "pss"} {
		if chain := ringChain(t, ts, ring); !bytes.Equal(chain[len(chain)-1], newCA) {
			t.Errorf("%s: the leaf chain still ends at the old CA certificate", ring)
		}
	}
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca"})
}

// Three replicas on one backend serve byte-identical JWKS with chains,
// after a rotation and after a version appears without a chain and every
// replica races to attach one: the backend keeps one (local: an exclusive
// link; Vault Transit, which has no compare-and-set: the last write), and
// every replica publishes the one it reads back by its next refresh.
func TestX5CReplicasServeIdenticalJWKS(t *testing.T) {
	t.Parallel()
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		replicasAgree(t, "local://"+dir, func(cfg *config.Config) {}, Options{}, backends.OpenOptions{}, dir)
	})
	t.Run("vault", func(t *testing.T) {
		t.Parallel()
		v := vaulttest.Start(t)
		u, _ := url.Parse(v.Addr)
		caDir := t.TempDir()
		replicasAgree(t, "vault://"+u.Host+"/transit?scheme=http&key_prefix=signet-", func(cfg *config.Config) {
			cfg.KeyRings[0].Backend = "local://" + caDir // a CA ring cannot live on Transit
		}, Options{Getenv: vaultEnv}, backends.OpenOptions{Getenv: vaultEnv}, "")
	})
}

// replicasAgree runs three replicas of x5cRings on backend (edit adjusts
// the config); localDir, for the local backend, is where the chain files
// are counted.
func replicasAgree(t *testing.T, backend string, edit func(*config.Config), opts Options, bopts backends.OpenOptions, localDir string) {
	// The three start together on an empty backend: they race to create
	// every ring's first version and to attach its chain, the CA rings'
	// included.
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srvs, errs := make([]*Server, 3), make([]error, 3)
	var wg sync.WaitGroup
	for i := range srvs {
		cfg := x5cRings(t, backend)
		edit(&cfg)
		wg.Go(func() { srvs[i], errs[i] = New(ctx, cfg, opts) })
	}
	wg.Wait()
	var replicas []*testServer
	for i, srv := range srvs {
		if errs[i] != nil {
			for _, s := range srvs {
				if s != nil {
					s.Close()
				}
			}
			cancel()
			t.Fatalf("replica %d: New: %v", i, errs[i])
		}
		ts := serveUntilCleanup(t, ctx, cancel, srv)
		ts.dial(t)
		replicas = append(replicas, ts)
	}
	same := func(when string) []byte {
		t.Helper()
		for _, ts := range replicas {
			for _, r := range ts.KeySet().Rings() {
				ts.KeySet().Tick(ctxT(t), r)
			}
		}
		_, first := jwksKeys(t, replicas[0])
		etag := replicas[0].jwks.current().ETag
		for i, ts := range replicas[1:] {
			if _, body := jwksKeys(t, ts); !bytes.Equal(body, first) || ts.jwks.current().ETag != etag {
				t.Fatalf("%s: replica %d serves another JWKS:\n%s\nreplica 0:\n%s", when, i+1, body, first)
			}
		}
		return first
	}
	same("at start")
	if _, err := replicas[1].client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
		t.Fatal(err)
	}
	body := same("after a rotation")
	if n := strings.Count(string(body), `"x5c"`); n != 4 { // default (2 versions), pss, self
		t.Errorf("JWKS has %d keys with x5c, want 4:\n%s", n, body)
	}

	// A version created behind the replicas' backs (as a replica that
	// crashed before attaching its chain leaves it), then all three race.
	b, err := backends.Open(ctxT(t), backend, bopts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ring := backends.KeyRing{Name: "default", Algorithm: backends.ES256}
	vs, _ := b.Versions(ctxT(t), ring)
	v, err := b.CreateVersion(ctxT(t), ring, vs[len(vs)-1].ID)
	if err != nil {
		t.Fatal(err)
	}
	start := make(chan struct{})
	done := make(chan struct{})
	for _, ts := range replicas {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			ts.KeySet().Tick(ctxT(t), ts.KeySet().Ring("default"))
		}()
	}
	close(start)
	for range replicas {
		<-done
	}
	body = same("after racing to attach a chain")
	kid, _ := backends.KeyID(v.PublicKey)
	keys, _ := jwksKeys(t, replicas[0])
	if len(keys[kid].X5c) != 2 {
		t.Errorf("the raced version %s is published with %d certificates, want 2:\n%s", v.ID, len(keys[kid].X5c), body)
	}
	if localDir != "" {
		chains, _ := filepath.Glob(filepath.Join(localDir, "rings", "default", v.ID+".x5c.*"))
		if len(chains) != 1 {
			t.Errorf("the raced version has chain files %v, want one", chains)
		}
	}
}

// A ring with x5c on a backend that cannot store chains (one without
// backends.CertificateStore, as a backend added later may be) is refused at
// startup, naming the ring.
func TestX5COnABackendWithoutCertificateStore(t *testing.T) {
	t.Parallel()
	b, err := backends.Open(ctxT(t), "local://"+t.TempDir(), backends.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	bare := struct{ backends.Signer }{b} // the Signer contract only
	spec := lifecycle.RingSpec{Name: "default", Algorithm: backends.ES256, Schedule: config.DefaultRing.Schedule(), Backend: bare,
		Certificates: &lifecycle.CertSpec{Source: lifecycle.SourceSelfSigned, Profile: x5c.Profile{Validity: 48 * time.Hour, RenewBefore: 12 * time.Hour}}}
	_, err = lifecycle.New(ctxT(t), []lifecycle.RingSpec{spec}, lifecycle.Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot store certificate chains") || !strings.Contains(err.Error(), `"default"`) {
		t.Errorf("lifecycle.New: %v, want a refusal naming the ring and saying its backend cannot store chains", err)
	}
	spec.Certificates = nil
	if _, err := lifecycle.New(ctxT(t), []lifecycle.RingSpec{spec}, lifecycle.Options{}); err != nil {
		t.Errorf("the same backend without x5c: %v", err)
	}
}

func vaultEnv(k string) string {
	if k == "VAULT_TOKEN" {
		return vaulttest.RootToken
	}
	return ""
}

// On a real Vault, the chains live in Transit (set-certificate) and come
// back with every read of the key. A CA ring's certificate cannot
// (set-certificate takes leaves only), so the CA ring lives on the local
// backend here, and a CA ring on Transit is refused at startup.
func TestX5CVaultTransit(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	u, _ := url.Parse(v.Addr)
	transit := "vault://" + u.Host + "/transit?scheme=http&key_prefix=signet-"
	cfg := x5cRings(t, transit)
	cfg.KeyRings[0].Backend = "local://" + t.TempDir()
	ts := startServer(t, cfg, Options{Getenv: vaultEnv})
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca", "self": "self"})
	checkCARing(t, ts)
	key := v.Root(t).Logical()
	sec, err := key.Read("transit/keys/signet-default")
	if err != nil {
		t.Fatal(err)
	}
	stored := sec.Data["keys"].(map[string]any)["1"].(map[string]any)["certificate_chain"].(string)
	chain := ringChain(t, ts, "default")
	if got, err := backends.DecodePEMChain([]byte(stored)); err != nil || !backends.SameChain(got, chain) {
		t.Errorf("Transit holds another chain for version 1 than the one published:\n%s", stored)
	}

	cfg = x5cRings(t, transit)
	cfg.KeyRings = cfg.KeyRings[:1]
	cfg.KeyRings[0].Name = "vault-ca"
	_, err = New(ctxT(t), cfg, Options{Getenv: vaultEnv, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "leaf certificates only") {
		t.Errorf("a CA ring on Transit: New returned %v, want a refusal saying set-certificate takes leaves only", err)
	}
}

// startPKI enables a PKI secrets engine on v with a root CA and a role
// "signet" that signs any request, and returns the root certificate (DER).
func startPKI(t *testing.T, v *vaulttest.Server) []byte {
	t.Helper()
	if err := v.Root(t).Sys().Mount("pki", &vaultapi.MountInput{Type: "pki", Config: vaultapi.MountConfigInput{MaxLeaseTTL: "87600h"}}); err != nil {
		t.Fatal(err)
	}
	root := v.Write(t, "pki/root/generate/internal", map[string]any{"common_name": "Vault PKI test root", "ttl": "87600h"})
	v.Write(t, "pki/roles/signet", map[string]any{"allow_any_name": true, "enforce_hostnames": false, "allowed_uri_sans": "*",
		"key_type": "any", "max_ttl": "8760h", "require_cn": false, "key_usage": "DigitalSignature"})
	der, err := backends.DecodePEMChain([]byte(root.Data["certificate"].(string)))
	if err != nil || len(der) != 1 {
		t.Fatalf("the PKI root: %v", err)
	}
	return der[0]
}

// vaultPKIRing is a ring "pki" on backend whose leaves a Vault PKI engine
// (on a Vault of its own) issues.
func vaultPKIRing(t *testing.T, backend string) config.RingConfig {
	t.Helper()
	v := vaulttest.Start(t)
	startPKI(t, v)
	r := config.DefaultRing
	r.Name, r.Backend, r.Algorithm = "pki", backend, "ES256"
	r.X5C = &config.X5CConfig{VaultPKI: &config.VaultPKIConfig{Address: v.Addr, Role: "signet", AllowHTTP: true}}
	return r
}

// A Vault PKI engine issues the leaves from certification requests that
// the rings' own backends signed, for keys in Vault Transit and in the
// local backend alike; the chain ends at the engine's root.
func TestX5CVaultPKI(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	rootDER := startPKI(t, v)
	u, _ := url.Parse(v.Addr)
	pki := &config.VaultPKIConfig{Address: v.Addr, Role: "signet", AllowHTTP: true}
	cfg := x5cRings(t, "vault://"+u.Host+"/transit?scheme=http&key_prefix=signet-")
	cfg.KeyRings = cfg.KeyRings[1:3] // default (ES256) and pss (PS256) on Transit
	for i := range cfg.KeyRings {
		cfg.KeyRings[i].X5C = &config.X5CConfig{VaultPKI: pki}
	}
	local := cfg.KeyRings[0]
	local.Name, local.Backend, local.Algorithm = "edge", "local://"+t.TempDir(), "ES384"
	cfg.KeyRings = append(cfg.KeyRings, local)
	ts := startServer(t, cfg, Options{Getenv: vaultEnv})
	for _, ring := range []string{"default", "pss", "edge"} {
		chain := ringChain(t, ts, ring)
		if !bytes.Equal(chain[len(chain)-1], rootDER) {
			t.Errorf("%s: the chain does not end at the PKI root", ring)
		}
	}
	checkX5C(t, ts, map[string]string{"default": "default", "pss": "pss", "edge": "edge"})
}

// A Vault PKI engine that refuses for good (a role it does not have, a
// token it denies) stops startup with the reason, rather than leaving a
// ring withheld and retrying forever.
func TestX5CVaultPKIMisconfiguredRefusesToStart(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	startPKI(t, v)
	for _, c := range []struct {
		name, role string
		getenv     func(string) string
		want       string
	}{
		{"unknown role", "nosuchrole", vaultEnv, "nosuchrole"},
		{"denied token", "signet", func(k string) string {
			if k == "VAULT_TOKEN" {
				return "not-a-token"
			}
			return vaultEnv(k)
		}, "permission denied"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.KeyRings[0].Backend = "local://" + t.TempDir()
			cfg.KeyRings[0].X5C = &config.X5CConfig{VaultPKI: &config.VaultPKIConfig{Address: v.Addr, Role: c.role, AllowHTTP: true}}
			_, err := New(ctxT(t), cfg, Options{Getenv: c.getenv, Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("New returned %v, want a refusal mentioning %q", err, c.want)
			}
		})
	}
}

// With x5c.required (the default), a version whose chain cannot be
// obtained (the Vault PKI engine is down) is neither published nor signs,
// even once publish_ahead has passed: the previous version keeps signing,
// and /statusz and the metrics say why. With required: false it is
// published without x5c and becomes active on schedule.
func TestX5CRequiredWhenVaultPKIIsDown(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	startPKI(t, v)
	clock := clocktest.New()
	cfg := testConfig(t)
	dir := t.TempDir()
	lax := false
	cfg.KeyRings[0].Backend = "local://" + dir
	cfg.KeyRings[0].X5C = &config.X5CConfig{VaultPKI: &config.VaultPKIConfig{Address: v.Addr, Role: "signet", AllowHTTP: true}}
	laxRing := cfg.KeyRings[0]
	laxRing.Name = "lax"
	laxRing.X5C = &config.X5CConfig{VaultPKI: &config.VaultPKIConfig{Address: v.Addr, Role: "signet", AllowHTTP: true}, Required: &lax}
	cfg.KeyRings = append(cfg.KeyRings, laxRing)
	ts := startServer(t, cfg, Options{Getenv: vaultEnv, Now: clock.Now})
	first := map[string]string{}
	for _, ring := range []string{"default", "lax"} {
		first[ring] = sign(t, ts, ring).GetKid()
	}
	v.Kill(t)
	created := map[string]string{}
	for _, ring := range []string{"default", "lax"} {
		resp, err := ts.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: ring})
		if err != nil {
			t.Fatalf("Rotate(%s): %v", ring, err)
		}
		created[ring] = resp.GetVersion().GetKid()
		if !strings.Contains(resp.GetVersion().GetCertificateProblem(), "issue_failed") {
			t.Errorf("%s: the new version's certificate_problem is %q, want the failure to issue", ring, resp.GetVersion().GetCertificateProblem())
		}
	}
	clock.Advance(config.DefaultRing.PublishAhead.D() + time.Minute)
	for _, r := range ts.KeySet().Rings() {
		ts.KeySet().Tick(ctxT(t), r)
	}
	keys, body := jwksKeys(t, ts)
	if _, ok := keys[created["default"]]; ok {
		t.Errorf("the required ring's version without a chain is published:\n%s", body)
	}
	if got := sign(t, ts, "default").GetKid(); got != first["default"] {
		t.Errorf("the required ring signs with %s, want the previous version %s", got, first["default"])
	}
	if k, ok := keys[created["lax"]]; !ok || len(k.X5c) != 0 {
		t.Errorf("the lax ring's new version: published %v, x5c %v; want published without x5c:\n%s", ok, k.X5c, body)
	}
	if got := sign(t, ts, "lax").GetKid(); got != created["lax"] {
		t.Errorf("the lax ring signs with %s, want its new version %s", got, created["lax"])
	}

	resp, err := http.Get(ts.adminURL + StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	var withheld *VersionStatus
	for _, r := range st.KeyRings {
		for i, vs := range r.Versions {
			if vs.Kid == created["default"] {
				withheld = &r.Versions[i]
			}
		}
	}
	if withheld == nil || !withheld.Withheld || !strings.Contains(withheld.CertificateProblem, "issue_failed") {
		t.Errorf("/statusz shows the withheld version as %+v, want withheld with the failure to issue", withheld)
	}
	if !st.Signing {
		t.Errorf("/statusz says this replica cannot sign, though every ring has a version that signs: %q", st.SigningProblems)
	}
	m := scrape(t, ts)
	if got := m.Value(t, "signet_key_ring_versions_without_x5c", "key_ring", "default", "withheld", "true"); got != 1 {
		t.Errorf("versions_without_x5c{default, withheld} = %v, want 1", got)
	}
	if got := m.Value(t, "signet_key_ring_versions_without_x5c", "key_ring", "lax", "withheld", "false"); got != 1 {
		t.Errorf("versions_without_x5c{lax, not withheld} = %v, want 1", got)
	}
	if got := m.Value(t, "signet_x5c_failures_total", "key_ring", "default", "reason", "issue_failed"); got < 1 {
		t.Errorf("x5c_failures_total{default, issue_failed} = %v, want at least 1", got)
	}
}

// With a clock under test control, a certificate approaching its notAfter
// (within renew_before) is renewed while its key is still published, for
// a CA-issued ring and a self-signed one, and so is the CA's certificate.
func TestX5CRenewedBeforeExpiry(t *testing.T) {
	t.Parallel()
	clock := clocktest.New()
	cfg := x5cRings(t, "local://"+t.TempDir())
	cfg.KeyRings = []config.RingConfig{cfg.KeyRings[0], cfg.KeyRings[1], cfg.KeyRings[3]} // ca, default, self
	for i := range cfg.KeyRings {
		cfg.KeyRings[i].X5C.Validity, cfg.KeyRings[i].X5C.RenewBefore = config.Duration(3*time.Hour), config.Duration(time.Hour)
	}
	cfg.KeyRings[0].X5C.Validity = config.Duration(6 * time.Hour) // the CA outlives one leaf
	ts := startServer(t, cfg, Options{Now: clock.Now})
	before := map[string]*x509.Certificate{}
	for _, ring := range []string{"ca", "default", "self"} {
		before[ring], _ = x509.ParseCertificate(ringChain(t, ts, ring)[0])
	}
	clock.Advance(2*time.Hour + 10*time.Minute) // the leaves are within renew_before, the CA not yet
	for _, r := range ts.KeySet().Rings() {
		ts.KeySet().Tick(ctxT(t), r)
	}
	keys, _ := jwksKeys(t, ts)
	for _, ring := range []string{"default", "self"} {
		chain := ringChain(t, ts, ring)
		leaf, _ := x509.ParseCertificate(chain[0])
		if leaf.SerialNumber.Cmp(before[ring].SerialNumber) == 0 || !leaf.NotAfter.After(clock.Now().Add(time.Hour)) {
			t.Errorf("%s: the certificate was not renewed ahead of its notAfter %s (now %s)", ring, before[ring].NotAfter, clock.Now())
		}
		v, _ := ts.KeySet().Active(ts.KeySet().Ring(ring))
		if k := keys[v.Kid]; len(k.X5c) == 0 || k.X5c[0] != base64.StdEncoding.EncodeToString(chain[0]) {
			t.Errorf("%s: the JWKS does not publish the renewed certificate", ring)
		}
		roots := x509.NewCertPool()
		anchor, _ := x509.ParseCertificate(chain[len(chain)-1])
		roots.AddCert(anchor)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: clock.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s: the renewed chain does not verify: %v", ring, err)
		}
	}
	if ca, _ := x509.ParseCertificate(ringChain(t, ts, "ca")[0]); !ca.Equal(before["ca"]) {
		t.Error("the CA certificate was renewed although it is not within renew_before")
	}
	clock.Advance(2*time.Hour + 55*time.Minute) // the CA's certificate now is within renew_before; the leaves follow it
	for _, r := range ts.KeySet().Rings() {
		ts.KeySet().Tick(ctxT(t), r)
	}
	caNow := ringChain(t, ts, "ca")[0]
	if bytes.Equal(caNow, before["ca"].Raw) {
		t.Fatal("the CA certificate was not renewed")
	}
	if chain := ringChain(t, ts, "default"); !bytes.Equal(chain[1], caNow) {
		t.Error("the leaf was not re-issued under the renewed CA certificate")
	}
}

// On the KMS test server (the real AWS SDK), the chains live in the keys'
// descriptions: even an RSA-4096 leaf under an RSA-4096 CA fits its 8,192
// characters beside the public key.
func TestX5CAWSKMS(t *testing.T) {
	t.Parallel()
	k := kmstest.Start()
	t.Cleanup(k.Close)
	cfg := x5cRings(t, "awskms:?endpoint="+url.QueryEscape(k.URL), backends.PS512, backends.ES256, backends.RS512, backends.EdDSA)
	cfg.KeyRings = append(cfg.KeyRings, vaultPKIRing(t, cfg.KeyRings[1].Backend))
	ts := startServer(t, cfg, Options{Getenv: vaultEnv})
	checkX5C(t, ts, map[string]string{"default": "ca", "pss": "ca", "self": "self", "pki": "pki"})
	checkCARing(t, ts)
	for _, ring := range []string{"ca", "default", "pss", "self"} {
		v, _ := ts.KeySet().Active(ts.KeySet().Ring(ring))
		if ring == "ca" {
			v = ts.KeySet().Versions(ts.KeySet().Ring(ring))[0]
		}
		var d string
		for _, key := range k.Keys() {
			if key.ARN == v.ID {
				d = key.Description
			}
		}
		if !strings.Contains(d, "; x5c: ") || len(d) > 8192 {
			t.Errorf("%s: the key's description (%d characters) does not hold the chain", ring, len(d))
		}
	}
}

// A chain stored for a version whose certificate is for another key (put
// there behind Signet's back) is never published with that version: the
// refresh withholds the version and logs a key mismatch at error; the next
// round of the refresh loop replaces the chain with one for the version's
// own key, and the version is published again.
func TestX5CChainForAnotherKeyIsNeverPublished(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	logs := &output.Buffer{}
	ts := startServer(t, x5cRings(t, "local://"+dir), Options{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ks, ring := ts.KeySet(), ts.KeySet().Ring("default")
	v, _ := ks.Active(ring)
	b, err := backends.Open(ctxT(t), "local://"+dir, backends.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	wrong := ringChain(t, ts, "self") // a valid chain, for the self ring's key
	if _, err := b.(backends.CertificateStore).PutCertificates(ctxT(t), backends.KeyRing{Name: "default", Algorithm: backends.ES256},
		v.ID, v.Certificates, wrong); err != nil {
		t.Fatal(err)
	}
	if err := ks.Refresh(ctxT(t), ring); err != nil {
		t.Fatal(err)
	}
	keys, body := jwksKeys(t, ts)
	if _, ok := keys[v.Kid]; ok {
		t.Fatalf("the version is published with a chain for another key:\n%s", body)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "certificate stored with a version is for another key") {
		t.Errorf("no error log about the chain for another key:\n%s", logs.String())
	}
	ks.Tick(ctxT(t), ring)
	keys, body = jwksKeys(t, ts)
	if k, ok := keys[v.Kid]; !ok || len(k.X5c) != 2 {
		t.Fatalf("after the refresh loop the version is not published with a chain of its own:\n%s", body)
	}
	checkX5C(t, ts, map[string]string{"default": "ca"})
}
