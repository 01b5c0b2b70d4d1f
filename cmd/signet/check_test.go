package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// mtlsHead is the top of a config with mTLS on every address: {{dir}} is the
// test's directory, which holds the policy file. The certificate files need
// not exist: check-config does not open them.
const mtlsHead = `issuer: https://signet.example.com
grpc:
  listen: 0.0.0.0:9090
  tls: {cert_file: /etc/signet/tls/tls.crt, key_file: /etc/signet/tls/tls.key, client_ca_file: /etc/signet/tls/ca.crt}
http: {listen: 0.0.0.0:8080}
admin: {listen: 0.0.0.0:9091}
policy_file: {{dir}}/policy.yaml
audit: {path: "-"}
`

const goodPolicy = `grants:
  - identity: "spiffe://corp.example/ns/payments/**"
    sign:
      - key_rings: [default]
        audiences: [ledger, "payments-*"]
        subjects: ["$caller"]
        claims: [scope]
        max_ttl: 10m
        typ: [JWT, at+jwt]
        rate: {per_second: 50, burst: 100}
    rotate: [default]
    list: ["*"]
`

const oneRing = "key_rings: [{name: default, backend: 'vault:///transit?auth=kubernetes&role=signet'}]\n"

// checkCase is one config given to `signet check-config`. field names what
// the case is about, in docs/configuration.md's terms: TestCheckConfigCoversTheDocs
// checks that every documented field has a case.
type checkCase struct {
	field  string
	config string // {{dir}}: the directory of the policy file
	policy string // written to {{dir}}/policy.yaml if not empty
	want   string // "" for a config that starts; else part of the error
}

