package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/azurekvtest"
	"github.com/signet-dev/signet/internal/gcpkmstest"
)

func envList(t *testing.T, env map[string]string, err error) []string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// TestEndToEndGCPKMS runs `signet serve` against the Cloud KMS test server
// through Google's official client, authenticated by Application Default
// Credentials from a service-account key file: sign, verify through the
// live JWKS with go-jose, PyJWT and node's jose, rotate, revoke, and Cloud
// KMS going away under it.
func TestEndToEndGCPKMS(t *testing.T) {
	t.Parallel()
	kms := gcpkmstest.Start()
	t.Cleanup(kms.Close)
	env, err := gcpkmstest.Env(t.TempDir())
	backend := "gcpkms:" + gcpkmstest.KeyRing + "?endpoint=" + kms.Addr
	// Light algorithms: the test server makes the keys in this
	// (race-detector) process, beside the other end-to-end tests.
	p := startSignetWith(t, backendConfig(backend, 30*time.Second, "EdDSA", "PS256"), envList(t, env, err)...)
	p.verifyAll(t, "default", "eddsa", "ps256")

	old, fresh, rot := p.rotateUntilSigning(t)
	if id := rot.GetVersion().GetBackendId(); !strings.HasPrefix(id, gcpkmstest.KeyRing+"/cryptoKeys/signet-default/cryptoKeyVersions/") {
		t.Errorf("rotated version's backend id %q is not a CryptoKeyVersion of the ring's key", id)
	}
	_, latest := p.revokePrevious(t, old, fresh)
	disabled := 0
	for _, v := range kms.Versions(gcpkmstest.KeyRing + "/cryptoKeys/signet-default") {
		if v.State == kmspb.CryptoKeyVersion_DISABLED {
			disabled++
		}
	}
	if disabled != 2 {
		t.Errorf("%d CryptoKeyVersions disabled, want 2", disabled)
	}
	// Cloud KMS refuses GetPublicKey on those DISABLED versions: a new
	// replica starts all the same.
	newReplicaAfterRevocation(t, p, latest, old, fresh)
	p.noSecrets(t, latest.GetToken())

	kms.Close()
	p.backendGone(t, "Cloud KMS gone", latest)
}

// TestEndToEndAzureKeyVault runs `signet serve` against the Key Vault test
// server through the official azkeys client, with a token that
// DefaultAzureCredential obtains from the Entra ID test server (a client
// secret in the environment, as a service principal is configured): sign,
// verify with go-jose, PyJWT and node's jose, rotate, revoke, and Key Vault
// going away under it.
func TestEndToEndAzureKeyVault(t *testing.T) {
	t.Parallel()
	id := azurekvtest.StartIdentity()
	t.Cleanup(id.Close)
	kv := azurekvtest.Start(id)
	t.Cleanup(kv.Close)
	env, err := id.Env(t.TempDir())
	backend := "azurekv://" + strings.TrimPrefix(kv.URL, "https://") + "/?disable_instance_discovery=true"
	p := startSignetWith(t, backendConfig(backend, 30*time.Second, "ES512", "PS256"), envList(t, env, err)...)
	p.verifyAll(t, "default", "es512", "ps256")
	if id.Issued() == 0 {
		t.Error("Signet signed without a token from the identity server")
	}

	old, fresh, rot := p.rotateUntilSigning(t)
	if bid := rot.GetVersion().GetBackendId(); !strings.HasPrefix(bid, kv.URL+"/keys/signet-default/") {
		t.Errorf("rotated version's backend id %q is not a version of the ring's key", bid)
	}
	_, latest := p.revokePrevious(t, old, fresh)
	disabled := 0
	for _, v := range kv.Versions("signet-default") {
		if !v.Enabled {
			disabled++
		}
	}
	if disabled != 2 {
		t.Errorf("%d key versions disabled, want 2", disabled)
	}
	// Key Vault refuses to get a disabled version's key: a new replica
	// starts all the same.
	newReplicaAfterRevocation(t, p, latest, old, fresh)
	// The client secret never leaves the credential.
	p.noSecrets(t, azurekvtest.ClientSecret, latest.GetToken())

	kv.Close()
	p.backendGone(t, "Key Vault gone", latest)
}

// newReplicaAfterRevocation starts another replica beside p after an
// emergency rotation, as a restart, a scale-up or a new pod would: it must
// start although the backend refuses the revoked versions' keys, and serve
// a JWKS without the revoked kids in which the latest token verifies; its
// ListKeys shows the revoked versions as revoked.
func newReplicaAfterRevocation(t *testing.T, p *process, latest *signetv1.SignResponse, revoked ...*signetv1.SignResponse) {
	t.Helper()
	p2 := startSignetWith(t, p.config, p.env...)
	jwks := p2.jwks(t)
	t.Logf("the JWKS of a replica started after the revocation: %s", jwks)
	for _, tok := range revoked {
		if strings.Contains(string(jwks), tok.GetKid()) {
			t.Errorf("the new replica publishes revoked kid %s", tok.GetKid())
		}
	}
	if err := goJOSEVerify(jwks, latest.GetToken()); err != nil {
		t.Errorf("the latest token against the new replica's JWKS: %v", err)
	}
	keys, err := p2.client.ListKeys(ctxT(t), &signetv1.ListKeysRequest{KeyRing: "default"})
	if err != nil {
		t.Fatal(err)
	}
	states := map[signetv1.KeyState]int{}
	for _, v := range keys.GetVersions() {
		states[v.GetState()]++
	}
	if states[signetv1.KeyState_KEY_STATE_REVOKED] != len(revoked) || states[signetv1.KeyState_KEY_STATE_ACTIVE] != 1 {
		t.Errorf("the new replica lists %v; want %d revoked and 1 active", states, len(revoked))
	}
	p2.stop(t)
}

// Key Vault has no Ed25519 keys: a ring asking for EdDSA on it stops
// startup, saying so, before any call to the vault.
func TestAzureKeyVaultRefusesEdDSAAtStartup(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "signet.yaml")
	config := configHead + "key_rings:\n  - {name: ed, backend: 'azurekv://signet-test.vault.azure.net/', algorithm: EdDSA}\n"
	if err := os.WriteFile(cfg, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := runCLIFail(t, "serve", "--config", cfg); !strings.Contains(out, `key ring "ed": its backend does not support EdDSA`) {
		t.Errorf("serve with an EdDSA ring on Key Vault:\n%s", out)
	}
}
