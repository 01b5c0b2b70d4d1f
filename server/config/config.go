package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/lifecycle"
)

// Config is the whole of Signet's configuration; docs/configuration.md
// documents every field. Secrets never live here: each backend reads its
// own from the environment (for example SIGNET_LOCAL_KEK).
type Config struct {
	// Issuer is the "iss" of every token and the base of jwks_uri.
	Issuer string `yaml:"issuer"`
	GRPC   struct {
		Listen string `yaml:"listen"`
		// TLS turns on mTLS: TLS 1.3 with a client certificate required,
		// the caller's identity taken from it. Without it gRPC runs in
		// plaintext development mode, on loopback only.
		TLS struct {
			CertFile     string `yaml:"cert_file"`
			KeyFile      string `yaml:"key_file"`
			ClientCAFile string `yaml:"client_ca_file"`
		} `yaml:"tls"`
		// Limits bound what any peer can make the server hold before its
		// identity is known; docs/configuration.md gives the defaults.
		Limits GRPCLimits `yaml:"limits"`
	} `yaml:"grpc"`
	// PolicyFile grants identities their permissions (mTLS only); it is
	// reloaded when it changes.
	PolicyFile string `yaml:"policy_file"`
	// Audit is where one JSON line per Sign, Rotate and denied request goes.
	Audit struct {
		Path string `yaml:"path"` // a file, or "-" for standard output; empty: no audit log
	} `yaml:"audit"`
	HTTP struct {
		Listen string `yaml:"listen"`
		// JWKSStaleIfError is the Cache-Control stale-if-error of the JWKS.
		JWKSStaleIfError Duration `yaml:"jwks_stale_if_error"`
	} `yaml:"http"`
	// Admin is the operators' listener: /metrics, /statusz and, when
	// enabled, /debug/pprof/. Never the public port.
	Admin struct {
		Listen string `yaml:"listen"` // empty: no admin listener
		Pprof  bool   `yaml:"pprof"`
	} `yaml:"admin"`
	// BackendTimeout bounds every backend call; a request's own deadline
	// shortens it further.
	BackendTimeout Duration `yaml:"backend_timeout"`
	// ShutdownTimeout bounds graceful shutdown.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	Log             struct {
		Level  string `yaml:"level"`  // debug, info, warn, error
		Format string `yaml:"format"` // text or json
	} `yaml:"log"`
	KeyRings []RingConfig `yaml:"key_rings"`
	// SPIFFE makes Signet the JWT-SVID issuer of one trust domain: the
	// rings with profile jwt-svid issue JWT-SVIDs, and their keys are the
	// trust domain's SPIFFE bundle on the HTTP listener.
	SPIFFE struct {
		TrustDomain string `yaml:"trust_domain"` // e.g. corp.example; empty: no SPIFFE
	} `yaml:"spiffe"`
	// KubernetesSigner, when set, serves the Kubernetes ExternalJWTSigner
	// API on a Unix socket for one key ring (kubernetes.go).
	KubernetesSigner *KubernetesSigner `yaml:"kubernetes_signer"`
	// StateDir, when set, is where the replica keeps a snapshot of every
	// ring's published key set, so that it restarts while a backend does
	// not answer (startup.go). Empty: no snapshot.
	StateDir string `yaml:"state_dir"`
	// Peers are the other replicas a replica asks for the published key
	// set when it starts without a snapshot and a backend does not answer,
	// and the identities allowed to ask it (startup.go).
	Peers Peers `yaml:"peers"`
}

// ProfileJWTSVID is the ring profile whose tokens are JWT-SVIDs.
const ProfileJWTSVID = "jwt-svid"

// JWTSVIDAlgorithms are the algorithms the JWT-SVID specification allows
// (section 3: RS, ES and PS; no EdDSA, no HMAC, no none).
var JWTSVIDAlgorithms = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}

