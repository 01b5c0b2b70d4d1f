package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/signet-dev/signet/backends"
	signetclient "github.com/signet-dev/signet/client"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/telemetry"
)

const checkDescription = "Checks a config as startup does, with the same messages, without opening anything:\n" +
	"every field, every key ring's policy bounds and backend URI scheme, and the policy file\n" +
	"(policy_file) against the configured key rings. Backends, certificates and the audit log\n" +
	"are not opened and nothing goes over the network: startup still checks those.\n" +
	"Exits 1 naming the field when the config would not start."

func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check-config", "[--config signet.yaml] [--policy FILE]", checkDescription+
		"\n\nWith --policy, the policy is read from FILE instead of the config's policy_file: for a\n"+
		"check in CI of a config whose paths are the ones it will have in production.", stderr)
	configPath := fs.String("config", "", "YAML config file (default: built-in development config)")
	policy := fs.String("policy", "", "read the policy from this file instead of the config's policy_file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("check-config takes no arguments, got %q", fs.Args())
	}
	return checkConfig(*configPath, *policy, stdout)
}

// checkConfig runs authz.CheckConfig on a config file (empty: the built-in
// one) and says what it checked.
func checkConfig(path, policyOverride string, stdout io.Writer) error {
	var data []byte
	name := "built-in config"
	if path != "" {
		var err error
		if data, err = os.ReadFile(path); err != nil { // #nosec G304 -- the file the operator asked to check
			return err
		}
		name = path
	}
	readFile := os.ReadFile
	if policyOverride != "" {
		readFile = func(string) ([]byte, error) { return os.ReadFile(policyOverride) } // #nosec G304 -- the operator's --policy
	}
	cfg, warnings, err := authz.CheckConfigWarnings(data, readFile)
	if err != nil {
		return err
	}
	if policyOverride != "" && cfg.PolicyFile == "" {
		return fmt.Errorf("--policy %s: the config has no policy_file (it needs grpc.tls)", policyOverride)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: OK\n", name)
	for _, r := range cfg.KeyRings {
		scheme := "?"
		if u, _, err := backends.ParseURI(r.Backend); err == nil {
			scheme = u.Scheme
		}
		fmt.Fprintf(&b, "  key ring %s: %s on %s, tokens up to %v, rotation %s\n", r.Name, r.Algorithm, scheme,
			r.TokenMaxTTL.D(), rotation(r))
	}
	if cfg.MTLS() {
		policy := cfg.PolicyFile
		if policyOverride != "" {
			policy = policyOverride + " (for " + cfg.PolicyFile + ")"
		}
		fmt.Fprintf(&b, "  gRPC %s with mTLS, policy %s\n", cfg.GRPC.Listen, policy)
	} else {
		fmt.Fprintf(&b, "  gRPC %s in plaintext development mode (loopback only, no caller authentication)\n", cfg.GRPC.Listen)
	}
	admin := cfg.Admin.Listen
	if admin == "" {
		admin = "off"
	}
	fmt.Fprintf(&b, "  HTTP %s, admin %s\n", cfg.HTTP.Listen, admin)
	b.WriteString("Not opened: backends, TLS certificates, the audit log. Startup still checks those.\n")
	for _, w := range warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	if len(warnings) > 0 {
		b.WriteString("(read differently than before Signet parsed identities: see the upgrade notes in docs/runbook.md)\n")
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

func rotation(r config.RingConfig) string {
	if r.RotationPeriod == 0 {
		return "manual"
	}
	return "every " + r.RotationPeriod.D().String()
}

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "", "Prints Signet's version, the commit it was built from and the Go version.", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("version takes no arguments, got %q", fs.Args())
	}
	b := telemetry.Build()
	_, err := fmt.Fprintf(stdout, "signet %s\ncommit %s\n%s %s/%s\n", b.Version, b.Commit, b.GoVersion, runtime.GOOS, runtime.GOARCH)
	return err
}

// signerService is the gRPC health service name of signing readiness.
const signerService = "signet.v1.SignerService"

func runHealth(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("health", "[--config signet.yaml] [--server HOST:PORT] [--service NAME | --ring NAME]",
		"Asks a Signet's gRPC health service (grpc.health.v1) whether a service is SERVING and exits\n"+
			"1 if not: by default signet.v1.SignerService, which is SERVING while at least one key ring can\n"+
			"sign and the audit log can be written; --ring NAME asks for one key ring\n"+
			"(signet.v1.SignerService/NAME: that ring can sign and the audit log can be written).\n"+
			"It reads the same config as the server: the address is grpc.listen (an unspecified host\n"+
			"such as 0.0.0.0 means loopback) and, with grpc.tls, it speaks TLS and trusts exactly the\n"+
			"certificate in grpc.tls.cert_file, with no client certificate (health needs none).\n"+
			"This is the Helm chart's startup probe: Kubernetes' own gRPC probes speak plaintext only.", stderr)
	configPath := fs.String("config", "", "the server's YAML config file (default: built-in development config)")
	server := fs.String("server", "", "gRPC address (default: from grpc.listen)")
	service := fs.String("service", signerService, "health service name; empty asks for the server as a whole")
	ring := fs.String("ring", "", "key ring whose signing health to ask for (signet.v1.SignerService/NAME)")
	timeout := fs.Duration("timeout", 5*time.Second, "deadline for the check")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("health takes no arguments, got %q", fs.Args())
	}
	if *ring != "" {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "service" })
		if set {
			return fmt.Errorf("health: give --service or --ring, not both")
		}
		*service = signerService + "/" + *ring
	}
	cfg := config.Default()
	if *configPath != "" {
		var err error
		if cfg, err = config.Load(*configPath); err != nil {
			return err
		}
	}
	addr := *server
	if addr == "" {
		addr = dialAddress(cfg.GRPC.Listen)
	}
	creds := insecure.NewCredentials()
	if cfg.MTLS() {
		pinned, err := leafCertificate(cfg.GRPC.TLS.CertFile)
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(pinnedTLS(pinned))
	}
	c, err := signetclient.New(signetclient.Config{Target: addr, TransportCredentials: creds, Retry: signetclient.Retry{MaxAttempts: 1}})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := c.Health(ctx, *service)
	if err != nil {
		return fmt.Errorf("health of %q at %s: %w", *service, addr, err)
	}
	if st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health of %q at %s: %s", *service, addr, st)
	}
	_, err = fmt.Fprintf(stdout, "%s: %s\n", displayService(*service), st)
	return err
}

func displayService(s string) string {
	if s == "" {
		return "server"
	}
	return s
}

// dialAddress turns a listen address into one to dial: an unspecified or
// empty host (0.0.0.0, ::) listens on loopback too.
func dialAddress(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// leafCertificate returns the first certificate in a PEM file.
func leafCertificate(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the operator's config names it
	if err != nil {
		return nil, fmt.Errorf("grpc.tls.cert_file: %w", err)
	}
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return nil, fmt.Errorf("grpc.tls.cert_file %s holds no PEM certificate", path)
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// pinnedTLS trusts exactly one certificate: the server's own, read from its
// cert_file. A probe dials loopback, which no certificate names, so the usual
// name and chain checks cannot apply; comparing with the file is stricter.
func pinnedTLS(pinned *x509.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// #nosec G402 -- the name and chain checks are replaced by
		// VerifyConnection's exact match with the pinned certificate,
		// which also runs on resumed sessions.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, pinned.Raw) {
				return errors.New("the server does not present the certificate in grpc.tls.cert_file " +
					"(if it was just renewed, the server picks it up within a second)")
			}
			return nil
		},
	}
}
