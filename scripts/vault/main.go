// Command vault is a real HashiCorp Vault server for Signet's tests, built
// from Vault's own Go packages: Vault's core, its HTTP API handler, its
// in-memory and file storage, and the builtin Transit and PKI secrets
// engines and AppRole and userpass auth methods (token auth, identity,
// policies and sys/ are part of the core). It is the server `vault server`
// runs, without the CLI, the UI, the other storage backends, the KMS seals
// and the dozens of plugins that Signet's tests never mount, which is what
// made building all of Vault take ~10 minutes on 2 cores.
//
// It takes the subset of `vault server`'s flags that the tests use
// (internal/vaulttest, scripts/load and scripts/soak):
//
//	vault server -dev -dev-root-token-id=ID -dev-listen-address=ADDR -dev-no-store-token [-dev-tls -dev-tls-cert-dir=DIR]
//	vault server -config=FILE   (file or inmem storage, tcp listeners with tls_disable)
//
// and anything else fails loudly rather than being ignored. It lives in its
// own module so that Signet does not depend on Vault's server code. Build it
// with `make bin/vault`.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	credAppRole "github.com/hashicorp/vault/builtin/credential/approle"
	credUserpass "github.com/hashicorp/vault/builtin/credential/userpass"
	logicalPki "github.com/hashicorp/vault/builtin/logical/pki"
	logicalTransit "github.com/hashicorp/vault/builtin/logical/transit"
	"github.com/hashicorp/vault/command/server"
	"github.com/hashicorp/vault/helper/namespace"
	vaulthttp "github.com/hashicorp/vault/http"
	"github.com/hashicorp/vault/internalshared/configutil"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/physical"
	physFile "github.com/hashicorp/vault/sdk/physical/file"
	physInmem "github.com/hashicorp/vault/sdk/physical/inmem"
	"github.com/hashicorp/vault/vault"
)

// started is the line `vault server` prints once it serves; the tests wait
// for it in the server's output.
const started = "==> Vault server started! Log data will stream in below:"

func main() {
	if len(os.Args) < 2 || os.Args[1] != "server" {
		fmt.Fprintln(os.Stderr, "usage: vault server -dev [...] | vault server -config=FILE (this build has only the server)")
		os.Exit(2)
	}
	if err := run(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	dev := fs.Bool("dev", false, "in-memory, initialised and unsealed, with a root token")
	rootID := fs.String("dev-root-token-id", "", "the dev root token's ID")
	devAddr := fs.String("dev-listen-address", "127.0.0.1:8200", "the dev listener's address")
	fs.Bool("dev-no-store-token", false, "accepted: this build never stores the token")
	devTLS := fs.Bool("dev-tls", false, "serve HTTPS with a certificate from a CA generated at start")
	certDir := fs.String("dev-tls-cert-dir", "", "where -dev-tls writes vault-ca.pem, vault-cert.pem and vault-key.pem")
	configPath := fs.String("config", "", "a server configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *dev == (*configPath != "") {
		return fmt.Errorf("give either -dev or -config")
	}

	logger := hclog.New(&hclog.LoggerOptions{Name: "vault", Level: hclog.Info, Output: os.Stderr})
	var (
		storage physical.Backend
		addrs   []string
		scheme  = "http"
		err     error
	)
	if *dev {
		storage, err = physInmem.NewInmem(nil, logger.Named("storage"))
		addrs = []string{*devAddr}
		if *devTLS {
			scheme = "https"
		}
	} else {
		storage, addrs, err = fromConfig(*configPath, logger)
	}
	if err != nil {
		return err
	}

	core, err := vault.NewCore(&vault.CoreConfig{
		Physical:        storage,
		StorageType:     map[bool]string{true: "inmem", false: "file"}[*dev],
		RedirectAddr:    scheme + "://" + addrs[0],
		Logger:          logger.Named("core"),
		DisableMlock:    true,
		BuiltinRegistry: registry{},
		// Dev mode's settings in `vault server -dev`.
		EnableRaw:           *dev,
		EnableIntrospection: *dev,
		DevToken:            *rootID,
	})
	if err != nil {
		return fmt.Errorf("creating the core: %w", err)
	}

	handler := vaulthttp.Handler.Handler(&vault.HandlerProperties{Core: core,
		ListenerConfig: &configutil.Listener{Type: "tcp", Address: addrs[0], TLSDisable: !*devTLS}})
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("error initializing listener of type tcp: %w", err) // says "address already in use"
		}
		lns = append(lns, ln)
	}
	var certFile, keyFile string
	if *devTLS {
		if certFile, keyFile, err = devCertificates(*certDir, addrs[0]); err != nil {
			return err
		}
	}

	if *dev {
		if err := initDev(core, *rootID); err != nil {
			return fmt.Errorf("initialising dev mode: %w", err)
		}
	}
	for _, ln := range lns {
		srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			IdleTimeout: 5 * time.Minute, ErrorLog: logger.StandardLogger(nil)}
		go func() {
			if certFile != "" {
				err = srv.ServeTLS(ln, certFile, keyFile)
			} else {
				err = srv.Serve(ln)
			}
			logger.Error("listener stopped", "error", err)
		}()
	}
	fmt.Printf("==> Vault server configuration:\n\n   Api Address: %s://%s\n       Storage: %s\n\n%s\n",
		scheme, addrs[0], map[bool]string{true: "inmem", false: "file"}[*dev], started)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	logger.Info("shutting down")
	return core.Shutdown()
}