// GRPCLimits are the gRPC listener's bounds on every peer, authenticated or
// not: what it may send, how many streams and connections it may hold, and
// how long it has to finish the handshake.
type GRPCLimits struct {
	// MaxRequestBytes bounds a request message on the wire and again after
	// decompression (grpc-go checks both against it); more is
	// ResourceExhausted before the message is decoded.
	MaxRequestBytes int `yaml:"max_request_bytes"`
	// MaxConcurrentStreams is HTTP/2's per-connection stream limit.
	MaxConcurrentStreams uint32 `yaml:"max_concurrent_streams"`
	// MaxConnections bounds open gRPC connections; more are closed at once.
	MaxConnections int `yaml:"max_connections"`
	// HandshakeTimeout bounds the TLS handshake and HTTP/2 preface.
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// KeepaliveMinTime: a client that pings more often is disconnected.
	KeepaliveMinTime Duration `yaml:"keepalive_min_time"`
	// MaxConnectionIdle closes a connection without streams for this long.
	MaxConnectionIdle Duration `yaml:"max_connection_idle"`
}

// MinRequestBytes is the smallest max_request_bytes accepted: the largest
// valid request. Sign's is the biggest: a 1 KiB subject, 32 audiences of
// 1 KiB and 8 KiB of claims JSON, which as a protobuf Struct can take up to
// 5.5 times its JSON size (a list of small numbers: "0," is 2 bytes of JSON,
// 11 of protobuf), plus field overhead: under 84 KiB. Rotate and ListKeys
// requests are far smaller.
const MinRequestBytes = 84 << 10

// DefaultGRPCLimits are the limits a config does not set.
var DefaultGRPCLimits = GRPCLimits{
	MaxRequestBytes:      128 << 10, // the largest valid request with headroom
	MaxConcurrentStreams: 128,
	MaxConnections:       1024,
	HandshakeTimeout:     Duration(10 * time.Second),
	KeepaliveMinTime:     Duration(30 * time.Second),
	MaxConnectionIdle:    Duration(5 * time.Minute),
}

// RingConfig configures one key ring.
type RingConfig struct {
	Name string `yaml:"name"`
	// Backend is the backend URI, e.g. local://./signet-data.
	Backend   string `yaml:"backend"`
	Algorithm string `yaml:"algorithm"`

	TokenDefaultTTL Duration `yaml:"token_default_ttl"`
	TokenMaxTTL     Duration `yaml:"token_max_ttl"`
	JWKSMaxAge      Duration `yaml:"jwks_max_age"`
	RefreshInterval Duration `yaml:"refresh_interval"`
	PublishAhead    Duration `yaml:"publish_ahead"`
	RetireAfter     Duration `yaml:"retire_after"`
	RotationPeriod  Duration `yaml:"rotation_period"`

	// VerifySignatures checks every signature the backend returns against
	// the version's published key before the token leaves. Absent: on for
	// remote backends (every one but local), off for local, which signs
	// in process with the key it just read.
	VerifySignatures *bool `yaml:"verify_signatures"`

	// AllowBroadKeyUsage lets the ring start although one of its existing
	// keys can do more than sign (a PKCS#11 private key that may decrypt,
	// an exportable Transit key, a key file others can read); the finding
	// is logged as a warning. Off: such a ring stops startup.
	AllowBroadKeyUsage bool `yaml:"allow_broad_key_usage"`

	// Usage is "sign" (the default: the ring signs tokens and is published)
	// or "ca": the ring's key issues the certificates of the rings whose
	// x5c.ca_ring names it, never signs a token and is never published.
	Usage string `yaml:"usage"`
	// X5C gives each version an X.509 certificate chain, published as the
	// JWKS entry's x5c and x5t#S256. On a CA ring it sets the CA
	// certificates' subject and validity only.
	X5C *X5CConfig `yaml:"x5c"`

	// Profile is "" (plain JWTs) or "jwt-svid": the ring issues JWT-SVIDs
	// of spiffe.trust_domain (sub a SPIFFE ID, exactly one audience, typ JWT
	// or JOSE) and its keys are in that trust domain's SPIFFE bundle.
	Profile string `yaml:"profile"`
}

