// Command vault is the real HashiCorp Vault server, built from its Go module
// so that tests can run `vault server -dev` on machines without a Vault
// package. It lives in its own module so that Signet does not depend on
// Vault's server code. Build it with `make bin/vault`.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
