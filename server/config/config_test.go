package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	// Every backend scheme the example configs use.
	_ "github.com/signet-dev/signet/backends/awskms"
	_ "github.com/signet-dev/signet/backends/azurekv"
	_ "github.com/signet-dev/signet/backends/gcpkms"
	_ "github.com/signet-dev/signet/backends/local"
	_ "github.com/signet-dev/signet/backends/pkcs11"
	_ "github.com/signet-dev/signet/backends/vault"
)

func TestDefaultConfigIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	parsed, err := Parse(nil)
	if err != nil {
		t.Fatalf("empty config file: %v", err)
	}
	if parsed.KeyRings[0].Name != "default" || parsed.GRPC.Listen != "127.0.0.1:9090" {
		t.Errorf("empty config is not the default: %+v", parsed)
	}
}

func TestParse(t *testing.T) {
	c, err := Parse([]byte(`
issuer: https://signet.internal.example
grpc: {listen: "127.0.0.1:7000"}
http: {listen: "0.0.0.0:7001", jwks_stale_if_error: 1h}
key_rings:
  - name: payments
    backend: local://./data
    algorithm: EdDSA
    token_max_ttl: 30m
    retire_after: 1h
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.KeyRings[0]
	if r.Name != "payments" || r.Algorithm != "EdDSA" || r.TokenMaxTTL.D() != 30*time.Minute || r.RetireAfter.D() != time.Hour {
		t.Errorf("ring %+v", r)
	}
	if r.JWKSMaxAge != DefaultRing.JWKSMaxAge || r.PublishAhead != DefaultRing.PublishAhead {
		t.Errorf("unset ring fields did not take the defaults: %+v", r)
	}
	if c.HTTP.JWKSStaleIfError.D() != time.Hour || c.HTTP.Listen != "0.0.0.0:7001" {
		t.Errorf("http %+v", c.HTTP)
	}
}

func TestUnsetPolicyFieldsFollowTheSetOnes(t *testing.T) {
	c, err := Parse([]byte("key_rings: [{name: a, backend: 'local://x', token_max_ttl: 24h, jwks_max_age: 1h}]"))
	if err != nil {
		t.Fatalf("a ring setting only token_max_ttl and jwks_max_age: %v", err)
	}
	r := c.KeyRings[0]
	if r.RetireAfter.D() != 24*time.Hour+time.Hour+DefaultRing.RefreshInterval.D() || r.PublishAhead.D() != time.Hour+DefaultRing.RefreshInterval.D() {
		t.Errorf("retire_after %v, publish_ahead %v", r.RetireAfter.D(), r.PublishAhead.D())
	}
	c, err = Parse([]byte("key_rings: [{name: a, backend: 'local://x', token_max_ttl: 1m}]"))
	if err != nil || c.KeyRings[0].TokenDefaultTTL.D() != time.Minute {
		t.Errorf("token_max_ttl 1m: default ttl %v, %v", c.KeyRings[0].TokenDefaultTTL.D(), err)
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"isuer: x", "field isuer not found"},
		{"key_rings: [{name: a, backend: 'local://x', algorithm: ES256, token_max_tll: 1h}]", "field token_max_tll not found"},
		{"issuer: ftp://x", "issuer"},
		{"grpc: {listen: '0.0.0.0:9090'}", "grpc.listen"},
		{"grpc: {listen: '10.1.2.3:9090'}", "loopback"},
		{"http: {listen: 'nonsense'}", "http.listen"},
		{"admin: {listen: 'nonsense'}", "admin.listen"},
		{"admin: {listen: '', pprof: true}", "admin.pprof needs admin.listen"},
		{"backend_timeout: soon", "not a duration"},
		{"log: {level: loud}", "log.level"},
		{"key_rings: []", "at least one key ring"},
		{"key_rings: [{name: 'Bad Name', backend: 'local://x'}]", "key_rings[0].name"},
		{"key_rings: [{name: a, backend: 'local://x'}, {name: a, backend: 'local://y'}]", "configured twice"},
		{"key_rings: [{name: a, backend: 'nope://x'}]", `no backend for scheme "nope"`},
		{"key_rings: [{name: a, backend: 'local://x', algorithm: HS256}]", "key_rings[0] (a).algorithm"},
		{"key_rings: [{name: a, backend: 'local://x', algorithm: none}]", "algorithm"},
		{"key_rings: [{name: a, backend: 'local://x', publish_ahead: 1m}]", "publish_ahead 1m0s is shorter than jwks_max_age + refresh_interval"},
		{"key_rings: [{name: a, backend: 'local://x', token_max_ttl: 24h, retire_after: 2h}]", "retire_after 2h0m0s is shorter than token_max_ttl"},
		{"key_rings: [{name: a, backend: 'local://x', token_max_ttl: 1m, token_default_ttl: 5m}]", "token_default_ttl 5m0s exceeds token_max_ttl 1m0s"},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s\n  got %v\n  want an error containing %q", tt.yaml, err, tt.want)
		}
	}
}

// The documented examples must stay valid.
func TestExampleConfigs(t *testing.T) {
	paths, _ := filepath.Glob("../../docs/examples/*.yaml")
	if len(paths) == 0 {
		t.Fatal("no example configs found")
	}
	for _, p := range paths {
		if _, err := Load(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