// IsJWTSVID reports whether the ring issues JWT-SVIDs.
func (r RingConfig) IsJWTSVID() bool { return r.Profile == ProfileJWTSVID }

// X5CConfig is a ring's x5c block; docs/configuration.md documents it.
type X5CConfig struct {
	// Exactly one source on a signing ring, none on a CA ring.
	SelfSigned bool            `yaml:"self_signed"`
	CARing     string          `yaml:"ca_ring"`
	VaultPKI   *VaultPKIConfig `yaml:"vault_pki"`

	Subject  SubjectConfig `yaml:"subject"`
	DNSNames []string      `yaml:"dns_names"`
	// URIs are URI SANs; absent: the issuer URL.
	URIs        []string `yaml:"uris"`
	Validity    Duration `yaml:"validity"`
	RenewBefore Duration `yaml:"renew_before"`
	// Required (the default): a version without a valid chain is neither
	// published nor signs. false: it is published without x5c.
	Required *bool `yaml:"required"`
}

// SubjectConfig is a certificate's subject name.
type SubjectConfig struct {
	CommonName         string   `yaml:"common_name"`
	Organization       []string `yaml:"organization"`
	OrganizationalUnit []string `yaml:"organizational_unit"`
	Country            []string `yaml:"country"`
}

// VaultPKIConfig names a Vault PKI secrets engine that issues a ring's
// leaf certificates from certification requests.
type VaultPKIConfig struct {
	Address string `yaml:"address"`
	Mount   string `yaml:"mount"` // default "pki"
	Role    string `yaml:"role"`
	// TokenEnv names the environment variable holding the Vault token
	// (default VAULT_TOKEN): never the token itself.
	TokenEnv string `yaml:"token_env"`
	// AllowHTTP accepts an http address, where the token travels in clear:
	// for a Vault on loopback only.
	AllowHTTP bool `yaml:"allow_http"`
}

func (x *X5CConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain X5CConfig
	if err := knownFields(n, plain{}, "x5c"); err != nil {
		return err
	}
	return n.Decode((*plain)(x))
}

func (s *SubjectConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain SubjectConfig
	if err := knownFields(n, plain{}, "x5c.subject"); err != nil {
		return err
	}
	return n.Decode((*plain)(s))
}

func (v *VaultPKIConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain VaultPKIConfig
	if err := knownFields(n, plain{}, "x5c.vault_pki"); err != nil {
		return err
	}
	return n.Decode((*plain)(v))
}

// IsCA reports whether the ring is a CA ring.
func (r RingConfig) IsCA() bool { return r.Usage == "ca" }

// CertDefaults fills in the x5c block's defaults: subject CN the ring's
// name, the issuer URL as URI SAN, and a validity that covers a version's
// published life twice over (publish_ahead + rotation_period +
// retire_after; 90 days with manual rotation, 5 years on a CA ring), renewed
// in its last third. It returns nil for a ring without certificates.
func (r RingConfig) CertDefaults(issuer string) *X5CConfig {
	if r.X5C == nil && !r.IsCA() {
		return nil
	}
	x := X5CConfig{}
	if r.X5C != nil {
		x = *r.X5C
	}
	if x.Subject.CommonName == "" {
		x.Subject.CommonName = r.Name
	}
	if x.URIs == nil && !r.IsCA() {
		x.URIs = []string{issuer}
	}
	if x.Validity == 0 {
		switch {
		case r.IsCA():
			x.Validity = Duration(5 * 365 * 24 * time.Hour)
		case r.RotationPeriod > 0:
			x.Validity = 2 * (r.PublishAhead + r.RotationPeriod + r.RetireAfter)
		default:
			x.Validity = Duration(90 * 24 * time.Hour)
		}
	}
	if x.RenewBefore == 0 {
		x.RenewBefore = x.Validity / 3
	}
	if x.Required == nil {
		t := true
		x.Required = &t
	}
	if x.VaultPKI != nil {
		v := *x.VaultPKI
		if v.Mount == "" {
			v.Mount = "pki"
		}
		if v.TokenEnv == "" {
			v.TokenEnv = "VAULT_TOKEN"
		}
		x.VaultPKI = &v
	}
	return &x
}

