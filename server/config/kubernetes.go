package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"time"
)

// KubernetesSigner is the kubernetes_signer block: Signet as the
// kube-apiserver's external service-account token signer (the
// ExternalJWTSigner gRPC API, k8s.io/externaljwt/apis/v1) on a Unix socket.
type KubernetesSigner struct {
	// Socket is the Unix socket's path; kube-apiserver's
	// --service-account-signing-endpoint names it.
	Socket string `yaml:"socket"`
	// KeyRing is the ring that signs the cluster's service-account tokens
	// and whose published keys FetchKeys returns.
	KeyRing string `yaml:"key_ring"`
	// Issuer is the iss kube-apiserver puts in its tokens (its first
	// --service-account-issuer); Sign refuses claims with any other.
	Issuer string `yaml:"issuer"`
	// AllowedUIDs and AllowedGIDs admit a connection by the peer
	// credentials the kernel reports for it (SO_PEERCRED): its uid is in
	// AllowedUIDs or its gid in AllowedGIDs. Nothing listed: nobody.
	AllowedUIDs []uint32 `yaml:"allowed_uids"`
	AllowedGIDs []uint32 `yaml:"allowed_gids"`
	// PreviousKeyFiles are PEM public keys (PKIX "PUBLIC KEY", as
	// kube-apiserver's --service-account-key-file) that FetchKeys lists
	// too, with the kid kube-apiserver gave them: the key file a cluster
	// signed with before, while its tokens are still valid.
	PreviousKeyFiles []string `yaml:"previous_key_files"`
	// Rate, if set, bounds the Signs of each admitted uid (a token bucket).
	Rate *KubernetesRate `yaml:"rate"`
}

// KubernetesRate is a token bucket: burst Signs at once, then per_second.
type KubernetesRate struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Limits kube-apiserver puts on an external signer (its plugin and the
// ExternalJWTSigner API's documentation): the header algorithms it accepts,
// and the shortest max_token_expiration_seconds it accepts from Metadata.
var (
	KubernetesAlgorithms      = []string{"RS256", "ES256", "ES384", "ES512"}
	KubernetesMinTokenMaxTTL  = 10 * time.Minute
	maxUnixSocketPath         = 107 // sun_path is 108 bytes with its NUL
	kubernetesSignerFieldName = "kubernetes_signer"
)

func (c *Config) validateKubernetesSigner() error {
	k := c.KubernetesSigner
	if k == nil {
		return nil
	}
	f := kubernetesSignerFieldName
	switch {
	case k.Socket == "":
		return fmt.Errorf("%s.socket is required: the Unix socket kube-apiserver's --service-account-signing-endpoint names", f)
	case !filepath.IsAbs(k.Socket) || filepath.Clean(k.Socket) != k.Socket:
		return fmt.Errorf("%s.socket %q must be an absolute, clean path", f, k.Socket)
	case len(k.Socket) > maxUnixSocketPath:
		return fmt.Errorf("%s.socket %q is %d bytes; a Unix socket path may have at most %d", f, k.Socket, len(k.Socket), maxUnixSocketPath)
	case len(k.AllowedUIDs) == 0 && len(k.AllowedGIDs) == 0:
		return fmt.Errorf("%s: set allowed_uids or allowed_gids (the kube-apiserver's uid, usually 0): nobody else may connect", f)
	}
	if k.Rate != nil && (k.Rate.PerSecond <= 0 || k.Rate.Burst < 1) {
		return fmt.Errorf("%s.rate: per_second must be positive and burst at least 1", f)
	}
	if u, err := url.Parse(k.Issuer); k.Issuer == "" || err != nil || u.Scheme == "" {
		return fmt.Errorf("%s.issuer %q must be the URL kube-apiserver's --service-account-issuer names", f, k.Issuer)
	}
	i := slices.IndexFunc(c.KeyRings, func(r RingConfig) bool { return r.Name == k.KeyRing })
	if i < 0 {
		return fmt.Errorf("%s.key_ring %q is not a configured key ring", f, k.KeyRing)
	}
	r := c.KeyRings[i]
	if r.IsCA() {
		return fmt.Errorf("%s.key_ring %q is a CA ring (usage: ca): it never signs tokens", f, k.KeyRing)
	}
	if !slices.Contains(KubernetesAlgorithms, r.Algorithm) {
		return fmt.Errorf("%s.key_ring %q signs with %s; kube-apiserver accepts only %v", f, k.KeyRing, r.Algorithm, KubernetesAlgorithms)
	}
	if r.TokenMaxTTL.D() < KubernetesMinTokenMaxTTL {
		return fmt.Errorf("%s.key_ring %q: token_max_ttl %v is shorter than the %v kube-apiserver accepts as a signer's max token expiration",
			f, k.KeyRing, r.TokenMaxTTL.D(), KubernetesMinTokenMaxTTL)
	}
	// kube-apiserver re-reads the keys every refresh_hint_seconds (the
	// ring's refresh_interval) and on a kid it does not know; the tokens
	// it issues live at most token_max_ttl (Sign enforces it). A retiring
	// kid must outlive both, or tokens it signed would stop authenticating
	// before they expire. Schedule.Validate demands more (jwks_max_age
	// too), so this is the kube-apiserver's reading of the same rule,
	// named in its terms should the general one ever loosen.
	if need := r.TokenMaxTTL.D() + r.RefreshInterval.D(); r.RetireAfter.D() < need {
		return fmt.Errorf("%s.key_ring %q: retire_after %v would drop a kid while tokens kube-apiserver issued with it are still valid: "+
			"want at least token_max_ttl + refresh_interval = %v", f, k.KeyRing, r.RetireAfter.D(), need)
	}
	return nil
}
