package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/kubetest"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// kubeIssuer is the cluster's --service-account-issuer in these tests.
const kubeIssuer = "https://kubernetes.default.svc.cluster.local"

// kubeSignetConfig is a Signet whose ring "kube" signs the cluster's
// service-account tokens through kubernetes_signer on socket: a 1h
// token_max_ttl (kube-apiserver's default token lifetime), a 2s refresh
// (kube-apiserver re-reads the keys as often) and a publish_ahead of 4s, so
// that a rotated version signs within seconds.
func kubeSignetConfig(backend, socket string) string {
	return fmt.Sprintf("%sbackend_timeout: 5s\naudit: {path: %s}\nkey_rings:\n"+
		"  - {name: kube, backend: '%s', algorithm: ES256, token_max_ttl: 1h, jwks_max_age: 1s, refresh_interval: 2s, publish_ahead: 4s, retire_after: 1h1m}\n"+
		"kubernetes_signer: {socket: %s, key_ring: kube, issuer: %s, allowed_uids: [%d]}\n",
		configHead, filepath.Join(filepath.Dir(socket), "audit.log"), backend, socket, kubeIssuer, os.Getuid())
}

// kubeDir is a short temporary directory (a Unix socket path has at most
// 107 bytes), removed when the test ends.
func kubeDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestKubeAPIServerLocal runs a real kube-apiserver (and etcd) with `signet
// serve` on the local backend as its service-account token signer.
func TestKubeAPIServerLocal(t *testing.T) {
	t.Parallel()
	dir := kubeDir(t)
	socket := filepath.Join(dir, "signet.sock")
	p := startSignetWith(t, kubeSignetConfig("local://"+filepath.Join(dir, "keys"), socket))
	k := kubeRun(t, p, socket)

	// Signet stopped: kube-apiserver can issue no token, and says why;
	// the tokens it issued still authenticate (it keeps the keys).
	p.cmd.Process.Kill()
	<-p.exited
	_, err := k.api.TokenRequest(ctxT(t), "default", "app", []string{"vault"}, 3600)
	if err == nil {
		t.Fatal("TokenRequest with Signet stopped succeeded")
	}
	t.Logf("TokenRequest with Signet stopped: %v", err)
	k.mustReview(t, k.latest, true, "a token issued before Signet stopped")
}

// TestKubeAPIServerVault is the same on a real Vault, and a Vault outage:
// TokenRequest fails at once, the keys are still served.
func TestKubeAPIServerVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	vaultURL, _ := url.Parse(v.Addr)
	dir := kubeDir(t)
	socket := filepath.Join(dir, "signet.sock")
	p := startSignetWith(t, kubeSignetConfig("vault://"+vaultURL.Host+"/transit?scheme=http&key_prefix=k8s-", socket),
		"VAULT_TOKEN="+vaulttest.RootToken)
	k := kubeRun(t, p, socket)

	v.Freeze(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := k.api.TokenRequest(ctx, "default", "app", []string{"vault"}, 3600)
	if err == nil {
		t.Fatal("TokenRequest with Vault frozen succeeded")
	}
	t.Logf("TokenRequest with Vault frozen, after %v: %v", time.Since(start).Round(time.Millisecond), err)
	k.mustReview(t, k.latest, true, "a token issued before the outage")
	if kids := k.apiKids(t); !slices.Contains(kids, k.latestKid) {
		t.Fatalf("kube-apiserver's JWKS during the outage: %v", kids)
	}
	v.Thaw(t)
}

type kubeE2E struct {
	api       *kubetest.APIServer
	p         *process
	latest    string // the last token issued
	latestKid string
}

