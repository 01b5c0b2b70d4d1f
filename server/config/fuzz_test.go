package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary YAML to the config parser, which reads what an
// operator (or a ConfigMap) wrote: it must return a config that validates
// or an error naming what is wrong, never panic.
func FuzzParse(f *testing.F) {
	paths, _ := filepath.Glob("../../docs/examples/*.yaml")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{"", "key_rings: [{name: a, backend: 'local://x', token_max_ttl: 24h, jwks_max_age: 1h}]",
		"isuer: x", "key_rings: [{name: a, backend: 'nope://x'}]", "backend_timeout: soon", "grpc: {listen: '0.0.0.0:9090'}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("error does not say it is the config's: %v", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
	})
}
