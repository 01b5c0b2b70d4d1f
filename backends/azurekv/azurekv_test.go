package azurekv

import (
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"go.uber.org/goleak"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/azurekvtest"
	"github.com/signet-dev/signet/internal/clocktest"
)

// identity is the Entra ID look-alike every test's credential gets its
// tokens from.
var identity *azurekvtest.Identity

// TestMain starts the identity server and points DefaultAzureCredential at
// it and the system trust store at the test CA, once, before any test (Go
// reads SSL_CERT_FILE once).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signet-azurekv-")
	if err != nil {
		panic(err)
	}
	identity = azurekvtest.StartIdentity()
	identity.SetEnv(dir)
	code := m.Run()
	identity.Close()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

func start(t testing.TB) *azurekvtest.Server {
	s := azurekvtest.Start(identity)
	t.Cleanup(s.Close)
	return s
}

func open(t testing.TB, s *azurekvtest.Server, query string) *Backend {
	t.Helper()
	return openWith(t, s, query, backends.OpenOptions{})
}

func openWith(t testing.TB, s *azurekvtest.Server, query string, opts backends.OpenOptions) *Backend {
	t.Helper()
	u, err := url.Parse("azurekv://" + strings.TrimPrefix(s.URL, "https://") + "/?disable_instance_discovery=true" + query)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Open(context.Background(), u, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b.(*Backend)
}

func withVersion(t *testing.T, ring backends.KeyRing) (*azurekvtest.Server, *Backend, backends.Version) {
	t.Helper()
	s := start(t)
	b := open(t, s, "")
	return s, b, signertest.CreateVersion(t, b, ring, "")
}

func jws(alg backends.Algorithm) []byte {
	return []byte(base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"`+string(alg)+`"}`)) + ".e30")
}

func TestConformance(t *testing.T) {
	t.Parallel()
	s := start(t)
	signertest.Run(t, signertest.Harness{
		OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer { return openWith(t, s, "", opts) },
		Lossy: func(t *testing.T) signertest.LossyTransport {
			s := start(t)
			return signertest.LossyTransport{
				OpenWith:       func(t *testing.T, opts backends.OpenOptions) backends.Signer { return openWith(t, s, "", opts) },
				LoseNextCreate: func() { s.LoseNext("create") },
				Lost:           s.Lost,
			}
		},
	})
}

// Three replicas find a ring empty and create its first version at once,
// round after round; the test server holds their creations until all three
// have arrived, so each makes a version with the same signet-seq, and RSA
// keys (whose generation time varies) make them land in any order, often
// within one second. Every round exactly one replica succeeds, the others
// report a conflict, and the version the winner returned is the one every
// replica lists, enabled, before and after the recovery grace: a replica
// never reports success for a version that later loses.
func TestRacingReplicasCreateOneVersion(t *testing.T) {
	t.Parallel()
	const rounds = 8
	for round := range rounds {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			t.Parallel()
			raceRound(t, round)
		})
	}
}

func raceRound(t *testing.T, round int) {
	ring := backends.KeyRing{Name: fmt.Sprintf("race-%d", round), Algorithm: backends.RS256}
	s := start(t)
	replicas := []*Backend{open(t, s, ""), open(t, s, ""), open(t, s, "")}
	s.HoldCreates(len(replicas))
	var wg sync.WaitGroup
	errs := make([]error, len(replicas))
	vs := make([]backends.Version, len(replicas))
	for i, r := range replicas {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			vs[i], errs[i] = r.CreateVersion(ctx, ring, "")
		})
	}
	wg.Wait()
	var won []backends.Version
	for i, err := range errs {
		switch {
		case err == nil:
			won = append(won, vs[i])
		case backends.KindOf(err) != backends.KindConflict:
			t.Errorf("round %d: a losing replica: %v, want a conflict", round, err)
		}
	}
	if len(won) != 1 {
		t.Errorf("round %d: %d replicas reported success, want exactly one: %+v", round, len(won), won)
		return
	}
	clock := clocktest.New()
	live := openWith(t, s, "", backends.OpenOptions{Now: clock.Now, RecoveryGrace: time.Minute})
	for _, r := range append(replicas, live) {
		listed, err := r.Versions(context.Background(), ring)
		if err != nil || len(listed) != 1 || listed[0].ID != won[0].ID || listed[0].Disabled || !listed[0].Created.Equal(won[0].Created) {
			t.Errorf("round %d: Versions after the race: %+v, %v; want only %s, enabled, created %v", round, listed, err, won[0].ID, won[0].Created)
		}
	}
	clock.Advance(2 * time.Minute)
	for range 2 {
		listed, err := live.Versions(context.Background(), ring)
		if err != nil || len(listed) != 1 || listed[0].ID != won[0].ID || listed[0].Disabled {
			t.Errorf("round %d: Versions after the grace: %+v, %v; want only %s, enabled", round, listed, err, won[0].ID)
		}
		clock.Advance(2 * time.Minute)
	}
	key, _ := live.keyName(ring)
	enabled := 0
	for _, v := range s.Versions(key) {
		if v.Enabled {
			enabled++
			// Published (its creation time for Signet) once the race
			// was decided, past created + 1 s + CreateWindow.
			if !won[0].Created.After(v.Created.Add(time.Second)) {
				t.Errorf("round %d: the winner's creation time %v is not after the race window of its Key Vault created time %v", round, won[0].Created, v.Created)
			}
		}
	}
	if enabled != 1 || len(s.Versions(key)) != len(replicas) {
		t.Errorf("round %d: %d of %d versions enabled, want 1 of %d", round, enabled, len(s.Versions(key)), len(replicas))
	}
	for _, v := range s.Versions(key) {
		if want := map[bool]string{true: "published", false: "lost"}[v.ID == won[0].ID[len(won[0].ID)-32:]]; v.Tags["signet-state"] != want {
			t.Errorf("round %d: version %s is tagged %q, want %q", round, v.ID, v.Tags["signet-state"], want)
		}
	}
	if left, err := live.Leftovers(context.Background(), ring); err != nil || len(left) != 0 {
		t.Errorf("round %d: Leftovers %+v, %v; want none (the losers are disabled for good)", round, left, err)
	}
	if err := signertest.SignAndVerify(context.Background(), live, ring, won[0], jws(ring.Algorithm)); err != nil {
		t.Errorf("round %d: the winner does not sign: %v", round, err)
	}
	signertest.CreateVersion(t, live, ring, won[0].ID) // the ring rotates on
}

// Releases before signet-state created versions enabled and disabled the
// losers afterwards. A loser whose replica died before disabling it is
// disabled by a live replica once the grace has passed, and never listed
// meanwhile.
func TestLeftEnabledLoserIsDisabledAfterTheGrace(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "orphan", Algorithm: backends.RS256}
	s, b, v1 := withVersion(t, ring)
	// Two replicas' creations with the same signet-seq, enabled at once
	// and without signet-state, as such a release left them when the
	// loser died before its re-list: made directly with the SDK.
	for range 2 {
		params := b.createParams(ring, specs[ring.Algorithm], 2)
		params.KeyAttributes.Enabled = to(true)
		delete(params.Tags, tagState)
		if _, err := b.client.CreateKey(context.Background(), "signet-orphan", params, nil); err != nil {
			t.Fatal(err)
		}
	}
	clock := clocktest.New()
	var recovered []string
	live := openWith(t, s, "", backends.OpenOptions{Now: clock.Now, RecoveryGrace: time.Minute,
		OnRecover: func(a string) { recovered = append(recovered, a) }})
	for range 2 {
		vs, err := live.Versions(context.Background(), ring)
		if err != nil || len(vs) != 2 || vs[0].ID != v1.ID {
			t.Fatalf("Versions: %+v, %v", vs, err)
		}
		if len(recovered) != 0 {
			t.Fatalf("a loser was disabled within the grace: %v", recovered)
		}
	}
	clock.Advance(2 * time.Minute)
	if _, err := live.Versions(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	if len(recovered) != 1 || recovered[0] != backends.RecoveredDisabled {
		t.Errorf("recovered %v, want one disabled", recovered)
	}
	enabled := 0
	for _, v := range s.Versions("signet-orphan") {
		if v.Enabled {
			enabled++
		}
	}
	if enabled != 2 {
		t.Errorf("%d versions enabled, want v1 and the winner", enabled)
	}
}

func TestKeysAreTaggedAndCanOnlySign(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "usage", Algorithm: backends.PS384}
	s, b, v := withVersion(t, ring)
	vs := s.Versions("signet-usage")
	if len(vs) != 1 || strings.Join(vs[0].Ops, ",") != "sign,verify" || vs[0].Tags["signet-seq"] != "1" || vs[0].Tags["signet-ring"] != "usage" {
		t.Fatalf("the version Signet made: %+v", vs)
	}
	if err := b.CheckKeyUsage(context.Background(), ring); err != nil {
		t.Errorf("CheckKeyUsage of Signet's own key: %v", err)
	}
	s.SetOps("signet-usage", vs[0].ID, "sign", "verify", "decrypt", "unwrapKey")
	err := b.CheckKeyUsage(context.Background(), ring)
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "decrypt, unwrapKey") {
		t.Errorf("CheckKeyUsage of a key that may decrypt: %v", err)
	}
	s.SetOps("signet-usage", vs[0].ID, "verify")
	if _, err := open(t, s, "").Versions(context.Background(), ring); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Versions of a key that cannot sign: %v", err)
	}
	_ = v
}

func TestEdDSAIsRefused(t *testing.T) {
	t.Parallel()
	b := open(t, start(t), "")
	if backends.Supports(b, backends.EdDSA) {
		t.Fatal("the Key Vault backend claims EdDSA")
	}
	_, err := b.CreateVersion(context.Background(), backends.KeyRing{Name: "ed", Algorithm: backends.EdDSA}, "")
	if backends.KindOf(err) != backends.KindUnimplemented || !strings.Contains(err.Error(), "no Ed25519") {
		t.Errorf("CreateVersion for EdDSA: %v", err)
	}
}

func TestPermissionDeniedNamesTheDataAction(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "denied", Algorithm: backends.ES512}
	s, b, v := withVersion(t, ring)
	s.Deny("Microsoft.KeyVault/vaults/keys/sign/action", true)
	_, err := b.Sign(context.Background(), ring, v.ID, jws(ring.Algorithm))
	if backends.KindOf(err) != backends.KindPermissionDenied || !strings.Contains(err.Error(), "needs the data action Microsoft.KeyVault/vaults/keys/sign/action") {
		t.Errorf("Sign without keys/sign/action: %v", err)
	}
}

func TestThrottlingIsRetriedThenUnavailable(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "throttled", Algorithm: backends.ES256}
	s, b, v := withVersion(t, ring)
	s.Throttle.Store(2)
	before := s.Calls("sign")
	if err := signertest.SignAndVerify(context.Background(), b, ring, v, jws(ring.Algorithm)); err != nil {
		t.Fatalf("two throttled attempts should be retried: %v", err)
	}
	if n := s.Calls("sign") - before; n != 1 || s.Throttle.Load() != 0 {
		t.Errorf("sign reached the vault %d times after the throttling, want 1", n)
	}
	s.Throttle.Store(1000)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := b.Sign(ctx, ring, v.ID, jws(ring.Algorithm)); backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("persistent throttling: %v", err)
	}
	s.Throttle.Store(0)
}

func TestServerGoneIsUnavailableWithinTheDeadline(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "gone", Algorithm: backends.ES384}
	s, b, v := withVersion(t, ring)
	s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := b.Sign(ctx, ring, v.ID, jws(ring.Algorithm)); backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("Sign with Key Vault gone: %v", err)
	}
}

func TestNoCredentialsInTheURI(t *testing.T) {
	t.Parallel()
	for _, raw := range []string{"azurekv://v.vault.azure.net/?client_secret=x", "azurekv://id:secret@v.vault.azure.net/", "azurekv:v.vault.azure.net"} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u, backends.OpenOptions{}); backends.KindOf(err) != backends.KindInvalidArgument {
			t.Errorf("%s: %v", u.Redacted(), err)
		}
	}
}

// Key Vault's key ids name the vault's host in lower case and without
// the default port, however the URI wrote it: such a URI still finds its
// versions.
func TestHostIsMatchedAsKeyVaultWritesIt(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("azurekv://MyVault.Vault.Azure.NET:443/")
	o, err := parseURI(u)
	if err != nil || o.vault != "https://myvault.vault.azure.net/" || o.managedHSM {
		t.Fatalf("parseURI: %+v, %v", o, err)
	}
	b := &Backend{vault: o.vault, prefix: o.prefix}
	ring := backends.KeyRing{Name: "r", Algorithm: backends.ES256}
	const ver = "0123456789abcdef0123456789abcdef"
	for _, id := range []string{"https://myvault.vault.azure.net/keys/signet-r/" + ver, "https://MYVAULT.vault.azure.net/keys/signet-r/" + ver} {
		if name, v, err := b.versionOf(ring, id); err != nil || name != "signet-r" || v != ver {
			t.Errorf("versionOf(%s): %s %s %v", id, name, v, err)
		}
	}
	for _, id := range []string{"https://other.vault.azure.net/keys/signet-r/" + ver, "https://myvault.vault.azure.net/keys/signet-rr/" + ver,
		"https://myvault.vault.azure.net/keys/signet-r/" + ver[1:]} {
		if _, _, err := b.versionOf(ring, id); backends.KindOf(err) != backends.KindNotFound {
			t.Errorf("versionOf(%s): %v, want not found", id, err)
		}
	}
}

// A credential chain that yields no token is a configuration error named
// as such, not Key Vault being unreachable; Entra ID refusing the
// credential is PermissionDenied too.
func TestNoCredentialIsPermissionDenied(t *testing.T) {
	t.Parallel()
	s := start(t)
	o, err := parseURI(&url.URL{Scheme: Scheme, Host: strings.TrimPrefix(s.URL, "https://"), Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	ring := backends.KeyRing{Name: "nocred", Algorithm: backends.ES256}
	// Workload identity whose token file is not there, as on a pod where
	// the projection is missing: azidentity fails without any request.
	none, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{TenantID: azurekvtest.TenantID,
		ClientID: azurekvtest.ClientID, TokenFilePath: filepath.Join(t.TempDir(), "missing-token"), DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := azidentity.NewClientSecretCredential(azurekvtest.TenantID, azurekvtest.ClientID, "not-the-secret",
		&azidentity.ClientSecretCredentialOptions{DisableInstanceDiscovery: true,
			ClientOptions: azcore.ClientOptions{Cloud: cloud.Configuration{ActiveDirectoryAuthorityHost: identity.URL + "/"}}})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		cred azcore.TokenCredential
		want string
	}{"no credential": {none, "no credential"}, "refused": {wrong, "Microsoft Entra ID refused"}} {
		b, err := newBackend(o, c.cred, azcore.ClientOptions{}, backends.OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err = b.Versions(ctx, ring)
		cancel()
		if backends.KindOf(err) != backends.KindPermissionDenied || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want permission denied saying %q", name, err, c.want)
		}
	}
}

// A key name that is soft-deleted cannot be created again until it is
// recovered or purged: that is a failed precondition saying so, not a
// rotation race.
func TestSoftDeletedKeyIsFailedPrecondition(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "softdeleted", Algorithm: backends.ES256}
	s, b, v := withVersion(t, ring)
	ctx := context.Background()
	if _, err := b.client.DeleteKey(ctx, "signet-softdeleted", nil); err != nil {
		t.Fatal(err)
	}
	if vs, err := b.Versions(ctx, ring); err != nil || len(vs) != 0 {
		t.Fatalf("Versions of a deleted key: %+v, %v; want none", vs, err)
	}
	_, err := b.CreateVersion(ctx, ring, "")
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "ObjectIsDeletedButRecoverable") || !strings.Contains(err.Error(), "recover it") {
		t.Fatalf("CreateVersion on a soft-deleted name: %v, want a failed precondition saying recover or purge", err)
	}
	if _, err := b.client.RecoverDeletedKey(ctx, "signet-softdeleted", nil); err != nil {
		t.Fatal(err)
	}
	if vs, err := b.Versions(ctx, ring); err != nil || len(vs) != 1 || vs[0].ID != v.ID {
		t.Fatalf("Versions after recovering the key: %+v, %v; want %s", vs, err, v.ID)
	}
	if _, err := b.client.DeleteKey(ctx, "signet-softdeleted", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.client.PurgeDeletedKey(ctx, "signet-softdeleted", nil); err != nil {
		t.Fatal(err)
	}
	nv := signertest.CreateVersion(t, b, ring, "")
	if len(s.Versions("signet-softdeleted")) != 1 || nv.ID == v.ID {
		t.Errorf("after the purge: %+v, want one new version", s.Versions("signet-softdeleted"))
	}
}

// On a Managed HSM a refusal names the Managed HSM data action, which
// differs from a vault's.
func TestManagedHSMRefusalNamesItsDataAction(t *testing.T) {
	t.Parallel()
	u, _ := url.Parse("azurekv://Pool.ManagedHSM.Azure.net/")
	o, err := parseURI(u)
	if err != nil || !o.managedHSM || !o.hsm {
		t.Fatalf("parseURI: %+v, %v", o, err)
	}
	for _, c := range []struct {
		managed bool
		op      op
		want    string
	}{
		{true, opSign, "Microsoft.KeyVault/managedHsm/keys/sign/action"},
		{true, opUpdate, "Microsoft.KeyVault/managedHsm/keys/write/action"},
		{true, opRead, "Microsoft.KeyVault/managedHsm/keys/read/action"},
		{true, opCreate, "Microsoft.KeyVault/managedHsm/keys/create"},
		{false, opUpdate, "Microsoft.KeyVault/vaults/keys/update/action"},
	} {
		b := &Backend{managedHSM: c.managed}
		err := b.classify(&azcore.ResponseError{StatusCode: http.StatusForbidden, ErrorCode: "Forbidden"}, "doing it", c.op)
		if backends.KindOf(err) != backends.KindPermissionDenied || !strings.Contains(err.Error(), "needs the data action "+c.want+";") {
			t.Errorf("managed=%v op=%d: %v, want %s named", c.managed, c.op, err, c.want)
		}
	}
}

// A version without Signet's record of its key (its tags cleared, or made
// by hand) and disabled outside Signet: Key Vault refuses to get a disabled
// version's key, and it is listed as revoked, without a key, by an instance
// that never saw it enabled. (It used to be left out of the list, so that a
// replica which had it signing took its disappearance for a key mismatch.)
func TestVersionDisabledOutsideSignetIsListedRevoked(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "disabled-by-hand", Algorithm: backends.ES256}
	s, b, v1 := withVersion(t, ring)
	v2 := signertest.CreateVersion(t, b, ring, v1.ID)
	name, err := b.keyName(ring)
	if err != nil {
		t.Fatal(err)
	}
	ver := v1.ID[strings.LastIndex(v1.ID, "/")+1:]
	if _, err := b.client.UpdateKey(context.Background(), name, ver,
		azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to(false)}, Tags: map[string]*string{}}, nil); err != nil {
		t.Fatal(err)
	}
	vs, err := open(t, s, "").Versions(context.Background(), ring)
	if err != nil {
		t.Fatalf("Versions with a version disabled outside Signet: %v", err)
	}
	if len(vs) != 2 || vs[0].ID != v1.ID || !vs[0].Disabled || vs[0].PublicKey != nil || vs[1].ID != v2.ID || vs[1].Disabled {
		t.Errorf("listed %+v; want %s revoked without a key, then %s", vs, v1.ID, v2.ID)
	}
}

// A version revoked by another replica between this one's listing and its
// get (a replica starting, or meeting the version first, while a rotate
// --revoke-previous runs) is listed as revoked, with the key the revocation
// recorded in its tags: Key Vault refuses get on it by then, and a revoked
// version never fails the read.
func TestVersionRevokedBetweenListAndGet(t *testing.T) {
	t.Parallel()
	ring := backends.KeyRing{Name: "race", Algorithm: backends.ES256}
	s, b, v1 := withVersion(t, ring)
	v2 := signertest.CreateVersion(t, b, ring, v1.ID)
	fresh := open(t, s, "") // nothing cached: it must get each version's key
	s.BeforeNext("get", func() {
		if err := b.DisableVersion(context.Background(), ring, v1.ID); err != nil {
			t.Errorf("DisableVersion: %v", err)
		}
	})
	vs, err := fresh.Versions(context.Background(), ring)
	if err != nil {
		t.Fatalf("Versions: %v", err)
	}
	if len(vs) != 2 || vs[0].ID != v1.ID || !vs[0].Disabled || vs[1].ID != v2.ID || vs[1].Disabled {
		t.Fatalf("listed %+v; want %s revoked, then %s", vs, v1.ID, v2.ID)
	}
	if k, ok := vs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(v1.PublicKey) {
		t.Errorf("the revoked version is listed with key %v, want its own (from its tags)", vs[0].PublicKey)
	}
}