// validateX5C checks a ring's usage and x5c block against the whole config.
func (c *Config) validateX5C(field string, r RingConfig) error {
	switch r.Usage {
	case "", "sign", "ca":
	default:
		return fmt.Errorf("%s.usage %q: want sign or ca", field, r.Usage)
	}
	x := r.CertDefaults(c.Issuer)
	if x == nil {
		return nil
	}
	sources := 0
	for _, set := range []bool{x.SelfSigned, x.CARing != "", x.VaultPKI != nil} {
		if set {
			sources++
		}
	}
	switch {
	case r.IsCA() && sources > 0:
		return fmt.Errorf("%s.x5c: a CA ring's certificates are self-signed CA certificates: set no self_signed, ca_ring or vault_pki", field)
	case !r.IsCA() && sources != 1:
		return fmt.Errorf("%s.x5c: set exactly one of self_signed: true, ca_ring or vault_pki", field)
	}
	if x.CARing != "" {
		ca := -1
		for i, o := range c.KeyRings {
			if o.Name == x.CARing {
				ca = i
			}
		}
		if ca < 0 || !c.KeyRings[ca].IsCA() {
			return fmt.Errorf("%s.x5c.ca_ring %q: name a configured key ring with usage: ca", field, x.CARing)
		}
	}
	if v := x.VaultPKI; v != nil {
		if u, err := url.Parse(v.Address); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("%s.x5c.vault_pki.address %q: want the Vault server's http(s) URL", field, v.Address)
		}
		if u, _ := url.Parse(v.Address); u.Scheme == "http" && !v.AllowHTTP {
			return fmt.Errorf("%s.x5c.vault_pki.address %q: the token would travel in clear: use https (or set allow_http: true for a Vault on loopback)", field, v.Address)
		}
		if v.Role == "" {
			return fmt.Errorf("%s.x5c.vault_pki.role: name the PKI role that signs the requests", field)
		}
	}
	for _, s := range x.URIs {
		if u, err := url.Parse(s); err != nil || u.Scheme == "" {
			return fmt.Errorf("%s.x5c.uris: %q is not an absolute URI", field, s)
		}
	}
	if x.Validity <= 0 || x.RenewBefore <= 0 || x.RenewBefore >= x.Validity {
		return fmt.Errorf("%s.x5c: want 0 < renew_before (%v) < validity (%v)", field, x.RenewBefore.D(), x.Validity.D())
	}
	if min := r.JWKSMaxAge + 2*r.RefreshInterval; x.RenewBefore < min {
		return fmt.Errorf("%s.x5c.renew_before %v is shorter than jwks_max_age + 2 × refresh_interval = %v: "+
			"a verifier's cached JWKS could hold an expired certificate", field, x.RenewBefore.D(), min.D())
	}
	return nil
}

// Verify says whether the ring checks its backend's signatures.
func (r RingConfig) Verify() bool {
	if r.VerifySignatures != nil {
		return *r.VerifySignatures
	}
	u, _, err := backends.ParseURI(r.Backend)
	return err != nil || u.Scheme != "local"
}

