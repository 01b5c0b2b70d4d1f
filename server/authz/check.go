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

// PolicyWarnings checks a policy file's content as CheckPolicy does and
// returns what it accepts but Signet before parsed identities read
// differently (one line per grant, naming it).
func PolicyWarnings(data []byte, rings map[string]time.Duration) ([]string, error) {
	p, err := parsePolicy(data, rings)
	if err != nil {
		return nil, err
	}
	return p.warnings, nil
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
	cfg, _, err := CheckConfigWarnings(configYAML, readFile)
	return cfg, err
}

// CheckConfigWarnings is CheckConfig, and also returns the policy's
// warnings (PolicyWarnings), each prefixed with policy_file.
func CheckConfigWarnings(configYAML []byte, readFile func(path string) ([]byte, error)) (config.Config, []string, error) {
	cfg, err := config.Parse(configYAML)
	if err != nil {
		return config.Config{}, nil, err
	}
	if _, err := ParsePeers(cfg.Peers.Identities); err != nil {
		return config.Config{}, nil, err
	}
	var warnings []string
	if cfg.PolicyFile != "" {
		p, err := readPolicy(cfg.PolicyFile, readFile, cfg.TokenMaxTTLs())
		if err != nil {
			return config.Config{}, nil, err
		}
		for _, w := range p.warnings {
			warnings = append(warnings, "policy_file "+cfg.PolicyFile+": "+w)
		}
	}
	return cfg, warnings, nil
}
