// Command signet is the Signet JWT-signing service and its command-line
// client. Run `signet help` for the subcommands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/signet-dev/signet/backends/awskms"  // registers awskms:
	_ "github.com/signet-dev/signet/backends/azurekv" // registers azurekv://
	_ "github.com/signet-dev/signet/backends/gcpkms"  // registers gcpkms:
	_ "github.com/signet-dev/signet/backends/local"   // registers local://
	_ "github.com/signet-dev/signet/backends/pkcs11"  // registers pkcs11: (a stub without -tags pkcs11)
	_ "github.com/signet-dev/signet/backends/vault"   // registers vault://
)

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = []command{
	{"serve", "run the Signet server", runServe},
	{"sign", "ask a Signet server for a token", runSign},
	{"rotate", "create a new key version (optionally revoking the old ones)", runRotate},
	{"keys", "list key versions and their states", runKeys},
	{"x5c", "print a key version's X.509 certificate chain as PEM", runX5C},
	{"verify", "verify a token against a live JWKS", runVerify},
	{"status", "show a running Signet's status (from its admin listener)", runStatus},
	{"dev-certs", "create a development CA, certificates, policy and mTLS config", runDevCerts},
	{"check-config", "check a config and its policy file as startup would, opening nothing", runCheckConfig},
	{"health", "ask a Signet's gRPC health whether it can sign (the Kubernetes startup probe)", runHealth},
	{"version", "print the version, commit and Go version", runVersion},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "signet:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	for _, c := range commands {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Signet issues JWTs signed by keys that stay in a key backend.\n\nUsage: signet <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'signet <command> --help' for a command's flags.\n")
}

// newFlagSet returns a flag set whose --help prints the command's usage.
func newFlagSet(name, synopsis, description string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: signet %s %s\n\n%s\n\nFlags:\n", name, synopsis, description)
		fs.PrintDefaults()
	}
	return fs
}