// Schedule returns the ring's lifecycle schedule (the "policy" fields).
func (r RingConfig) Schedule() lifecycle.Schedule {
	return lifecycle.Schedule{
		TokenDefaultTTL: r.TokenDefaultTTL.D(), TokenMaxTTL: r.TokenMaxTTL.D(), JWKSMaxAge: r.JWKSMaxAge.D(),
		RefreshInterval: r.RefreshInterval.D(), PublishAhead: r.PublishAhead.D(), RetireAfter: r.RetireAfter.D(),
		RotationPeriod: r.RotationPeriod.D(),
	}
}

// Duration is a time.Duration written as "90s", "15m" or "24h".
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (use e.g. 90s, 15m, 24h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// DefaultRing is the policy every ring starts from; a ring's fields in the
// config file override it one by one.
var DefaultRing = RingConfig{
	Algorithm:       "ES256",
	TokenDefaultTTL: Duration(15 * time.Minute),
	TokenMaxTTL:     Duration(time.Hour),
	JWKSMaxAge:      Duration(5 * time.Minute),
	RefreshInterval: Duration(30 * time.Second),
	PublishAhead:    Duration(10 * time.Minute),
	RetireAfter:     Duration(2 * time.Hour),
}

// Default is what `signet serve` runs with no config file: the local
// backend under ./signet-data, one ES256 ring "default", loopback only.
func Default() Config {
	var c Config
	c.Issuer = "http://127.0.0.1:8080"
	c.GRPC.Listen = "127.0.0.1:9090"
	c.GRPC.Limits = DefaultGRPCLimits
	c.HTTP.Listen = "127.0.0.1:8080"
	c.HTTP.JWKSStaleIfError = Duration(24 * time.Hour)
	c.Admin.Listen = "127.0.0.1:9091"
	c.BackendTimeout = Duration(5 * time.Second)
	c.ShutdownTimeout = Duration(15 * time.Second)
	c.Log.Level, c.Log.Format = "info", "text"
	c.Peers.Timeout = Duration(5 * time.Second)
	ring := DefaultRing
	ring.Name, ring.Backend = "default", "local://./signet-data"
	c.KeyRings = []RingConfig{ring}
	return c
}

// Load reads a YAML config file over the defaults. Unknown fields are
// errors: a misspelt option must not silently fall back to a default.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the config file the operator names (--config)
	if err != nil {
		return Config{}, err
	}
	return Parse(data)
}

// Parse parses YAML config over the defaults and validates it.
func Parse(data []byte) (Config, error) {
	c := Default()
	c.KeyRings = nil
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if c.KeyRings == nil {
		c.KeyRings = Default().KeyRings
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

// UnmarshalYAML starts each ring from DefaultRing, so a ring names only what
// it changes. Policy fields left unset follow the ones that are set:
// token_default_ttl is at most token_max_ttl, and publish_ahead and
// retire_after are at least the minimums the others imply. A value set
// explicitly is never adjusted; Validate judges it.
func (r *RingConfig) UnmarshalYAML(n *yaml.Node) error {
	type plain RingConfig // without this method
	p := plain(DefaultRing)
	if err := knownFields(n, p, "key ring"); err != nil {
		return err
	}
	if err := n.Decode(&p); err != nil {
		return err
	}
	set := map[string]bool{}
	for i := 0; i < len(n.Content); i += 2 {
		set[n.Content[i].Value] = true
	}
	if !set["token_default_ttl"] {
		p.TokenDefaultTTL = min(p.TokenDefaultTTL, p.TokenMaxTTL)
	}
	if !set["publish_ahead"] {
		p.PublishAhead = max(p.PublishAhead, p.JWKSMaxAge+p.RefreshInterval)
	}
	if !set["retire_after"] {
		p.RetireAfter = max(p.RetireAfter, p.TokenMaxTTL+p.JWKSMaxAge+p.RefreshInterval)
	}
	*r = RingConfig(p)
	return nil
}

// knownFields does for a nested mapping what Decoder.KnownFields does for
// the document: yaml.v3 drops that setting when it calls UnmarshalYAML.
func knownFields(n *yaml.Node, v any, what string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping", n.Line)
	}
	known := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := range t.NumField() {
		known[strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]] = true
	}
	for i := 0; i < len(n.Content); i += 2 {
		if k := n.Content[i]; !known[k.Value] {
			return fmt.Errorf("line %d: field %s not found in type %s", k.Line, k.Value, what)
		}
	}
	return nil
}

var ringNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)

// Validate checks the whole config; its errors name the offending field.
func (c *Config) Validate() error {
	u, err := url.Parse(c.Issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("issuer %q must be an http(s) URL with a host and no query or fragment", c.Issuer)
	}
	if err := c.validateAccess(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		return fmt.Errorf("http.listen %q: %v", c.HTTP.Listen, err)
	}
	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			return fmt.Errorf("admin.listen %q: %v", c.Admin.Listen, err)
		}
	} else if c.Admin.Pprof {
		return fmt.Errorf("admin.pprof needs admin.listen: pprof is served only on the admin listener")
	}
	if err := c.GRPC.Limits.validate(); err != nil {
		return err
	}
	if c.HTTP.JWKSStaleIfError < 0 {
		return fmt.Errorf("http.jwks_stale_if_error may not be negative")
	}
	if c.BackendTimeout <= 0 {
		return fmt.Errorf("backend_timeout must be positive")
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("shutdown_timeout must be positive")
	}
	if _, err := c.LogLevel(); err != nil {
		return err
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		return fmt.Errorf("log.format %q: want text or json", c.Log.Format)
	}
	if len(c.KeyRings) == 0 {
		return fmt.Errorf("key_rings: configure at least one key ring")
	}
	seen := map[string]bool{}
	for i, r := range c.KeyRings {
		field := fmt.Sprintf("key_rings[%d]", i)
		if !ringNameRE.MatchString(r.Name) {
			return fmt.Errorf("%s.name %q: use 1-64 lower-case letters, digits, '.', '_' or '-'", field, r.Name)
		}
		field = fmt.Sprintf("key_rings[%d] (%s)", i, r.Name)
		if seen[r.Name] {
			return fmt.Errorf("%s.name: key ring %q is configured twice", field, r.Name)
		}
		seen[r.Name] = true
		if _, _, err := backends.ParseURI(r.Backend); err != nil {
			return fmt.Errorf("%s.backend: %v", field, err)
		}
		if _, err := backends.ParseAlgorithm(r.Algorithm); err != nil {
			return fmt.Errorf("%s.algorithm: %v", field, err)
		}
		if err := r.Schedule().Validate(); err != nil {
			return fmt.Errorf("%s: %v", field, err)
		}
		if err := c.validateX5C(field, r); err != nil {
			return err
		}
		if err := c.validateProfile(field, r); err != nil {
			return err
		}
	}
	if td := c.SPIFFE.TrustDomain; td != "" {
		if _, err := spiffeid.TrustDomainFromString(td); err != nil || strings.Contains(td, ":") {
			return fmt.Errorf("spiffe.trust_domain %q: want a trust domain name such as corp.example (no scheme, no path)", td)
		}
		if !slices.ContainsFunc(c.KeyRings, RingConfig.IsJWTSVID) {
			return fmt.Errorf("spiffe.trust_domain %q: no key ring has profile: jwt-svid, so its bundle would hold no key", td)
		}
	}
	if err := c.validateStartup(); err != nil {
		return err
	}
	return c.validateKubernetesSigner()
}