var checkCases = []checkCase{
	// Good configs.
	{field: "defaults", config: ""},
	{field: "issuer", config: "issuer: https://signet.example.com/tenant-a\n"},
	{field: "grpc.listen", config: "grpc: {listen: 'localhost:9090'}\n"},
	{field: "grpc.listen", config: "grpc: {listen: '[::1]:9090'}\n"},
	{field: "grpc.tls", config: mtlsHead + oneRing, policy: goodPolicy},
	{field: "policy_file", config: mtlsHead + oneRing, policy: "grants: []\n"},
	{field: "policy_file", config: mtlsHead + oneRing, policy: "# nobody may do anything\n"},
	{field: "grpc.limits.max_request_bytes", config: "grpc: {limits: {max_request_bytes: 86016}}\n"},
	{field: "grpc.limits.max_concurrent_streams", config: "grpc: {limits: {max_concurrent_streams: 16}}\n"},
	{field: "grpc.limits.max_connections", config: "grpc: {limits: {max_connections: 100}}\n"},
	{field: "grpc.limits.handshake_timeout", config: "grpc: {limits: {handshake_timeout: 3s}}\n"},
	{field: "grpc.limits.keepalive_min_time", config: "grpc: {limits: {keepalive_min_time: 1m}}\n"},
	{field: "grpc.limits.max_connection_idle", config: "grpc: {limits: {max_connection_idle: 1h}}\n"},
	{field: "grpc.limits.max_request_bytes", config: "grpc: {limits: {max_request_bytes: 4096}}\n", want: "grpc.limits.max_request_bytes 4096: want 86016 (the largest valid request)"},
	{field: "grpc.limits.max_concurrent_streams", config: "grpc: {limits: {max_concurrent_streams: 0}}\n", want: "grpc.limits.max_concurrent_streams"},
	{field: "grpc.limits.max_connections", config: "grpc: {limits: {max_connections: 0}}\n", want: "grpc.limits.max_connections"},
	{field: "grpc.limits.handshake_timeout", config: "grpc: {limits: {handshake_timeout: 0s}}\n", want: "grpc.limits.handshake_timeout"},
	{field: "grpc.limits.keepalive_min_time", config: "grpc: {limits: {keepalive_min_time: 0s}}\n", want: "grpc.limits.keepalive_min_time"},
	{field: "grpc.limits.max_connection_idle", config: "grpc: {limits: {max_connection_idle: -1s}}\n", want: "grpc.limits.max_connection_idle"},
	{field: "unknown field", config: "grpc: {limits: {max_request_size: 1}}\n", want: "field max_request_size not found"},
	{field: "admin.listen", config: "admin: {listen: ''}\n"},
	{field: "admin.pprof", config: "admin: {listen: '127.0.0.1:9091', pprof: true}\n"},
	{field: "audit.path", config: "audit: {path: /var/log/signet/audit.log}\n"},
	{field: "state_dir", config: "state_dir: /var/lib/signet\n"}, // not opened by check-config
	{field: "peers.addresses", config: mtlsHead + oneRing + "peers: {addresses: ['signet-peers.security.svc:9090'], identities: ['spiffe://corp.example/ns/security/sa/signet']}\n", policy: goodPolicy},
	{field: "peers.identities", config: mtlsHead + oneRing + "peers: {identities: ['dns:signet-grpc']}\n", policy: goodPolicy},
	{field: "peers.ca_file", config: mtlsHead + oneRing + "peers: {addresses: ['10.0.0.1:9090'], identities: ['dns:signet-grpc'], ca_file: /etc/signet/peers-ca.pem}\n", policy: goodPolicy},
	{field: "peers.timeout", config: mtlsHead + oneRing + "peers: {addresses: ['10.0.0.1:9090'], identities: ['dns:signet-grpc'], timeout: 2s}\n", policy: goodPolicy},
	{field: "peers.addresses", config: "peers: {addresses: ['127.0.0.1:9090'], identities: ['dns:localhost']}\n", want: "peers needs grpc.tls"},
	{field: "peers.addresses", config: mtlsHead + oneRing + "peers: {addresses: ['signet-peers'], identities: ['dns:signet-grpc']}\n", policy: goodPolicy, want: "peers.addresses[0] \"signet-peers\": want host:port"},
	{field: "peers.identities", config: mtlsHead + oneRing + "peers: {addresses: ['10.0.0.1:9090']}\n", policy: goodPolicy, want: "peers.identities: name the identities"},
	{field: "peers.identities", config: mtlsHead + oneRing + "peers: {identities: ['signet']}\n", policy: goodPolicy, want: `peers.identities[0] "signet"`},
	{field: "peers.timeout", config: mtlsHead + oneRing + "peers: {addresses: ['10.0.0.1:9090'], identities: ['dns:signet-grpc'], timeout: 0s}\n", policy: goodPolicy, want: "peers.timeout must be positive"},
	{field: "http.jwks_stale_if_error", config: "http: {jwks_stale_if_error: 0s}\n"},
	{field: "log.format", config: "log: {level: debug, format: json}\n"},
	{field: "backend", config: "key_rings: [{name: a, backend: 'awskms:?region=eu-west-1'}, {name: b, backend: 'pkcs11:token=t?module-path=/x.so'}, {name: c, backend: 'local:rel/dir'}]\n"},
	{field: "algorithm", config: "key_rings: [{name: a, backend: 'local://x', algorithm: EdDSA}, {name: b, backend: 'local://x', algorithm: PS512}]\n"},
	// The bounds are inclusive: exactly the minimum is allowed.
	{field: "publish_ahead", config: "key_rings: [{name: a, backend: 'local://x', jwks_max_age: 1m, refresh_interval: 10s, publish_ahead: 70s}]\n"},
	{field: "retire_after", config: "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 1h, jwks_max_age: 5m, refresh_interval: 30s, retire_after: 65m30s}]\n"},
	{field: "rotation_period", config: "key_rings: [{name: a, backend: 'local://x', publish_ahead: 10m, rotation_period: 10m}]\n"},
	{field: "token_default_ttl", config: "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 5m, token_default_ttl: 5m}]\n"},
	{field: "verify_signatures", config: "key_rings: [{name: a, backend: 'vault:///transit', verify_signatures: false}]\n"},
	{field: "allow_broad_key_usage", config: "key_rings: [{name: a, backend: 'vault:///transit', allow_broad_key_usage: true}]\n"},
	{field: "usage", config: "key_rings: [{name: ca, backend: 'local://x', usage: ca}, {name: a, backend: 'vault:///transit', x5c: {ca_ring: ca}}]\n"},
	{field: "x5c", config: "key_rings: [{name: a, backend: 'local://x', x5c: {self_signed: true, required: false, validity: 48h, renew_before: 12h}}]\n"},
	{field: "x5c", config: "key_rings: [{name: a, backend: 'local://x', x5c: {vault_pki: {address: 'https://vault:8200', role: jwt}}}]\n"},
	{field: "usage", config: "key_rings: [{name: b, backend: 'local://x'}, {name: a, backend: 'local://x', x5c: {ca_ring: b}}]\n", want: "usage: ca"},
	{field: "x5c", config: "key_rings: [{name: a, backend: 'local://x', x5c: {self_signed: true, vault_pki: {address: 'https://v', role: r}}}]\n", want: "exactly one of"},
	{field: "x5c", config: "key_rings: [{name: a, backend: 'local://x', x5c: {self_signed: true, renew_before: 1m}}]\n", want: "jwks_max_age"},
	// Unset policy fields follow the set ones instead of breaking the bounds.
	{field: "token_max_ttl", config: "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 24h, jwks_max_age: 1h}]\n"},

	// Bad configs: every rule startup enforces, with the field it names.
	{field: "unknown field", config: "isuer: https://x\n", want: "field isuer not found"},
	{field: "unknown field", config: "key_rings: [{name: a, backend: 'local://x', token_max_tll: 1h}]\n", want: "field token_max_tll not found in type key ring"},
	{field: "unknown field", config: "grpc: {tls: {cert: x}}\n", want: "field cert not found"},
	{field: "issuer", config: "issuer: ftp://signet.example.com\n", want: "issuer"},
	{field: "issuer", config: "issuer: https://\n", want: "issuer"},
	{field: "issuer", config: "issuer: https://signet.example.com/?tenant=a\n", want: "no query or fragment"},
	{field: "issuer", config: "issuer: https://signet.example.com/#x\n", want: "no query or fragment"},
	{field: "grpc.listen", config: "grpc: {listen: '0.0.0.0:9090'}\n", want: `grpc.listen "0.0.0.0:9090": gRPC runs in plaintext development mode`},
	{field: "grpc.listen", config: "grpc: {listen: ':9090'}\n", want: "loopback"},
	{field: "grpc.listen", config: "grpc: {listen: '10.1.2.3:9090'}\n", want: "loopback"},
	{field: "grpc.listen", config: strings.Replace(mtlsHead, "0.0.0.0:9090", "nonsense", 1) + oneRing, policy: goodPolicy, want: `grpc.listen "nonsense"`},
	{field: "grpc.tls", config: "grpc: {listen: '0.0.0.0:9090', tls: {cert_file: a.pem, key_file: a-key.pem}}\npolicy_file: p.yaml\n", want: "grpc.tls needs cert_file, key_file and client_ca_file"},
	{field: "grpc.tls", config: "grpc: {listen: '0.0.0.0:9090', tls: {cert_file: a.pem, key_file: a-key.pem, client_ca_file: ca.pem}}\n", want: "grpc.tls needs policy_file"},
	{field: "policy_file", config: "policy_file: /etc/signet/policy.yaml\n", want: "policy_file needs grpc.tls"},
	{field: "policy_file", config: strings.Replace(mtlsHead, "{{dir}}/policy.yaml", "{{dir}}/missing.yaml", 1) + oneRing, want: "policy_file: open"},
	{field: "http.listen", config: "http: {listen: nonsense}\n", want: `http.listen "nonsense"`},
	{field: "http.jwks_stale_if_error", config: "http: {jwks_stale_if_error: -1h}\n", want: "http.jwks_stale_if_error may not be negative"},
	{field: "admin.listen", config: "admin: {listen: nonsense}\n", want: `admin.listen "nonsense"`},
	{field: "admin.pprof", config: "admin: {listen: '', pprof: true}\n", want: "admin.pprof needs admin.listen"},
	{field: "backend_timeout", config: "backend_timeout: 0s\n", want: "backend_timeout must be positive"},
	{field: "backend_timeout", config: "backend_timeout: soon\n", want: `"soon" is not a duration`},
	{field: "shutdown_timeout", config: "shutdown_timeout: -1s\n", want: "shutdown_timeout must be positive"},
	{field: "log.level", config: "log: {level: loud}\n", want: `log.level "loud"`},
	{field: "log.format", config: "log: {format: xml}\n", want: `log.format "xml"`},
	{field: "key_rings", config: "key_rings: []\n", want: "key_rings: configure at least one key ring"},
	{field: "name", config: "key_rings: [{name: 'Payments', backend: 'local://x'}]\n", want: `key_rings[0].name "Payments"`},
	{field: "name", config: "key_rings: [{name: '', backend: 'local://x'}]\n", want: "key_rings[0].name"},
	{field: "name", config: "key_rings: [{name: " + strings.Repeat("a", 65) + ", backend: 'local://x'}]\n", want: "key_rings[0].name"},
	{field: "name", config: "key_rings: [{name: a, backend: 'local://x'}, {name: a, backend: 'local://y'}]\n", want: `key_rings[1] (a).name: key ring "a" is configured twice`},
	{field: "backend", config: "key_rings: [{name: a, backend: 'nope://x'}]\n", want: `key_rings[0] (a).backend: backend URI "nope://x": no backend for scheme "nope"`},
	{field: "backend", config: "key_rings: [{name: a}]\n", want: "key_rings[0] (a).backend"},
	{field: "algorithm", config: "key_rings: [{name: a, backend: 'local://x', algorithm: HS256}]\n", want: "key_rings[0] (a).algorithm"},
	{field: "algorithm", config: "key_rings: [{name: a, backend: 'local://x', algorithm: none}]\n", want: "key_rings[0] (a).algorithm"},
	{field: "token_default_ttl", config: "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 1m, token_default_ttl: 5m}]\n", want: "key_rings[0] (a): token_default_ttl 5m0s exceeds token_max_ttl 1m0s"},
	{field: "token_default_ttl", config: "key_rings: [{name: a, backend: 'local://x', token_default_ttl: 0s}]\n", want: "token_default_ttl must be positive"},
	{field: "token_max_ttl", config: "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 0s, token_default_ttl: 1m}]\n", want: "token_max_ttl must be positive"},
	{field: "jwks_max_age", config: "key_rings: [{name: a, backend: 'local://x', jwks_max_age: 0s}]\n", want: "jwks_max_age must be positive"},
	{field: "refresh_interval", config: "key_rings: [{name: a, backend: 'local://x', refresh_interval: 0s}]\n", want: "refresh_interval must be positive"},
	{field: "publish_ahead", config: "key_rings: [{name: a, backend: 'local://x', publish_ahead: 1m}]\n", want: "key_rings[0] (a): publish_ahead 1m0s is shorter than jwks_max_age + refresh_interval = 5m30s"},
	{field: "publish_ahead", config: "key_rings: [{name: a, backend: 'local://x', jwks_max_age: 1m, refresh_interval: 10s, publish_ahead: 69s}]\n", want: "publish_ahead 1m9s is shorter"},
	{field: "publish_ahead", config: "key_rings: [{name: a, backend: 'local://x', publish_ahead: -1m}]\n", want: "may not be negative"},
	{field: "retire_after", config: "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 24h, retire_after: 2h}]\n", want: "key_rings[0] (a): retire_after 2h0m0s is shorter than token_max_ttl + jwks_max_age + refresh_interval = 24h5m30s"},
	{field: "retire_after", config: "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 1h, jwks_max_age: 5m, refresh_interval: 30s, retire_after: 65m29s}]\n", want: "retire_after 1h5m29s is shorter"},
	{field: "rotation_period", config: "key_rings: [{name: a, backend: 'local://x', rotation_period: 5m}]\n", want: "key_rings[0] (a): rotation_period 5m0s is shorter than publish_ahead 10m0s"},
	{field: "rotation_period", config: "key_rings: [{name: a, backend: 'local://x', rotation_period: -1h}]\n", want: "may not be negative"},
	{field: "verify_signatures", config: "key_rings: [{name: a, backend: 'local://x', verify_signatures: maybe}]\n", want: "line 1: cannot unmarshal !!str `maybe` into bool"},
	{field: "allow_broad_key_usage", config: "key_rings: [{name: a, backend: 'local://x', allow_broad_key_usage: sometimes}]\n", want: "line 1: cannot unmarshal !!str `sometimes` into bool"},

	// The policy file, against the configured key rings.
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a]}], rotat: [default]}]\n", want: "field rotat not found"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: '', list: ['*']}]\n", want: "policy_file {{dir}}/policy.yaml: grants[0].identity is empty"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: api.corp.example, list: ['*']}]\n", want: `grants[0].identity "api.corp.example" is neither a SPIFFE ID pattern (spiffe://TRUST-DOMAIN/PATH) nor a DNS name pattern (dns:NAME): a certificate's DNS SAN is the identity "dns:api.corp.example"`},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'spiffe://corp.example/team/', list: ['*']}]\n", want: `grants[0].identity "spiffe://corp.example/team/" can never match a SPIFFE ID: an empty segment`},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'spiffe://Corp.example/team', list: ['*']}]\n", want: `can never match a SPIFFE ID: trust domain "Corp.example"`},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', list: ['*']}]\nlimits: {rotate: {every: 0s, burst: 1}}\n", want: "limits.rotate: every must be positive"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default]}]}]\n", want: "grants[0].sign[0]: name key_rings and audiences"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{audiences: [a]}]}]\n", want: "grants[0].sign[0]: name key_rings and audiences"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [payments], audiences: [a]}]}]\n", want: `grants[0].sign[0].key_rings: "payments" is not a configured key ring`},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a], max_ttl: 2h}]}]\n", want: `grants[0].sign[0].max_ttl 2h0m0s exceeds key ring "default" token_max_ttl 1h0m0s`},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: ['*'], audiences: [a], max_ttl: -1m}]}]\n", want: "grants[0].sign[0].max_ttl may not be negative"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a], rate: {per_second: 0, burst: 1}}]}]\n", want: "grants[0].sign[0].rate: per_second must be positive"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a], rate: {per_second: 1, burst: 0}}]}]\n", want: "burst at least 1"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a], max_ttl: soon}]}]\n", want: `"soon" is not a duration`},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a], bind: required}]}]\n"},
	{field: "policy", config: mtlsHead + oneRing, policy: "grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a], bind: always}]}]\n", want: `grants[0].sign[0].bind "always": want required, allowed or never`},
	{field: "spiffe.trust_domain", config: "spiffe: {trust_domain: corp.example}\nkey_rings: [{name: svid, backend: 'local://x', profile: jwt-svid}]\n"},
	{field: "spiffe.trust_domain", config: "spiffe: {trust_domain: corp.example}\n", want: "no key ring has profile: jwt-svid"},
	{field: "profile", config: "spiffe: {trust_domain: corp.example}\nkey_rings: [{name: svid, backend: 'local://x', profile: jwt-svid, algorithm: PS256}]\n"},
	{field: "profile", config: "key_rings: [{name: svid, backend: 'local://x', profile: jwt-svid}]\n", want: "profile jwt-svid needs spiffe.trust_domain"},
	{field: "profile", config: "spiffe: {trust_domain: corp.example}\nkey_rings: [{name: svid, backend: 'local://x', profile: jwt-svid, algorithm: EdDSA}]\n", want: "JWT-SVIDs are signed with one of"},
	{field: "kubernetes_signer", config: "key_rings: [{name: kube, backend: 'local://x', token_max_ttl: 1h}]\n" + kubeSigner},
	{field: "kubernetes_signer", config: "key_rings: [{name: kube, backend: 'local://x', algorithm: EdDSA, token_max_ttl: 1h}]\n" + kubeSigner, want: "kube-apiserver accepts only"},
}