// fromConfig reads a server configuration with Vault's own parser and
// accepts only what this build serves: file or inmem storage, and plain
// HTTP tcp listeners.
func fromConfig(path string, logger hclog.Logger) (physical.Backend, []string, error) {
	cfg, err := server.LoadConfigFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("loading %s: %w", path, err)
	}
	if cfg.Storage == nil {
		return nil, nil, fmt.Errorf("%s has no storage stanza", path)
	}
	var storage physical.Backend
	switch cfg.Storage.Type {
	case "file":
		storage, err = physFile.NewFileBackend(cfg.Storage.Config, logger.Named("storage"))
	case "inmem":
		storage, err = physInmem.NewInmem(cfg.Storage.Config, logger.Named("storage"))
	default:
		return nil, nil, fmt.Errorf("storage %q: this build has file and inmem", cfg.Storage.Type)
	}
	if err != nil {
		return nil, nil, err
	}
	var addrs []string
	for _, l := range cfg.Listeners {
		if l.Type != "tcp" || !l.TLSDisable {
			return nil, nil, fmt.Errorf("listener %s at %s: this build serves tcp listeners with tls_disable", l.Type, l.Address)
		}
		addrs = append(addrs, l.Address)
	}
	if len(addrs) == 0 {
		return nil, nil, fmt.Errorf("%s has no listener", path)
	}
	return storage, addrs, nil
}

// initDev does what `vault server -dev` does before it serves: initialise
// with one unseal key, unseal, and replace the generated root token with
// one whose ID the caller chose.
func initDev(core *vault.Core, rootID string) error {
	ctx := namespace.ContextWithNamespace(context.Background(), namespace.RootNamespace)
	init, err := core.Initialize(ctx, &vault.InitParams{
		BarrierConfig: &vault.SealConfig{SecretShares: 1, SecretThreshold: 1, Name: "shamir"},
	})
	if err != nil {
		return err
	}
	unsealed, err := core.Unseal(init.SecretShares[0])
	if err != nil {
		return err
	}
	if !unsealed {
		return fmt.Errorf("still sealed after the unseal key")
	}
	if rootID == "" {
		fmt.Printf("Root Token: %s\n", init.RootToken)
		return nil
	}
	req := &logical.Request{
		ID: "dev-gen-root", Operation: logical.UpdateOperation, ClientToken: init.RootToken, Path: "auth/token/create",
		Data: map[string]any{"id": rootID, "policies": []string{"root"}, "no_parent": true, "no_default_policy": true},
	}
	resp, err := core.HandleRequest(ctx, req)
	if err != nil {
		return fmt.Errorf("creating the root token %q: %w", rootID, err)
	}
	if resp == nil || resp.Auth == nil {
		return fmt.Errorf("creating the root token %q: no token in the answer", rootID)
	}
	req = &logical.Request{ID: "dev-revoke-init-root", Operation: logical.UpdateOperation, ClientToken: init.RootToken, Path: "auth/token/revoke-self"}
	if _, err := core.HandleRequest(ctx, req); err != nil {
		return fmt.Errorf("revoking the initial root token: %w", err)
	}
	return nil
}

// registry is the builtin plugin catalog of this build: what a mount of
// type transit, pki, approle or userpass resolves to, through the same
// catalog lookup Vault does for its full registry.
type registry struct{}

var (
	secretsEngines = map[string]logical.Factory{"transit": logicalTransit.Factory, "pki": logicalPki.Factory}
	authMethods    = map[string]logical.Factory{"approle": credAppRole.Factory, "userpass": credUserpass.Factory}
)

func (registry) factories(t consts.PluginType) map[string]logical.Factory {
	switch t {
	case consts.PluginTypeSecrets:
		return secretsEngines
	case consts.PluginTypeCredential:
		return authMethods
	}
	return nil
}

func (r registry) Contains(name string, t consts.PluginType) bool {
	_, ok := r.factories(t)[name]
	return ok
}

func (r registry) Get(name string, t consts.PluginType) (func() (any, error), bool) {
	f, ok := r.factories(t)[name]
	if !ok {
		return nil, false
	}
	return func() (any, error) { return f, nil }, true
}

func (r registry) Keys(t consts.PluginType) []string {
	var keys []string
	for k := range r.factories(t) {
		keys = append(keys, k)
	}
	return keys
}

func (r registry) DeprecationStatus(name string, t consts.PluginType) (consts.DeprecationStatus, bool) {
	if r.Contains(name, t) {
		return consts.Supported, true
	}
	return consts.Unknown, false
}

func (registry) IsBuiltinEntPlugin(string, consts.PluginType) bool { return false }