// validateProfile checks a ring's profile: a JWT-SVID ring needs a trust
// domain, an algorithm the JWT-SVID specification allows, and no x5c (a
// SPIFFE bundle's JWT authorities are bare keys, and the bundle's sequence
// number follows only the versions' own times).
func (c *Config) validateProfile(field string, r RingConfig) error {
	switch r.Profile {
	case "":
		return nil
	case ProfileJWTSVID:
	default:
		return fmt.Errorf("%s.profile %q: want jwt-svid, or none for plain JWTs", field, r.Profile)
	}
	switch {
	case c.SPIFFE.TrustDomain == "":
		return fmt.Errorf("%s.profile jwt-svid needs spiffe.trust_domain: the trust domain of the SPIFFE IDs it issues for", field)
	case r.IsCA():
		return fmt.Errorf("%s.profile jwt-svid: a CA ring signs no tokens", field)
	case r.X5C != nil:
		return fmt.Errorf("%s.profile jwt-svid and x5c: not both (a SPIFFE bundle's JWT authorities carry no certificates)", field)
	case !slices.Contains(JWTSVIDAlgorithms, r.Algorithm):
		return fmt.Errorf("%s.algorithm %s: JWT-SVIDs are signed with one of %s", field, r.Algorithm, strings.Join(JWTSVIDAlgorithms, ", "))
	}
	return nil
}

func (l GRPCLimits) validate() error {
	switch {
	case l.MaxRequestBytes < MinRequestBytes || l.MaxRequestBytes > 16<<20:
		return fmt.Errorf("grpc.limits.max_request_bytes %d: want %d (the largest valid request) to %d", l.MaxRequestBytes, MinRequestBytes, 16<<20)
	case l.MaxConcurrentStreams < 1:
		return fmt.Errorf("grpc.limits.max_concurrent_streams must be at least 1")
	case l.MaxConnections < 1:
		return fmt.Errorf("grpc.limits.max_connections must be at least 1")
	case l.HandshakeTimeout <= 0:
		return fmt.Errorf("grpc.limits.handshake_timeout must be positive")
	case l.KeepaliveMinTime <= 0:
		return fmt.Errorf("grpc.limits.keepalive_min_time must be positive")
	case l.MaxConnectionIdle <= 0:
		return fmt.Errorf("grpc.limits.max_connection_idle must be positive")
	}
	return nil
}

// TokenMaxTTLs gives each key ring's token_max_ttl, by name: the policy
// file may name only these rings and never allow a longer lifetime.
func (c *Config) TokenMaxTTLs() map[string]time.Duration {
	m := make(map[string]time.Duration, len(c.KeyRings))
	for _, r := range c.KeyRings {
		m[r.Name] = r.TokenMaxTTL.D()
	}
	return m
}

// MTLS reports whether gRPC callers are authenticated with certificates.
func (c *Config) MTLS() bool {
	t := c.GRPC.TLS
	return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != ""
}

func (c *Config) validateAccess() error {
	if !c.MTLS() {
		if c.PolicyFile != "" {
			return fmt.Errorf("policy_file needs grpc.tls: identities come from client certificates")
		}
		return loopbackOnly("grpc.listen", c.GRPC.Listen)
	}
	t := c.GRPC.TLS
	if t.CertFile == "" || t.KeyFile == "" || t.ClientCAFile == "" {
		return fmt.Errorf("grpc.tls needs cert_file, key_file and client_ca_file")
	}
	if _, _, err := net.SplitHostPort(c.GRPC.Listen); err != nil {
		return fmt.Errorf("grpc.listen %q: %v", c.GRPC.Listen, err)
	}
	if c.PolicyFile == "" {
		return fmt.Errorf("grpc.tls needs policy_file: with mTLS every caller is denied unless a grant allows it")
	}
	return nil
}

// loopbackOnly allows plaintext, unauthenticated gRPC only where nothing but
// this machine can reach it. mTLS is what makes other addresses safe.
func loopbackOnly(field, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %v", field, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%s %q: gRPC runs in plaintext development mode with no caller authentication, "+
		"so it may only listen on a loopback address such as 127.0.0.1", field, addr)
}

// LogLevel parses log.level.
func (c *Config) LogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.Log.Level)); err != nil {
		return 0, fmt.Errorf("log.level %q: want debug, info, warn or error", c.Log.Level)
	}
	return l, nil
}