const kubeSigner = "kubernetes_signer: {socket: /run/signet/k.sock, key_ring: kube, issuer: 'https://kubernetes.default.svc', allowed_uids: [0]}\n"

// TestCheckConfig runs `signet check-config` on good and bad configs: a good
// one says OK and what it checked, a bad one fails (exit status 1) with the
// message startup gives, naming the field.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	for _, c := range checkCases {
		name := c.field + "/" + firstLine(c.config+c.policy)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			cfg := strings.ReplaceAll(c.config, "{{dir}}", dir)
			if c.policy != "" {
				if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(c.policy), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(dir, "signet.yaml")
			if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), []string{"check-config", "--config", path}, &stdout, &stderr)
			if c.want == "" {
				if err != nil {
					t.Fatalf("%s\ncheck-config: %v", cfg, err)
				}
				if !strings.HasPrefix(stdout.String(), path+": OK\n") || !strings.Contains(stdout.String(), "Not opened: backends") {
					t.Errorf("check-config printed:\n%s", stdout.String())
				}
				return
			}
			want := strings.ReplaceAll(c.want, "{{dir}}", dir)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("%s\ngot  %v\nwant an error containing %q", cfg, err, want)
			}
			if code := exitCode(err); code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			if stdout.Len() != 0 {
				t.Errorf("a failed check printed %q", stdout.String())
			}
		})
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// TestCheckConfigCoversTheDocs: every field docs/configuration.md documents
// for the config file and its key rings has a case above, and so does the
// policy file, so that a new documented rule needs a new case.
func TestCheckConfigCoversTheDocs(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	var covered []string
	for _, c := range checkCases {
		covered = append(covered, c.field)
	}
	// A table row's first cell: | `grpc.tls.cert_file`, `grpc.tls.key_file` ... |
	row := regexp.MustCompile("(?m)^\\| `([a-z_.]+)`")
	var fields []string
	for _, section := range []string{"## Top level", "## Key rings"} {
		_, rest, ok := bytes.Cut(doc, []byte(section+"\n"))
		if !ok {
			t.Fatalf("docs/configuration.md has no %q section", section)
		}
		rest, _, _ = bytes.Cut(rest, []byte("\n## "))
		for _, m := range row.FindAllSubmatch(rest, -1) {
			fields = append(fields, string(m[1]))
		}
	}
	if len(fields) < 20 {
		t.Fatalf("found only %d documented fields: %v", len(fields), fields)
	}
	for _, f := range fields {
		f = strings.TrimSuffix(f, ".cert_file") // the grpc.tls row names three files
		if !slices.Contains(covered, f) {
			t.Errorf("docs/configuration.md documents %s, which no check-config case covers", f)
		}
	}
}

