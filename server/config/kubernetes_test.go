package config

import (
	"strings"
	"testing"
)

func TestKubernetesSignerValidation(t *testing.T) {
	const rings = "key_rings:\n" +
		"  - {name: kube, backend: 'local:///tmp/k', algorithm: ES256, token_max_ttl: 1h}\n" +
		"  - {name: ed, backend: 'local:///tmp/k', algorithm: EdDSA, token_max_ttl: 1h}\n" +
		"  - {name: short, backend: 'local:///tmp/k', algorithm: ES256, token_max_ttl: 5m}\n"
	const ok = "{socket: /run/signet/k.sock, key_ring: kube, issuer: 'https://kubernetes.default.svc', allowed_uids: [0]}"
	if _, err := Parse([]byte(rings + "kubernetes_signer: " + ok)); err != nil {
		t.Fatalf("a valid kubernetes_signer: %v", err)
	}
	for _, tc := range []struct{ block, want string }{
		{"{key_ring: kube, issuer: 'https://k', allowed_uids: [0]}", "socket is required"},
		{"{socket: run/k.sock, key_ring: kube, issuer: 'https://k', allowed_uids: [0]}", "absolute"},
		{"{socket: /" + strings.Repeat("a", 120) + ", key_ring: kube, issuer: 'https://k', allowed_uids: [0]}", "at most 107"},
		{"{socket: /run/k.sock, key_ring: kube, issuer: 'https://k'}", "allowed_uids"},
		{"{socket: /run/k.sock, key_ring: nope, issuer: 'https://k', allowed_uids: [0]}", "not a configured key ring"},
		{"{socket: /run/k.sock, key_ring: ed, issuer: 'https://k', allowed_uids: [0]}", "kube-apiserver accepts only"},
		{"{socket: /run/k.sock, key_ring: short, issuer: 'https://k', allowed_uids: [0]}", "shorter than"},
		{"{socket: /run/k.sock, key_ring: kube, allowed_uids: [0]}", "issuer"},
		{"{socket: /run/k.sock, key_ring: kube, issuer: 'https://k', allowed_gids: [0], rate: {per_second: 0, burst: 1}}", "rate"},
		{"{socket: /run/k.sock, key_ring: kube, issuer: 'https://k', allowed_uids: [0], unknown: 1}", "unknown"},
	} {
		_, err := Parse([]byte(rings + "kubernetes_signer: " + tc.block))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.block, err, tc.want)
		}
	}
}
