package authz

import (
	"fmt"
	"time"

	"github.com/signet-dev/signet/server/config"
)

// CheckPolicy checks a policy file's content as startup and every reload
// do: known fields only, every grant naming an identity, key rings and
// audiences, every key ring it names configured (rings: each ring's
// token_max_ttl) and no max_ttl above that ring's, rate limits positive.
// The error names the grant and field (grants[0].sign[1].max_ttl ...).
func CheckPolicy(data []byte, rings map[string]time.Duration) error {
	_, err := parsePolicy(data, rings)
	return err
}

// readPolicy reads and parses the policy file; its errors are the ones
// startup prints, naming policy_file.
func readPolicy(path string, readFile func(string) ([]byte, error), rings map[string]time.Duration) (*policyFile, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy_file: %w", err)
	}
	p, err := parsePolicy(data, rings)
	if err != nil {
		return nil, fmt.Errorf("policy_file %s: %w", path, err)
	}
	return p, nil
}

// CheckConfig checks a config file's content, and the policy file it names,
// as `signet serve` does at startup, with the same messages: the config's
// fields, every key ring's policy bounds and backend URI scheme, and the
// policy against the configured rings. It opens nothing: no backend, no
// listener, no certificate or audit file. readFile reads the policy file
// (os.ReadFile for `signet check-config`; a test can serve it from what a
// Kubernetes pod would have mounted). It is what `signet check-config`
// and `signet serve --check` run.
func CheckConfig(configYAML []byte, readFile func(path string) ([]byte, error)) (config.Config, error) {
	cfg, err := config.Parse(configYAML)
	if err != nil {
		return config.Config{}, err
	}
	if cfg.PolicyFile != "" {
		if _, err := readPolicy(cfg.PolicyFile, readFile, cfg.TokenMaxTTLs()); err != nil {
			return config.Config{}, err
		}
	}
	return cfg, nil
}