func TestCheckConfigFlags(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The config names where the policy will be in production; --policy
	// checks the one in the repository instead.
	cfg := filepath.Join(dir, "signet.yaml")
	os.WriteFile(cfg, []byte(strings.ReplaceAll(mtlsHead, "{{dir}}", "/etc/signet/policy")+oneRing), 0o600)
	local := filepath.Join(dir, "policy.yaml")
	os.WriteFile(local, []byte(goodPolicy), 0o600)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"check-config", "--config", cfg, "--policy", local}, &out, &out); err != nil {
		t.Fatalf("--policy: %v", err)
	}
	if !strings.Contains(out.String(), "policy "+local+" (for /etc/signet/policy/policy.yaml)") {
		t.Errorf("check-config --policy printed:\n%s", out.String())
	}
	os.WriteFile(local, []byte("grants: [{identity: 'dns:x', sign: [{key_rings: [other], audiences: [a]}]}]\n"), 0o600)
	if err := run(context.Background(), []string{"check-config", "--config", cfg, "--policy", local}, &out, &out); err == nil ||
		!strings.Contains(err.Error(), `"other" is not a configured key ring`) {
		t.Errorf("--policy with a bad policy: %v", err)
	}
	// --policy without a policy_file would check nothing.
	plain := filepath.Join(dir, "plain.yaml")
	os.WriteFile(plain, []byte(oneRing), 0o600)
	if err := run(context.Background(), []string{"check-config", "--config", plain, "--policy", local}, &out, &out); err == nil ||
		!strings.Contains(err.Error(), "no policy_file") {
		t.Errorf("--policy without policy_file: %v", err)
	}
	if err := run(context.Background(), []string{"check-config", "extra"}, &out, &out); err == nil || !strings.Contains(err.Error(), "takes no arguments") {
		t.Errorf("an argument: %v", err)
	}
	if err := run(context.Background(), []string{"check-config", "--bogus"}, &out, &out); err == nil {
		t.Error("an unknown flag was accepted")
	}
	if err := run(context.Background(), []string{"check-config", "--config", filepath.Join(dir, "missing.yaml")}, &out, &out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing config: %v", err)
	}
	if err := run(context.Background(), []string{"check-config", "--help"}, &out, &out); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

// TestCheckConfigWarnsOfGrantsReadDifferently: a SPIFFE glob that the
// rules before parsed identities read with '*' across '/' passes, with a
// warning naming the grant and the fix.
func TestCheckConfigWarnsOfGrantsReadDifferently(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	policy := "grants:\n  - {identity: 'spiffe://corp.example/ns/payments/*', list: ['*']}\n  - {identity: 'spiffe://corp.example/team/security', rotate: ['*']}\n"
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "signet.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(mtlsHead+oneRing, "{{dir}}", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"check-config", "--config", path}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	want := "warning: policy_file " + dir + `/policy.yaml: grants[0].identity "spiffe://corp.example/ns/payments/*": '*' and '?' now match within one path segment`
	if !strings.Contains(stdout.String(), want) || strings.Count(stdout.String(), "warning:") != 1 {
		t.Errorf("check-config printed:\n%s\nwant one warning: %s", stdout.String(), want)
	}
}
