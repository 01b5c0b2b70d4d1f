package config

import (
	"fmt"
	"net"
	"strings"
)

// Peers configures how replicas hand each other the published key set
// (PeerService): a replica that starts while a ring's backend does not
// answer and has no snapshot of its own in state_dir asks the peers at
// Addresses; a replica answers only callers whose client certificate names
// one of Identities. Both sides use grpc.tls: the asking replica presents
// its certificate (cert_file, which must allow client authentication) and
// checks the answering one's against CAFile and Identities.
type Peers struct {
	// Addresses are host:port of the peers' gRPC listeners; a host name is
	// resolved and every address it has is asked (a Kubernetes headless
	// Service names every replica).
	Addresses []string `yaml:"addresses"`
	// Identities are the identities (SPIFFE ID or dns:NAME, patterns as in
	// the policy) a peer's certificate must name, as server and as caller.
	Identities []string `yaml:"identities"`
	// CAFile verifies the peers' server certificates; empty:
	// grpc.tls.client_ca_file.
	CAFile string `yaml:"ca_file"`
	// Timeout bounds asking every peer, together.
	Timeout Duration `yaml:"timeout"`
}

// Enabled reports whether the replica serves its key set to peers.
func (p Peers) Enabled() bool { return len(p.Identities) > 0 }

// PeerCA is the file that verifies the peers' server certificates.
func (c *Config) PeerCA() string {
	if c.Peers.CAFile != "" {
		return c.Peers.CAFile
	}
	return c.GRPC.TLS.ClientCAFile
}

// validateStartup checks peers. Identity patterns are parsed by authz
// (server.New, check-config), which config may not import; state_dir is
// opened by server.New.
func (c *Config) validateStartup() error {
	p := c.Peers
	if len(p.Addresses) == 0 && len(p.Identities) == 0 && p.CAFile == "" {
		return nil
	}
	if !c.MTLS() {
		return fmt.Errorf("peers needs grpc.tls: replicas hand each other key sets only over mTLS, each checking the other's " +
			"certificate; in plaintext development mode there is nothing to authenticate a peer by")
	}
	if len(p.Identities) == 0 {
		return fmt.Errorf("peers.identities: name the identities of the peers (for example spiffe://corp.example/ns/signet/sa/signet): " +
			"a replica answers and trusts only those")
	}
	for i, a := range p.Addresses {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" || port == "" || strings.ContainsAny(a, "/?#") {
			return fmt.Errorf("peers.addresses[%d] %q: want host:port", i, a)
		}
	}
	if p.Timeout <= 0 {
		return fmt.Errorf("peers.timeout must be positive")
	}
	return nil
}