// kubeRun starts etcd and kube-apiserver with p as the signer and goes
// through TokenRequest, verification, TokenReview, rotation and revocation.
func kubeRun(t *testing.T, p *process, socket string) *kubeE2E {
	t.Helper()
	etcd := kubetest.StartEtcd(t)
	start := time.Now()
	k := &kubeE2E{p: p, api: kubetest.StartAPIServer(t, etcd, kubeIssuer, socket)}
	t.Logf("kube-apiserver ready in %v, signing through %s", time.Since(start).Round(time.Millisecond), socket)
	k.api.CreateServiceAccount(t, "default", "app")

	// TokenRequest → a token Signet signed, verified with go-jose against
	// kube-apiserver's JWKS and Signet's own.
	token := k.tokenRequest(t)
	claims := k.verify(t, token)
	if claims.Issuer != kubeIssuer || claims.Subject != "system:serviceaccount:default:app" || !claims.Audience.Contains("vault") {
		t.Fatalf("token claims %+v", claims)
	}
	disc := k.api.Get(t, "/.well-known/openid-configuration")
	var d struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(disc, &d); err != nil || d.Issuer != kubeIssuer || !strings.HasSuffix(d.JWKSURI, "/openid/v1/jwks") {
		t.Fatalf("discovery document %s: %v", disc, err)
	}
	t.Logf("discovery: %s", disc)
	t.Logf("kube-apiserver /openid/v1/jwks before rotation: %s", k.api.Get(t, "/openid/v1/jwks"))
	k.mustReview(t, token, true, "the first token")
	first, firstKid := token, k.latestKid

	// Audited by Signet: the caller (kube-apiserver's uid) and the token's sub.
	audit, _ := os.ReadFile(filepath.Join(filepath.Dir(socket), "audit.log"))
	if !strings.Contains(string(audit), `"rpc":"ExternalJWTSigner/Sign"`) || !strings.Contains(string(audit), `"sub":"system:serviceaccount:default:app"`) ||
		!strings.Contains(string(audit), fmt.Sprintf(`"caller":"unix:uid=%d,`, os.Getuid())) {
		t.Fatalf("audit log has no record of the Sign:\n%s", audit)
	}

	// Rotate: the new kid reaches kube-apiserver's JWKS within the refresh
	// hint; once it signs, new tokens carry it; old tokens still authenticate.
	rot, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "kube"})
	if err != nil {
		t.Fatal(err)
	}
	newKid := rot.GetVersion().GetKid()
	start = time.Now()
	k.waitKids(t, "the rotated kid", func(kids []string) bool { return slices.Contains(kids, newKid) && slices.Contains(kids, firstKid) })
	t.Logf("rotated: kid %s in kube-apiserver's JWKS after %v: %s", newKid, time.Since(start).Round(time.Millisecond), k.api.Get(t, "/openid/v1/jwks"))
	if !waitFor(30*time.Second, func() bool { k.tokenRequest(t); return k.latestKid == newKid }) {
		t.Fatalf("the rotated version never signed (last kid %s)", k.latestKid)
	}
	k.mustReview(t, first, true, "a token signed before the rotation")
	k.mustReview(t, k.latest, true, "a token signed by the rotated version")

	// Rotate --revoke-previous: the old kids leave; tokens they signed
	// stop authenticating once kube-apiserver refreshes.
	beforeRevoke := k.latest
	em, err := p.client.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "kube", RevokePrevious: true})
	if err != nil {
		t.Fatal(err)
	}
	emKid := em.GetVersion().GetKid()
	start = time.Now()
	k.waitKids(t, "only the emergency kid", func(kids []string) bool { return slices.Equal(kids, []string{emKid}) })
	t.Logf("revoked: kube-apiserver's JWKS after %v: %s", time.Since(start).Round(time.Millisecond), k.api.Get(t, "/openid/v1/jwks"))
	// kube-apiserver caches a successful authentication for 10s (its
	// TokenSuccessCacheTTL, whatever the authenticator): a revoked kid's
	// tokens fail from then on.
	k.waitReview(t, first, "a token of a revoked kid", start)
	k.waitReview(t, beforeRevoke, "a token of a revoked kid", start)
	if !waitFor(30*time.Second, func() bool {
		_, err := k.api.TokenRequest(ctxT(t), "default", "app", []string{"vault"}, 3600)
		return err == nil
	}) {
		t.Fatal("no token after the emergency rotation")
	}
	k.tokenRequest(t)
	if k.latestKid != emKid {
		t.Fatalf("after the emergency rotation tokens carry kid %s, want %s", k.latestKid, emKid)
	}
	k.mustReview(t, k.latest, true, "a token of the emergency version")
	return k
}

// tokenRequest asks kube-apiserver for a token of default/app and records it.
func (k *kubeE2E) tokenRequest(t *testing.T) string {
	t.Helper()
	token, err := k.api.TokenRequest(ctxT(t), "default", "app", []string{"vault"}, 3600)
	if err != nil {
		t.Fatal(err)
	}
	hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	var h struct {
		Kid string `json:"kid"`
	}
	_ = json.Unmarshal(hdr, &h)
	k.latest, k.latestKid = token, h.Kid
	return token
}

// verify checks token with go-jose against kube-apiserver's /openid/v1/jwks
// and against Signet's JWKS, and returns its claims.
func (k *kubeE2E) verify(t *testing.T, token string) jwt.Claims {
	t.Helper()
	var claims jwt.Claims
	for name, body := range map[string][]byte{"kube-apiserver /openid/v1/jwks": k.api.Get(t, "/openid/v1/jwks"), "Signet's JWKS": k.p.jwks(t)} {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(body, &set); err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		if err := tok.Claims(set, &claims); err != nil {
			t.Fatalf("the token does not verify with %s: %v\n%s", name, err, body)
		}
		if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: kubeIssuer, Time: time.Now()}, time.Minute); err != nil {
			t.Fatalf("claims: %v", err)
		}
	}
	return claims
}

func (k *kubeE2E) mustReview(t *testing.T, token string, want bool, what string) {
	t.Helper()
	r, err := k.api.TokenReview(ctxT(t), token, []string{"vault"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Authenticated != want || want && r.User.Username != "system:serviceaccount:default:app" {
		t.Fatalf("TokenReview of %s: %+v, want authenticated %v", what, r, want)
	}
	t.Logf("TokenReview of %s: authenticated=%v user=%q error=%q", what, r.Authenticated, r.User.Username, r.Error)
}

// waitReview waits (bounded) until TokenReview refuses token, and logs how
// long after since that took.
func (k *kubeE2E) waitReview(t *testing.T, token, what string, since time.Time) {
	t.Helper()
	var r kubetest.Review
	if !waitFor(40*time.Second, func() bool {
		var err error
		r, err = k.api.TokenReview(ctxT(t), token, []string{"vault"})
		return err == nil && !r.Authenticated
	}) {
		t.Fatalf("TokenReview of %s still says %+v", what, r)
	}
	t.Logf("TokenReview of %s, %v after the revocation: authenticated=%v error=%q", what, time.Since(since).Round(time.Millisecond), r.Authenticated, r.Error)
}

// apiKids are the kids of kube-apiserver's /openid/v1/jwks.
func (k *kubeE2E) apiKids(t *testing.T) []string {
	t.Helper()
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(k.api.Get(t, "/openid/v1/jwks"), &set); err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, key := range set.Keys {
		kids = append(kids, key.KeyID)
	}
	return kids
}

// waitKids waits (bounded by a few refresh hints) until kube-apiserver's
// JWKS satisfies ok.
func (k *kubeE2E) waitKids(t *testing.T, what string, ok func([]string) bool) {
	t.Helper()
	if !waitFor(30*time.Second, func() bool { return ok(k.apiKids(t)) }) {
		t.Fatalf("kube-apiserver's JWKS never showed %s: %v", what, k.apiKids(t))
	}
}
