// Package softhsmtest creates throwaway SoftHSM2 tokens for tests, in a
// temporary directory that is removed afterwards. Not for production use.
package softhsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Token is an initialised SoftHSM2 token.
type Token struct {
	Conf    string // the SOFTHSM2_CONF file
	Module  string // path of libsofthsm2.so
	Label   string
	PIN     string
	PINFile string
}

// ModulePaths are where Debian installs the SoftHSM2 PKCS#11 library.
var ModulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

// New creates a token labelled "signet" and points SOFTHSM2_CONF at it for
// the rest of the test (so tests using it cannot run in parallel).
func New(t testing.TB) *Token {
	t.Helper()
	// A PIN unlike anything else a test prints, so that a test can look
	// for it in logs and metrics.
	tok := &Token{Label: "signet", PIN: "pin-5e7c19ab"}
	for _, p := range ModulePaths {
		if _, err := os.Stat(p); err == nil {
			tok.Module = p
			break
		}
	}
	if tok.Module == "" {
		t.Fatalf("SoftHSM2 is not installed (looked in %v): `make test` installs Debian's softhsm2", ModulePaths)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	tok.Conf = filepath.Join(dir, "softhsm2.conf")
	conf := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(tok.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	tok.PINFile = filepath.Join(dir, "pin")
	os.WriteFile(tok.PINFile, []byte(tok.PIN+"\n"), 0o600)
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", tok.Label,
		"--pin", tok.PIN, "--so-pin", "5678").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return tok
}

// URI is the backend URI of the token, with the PIN from a file.
func (tok *Token) URI() string {
	return "pkcs11:token=" + tok.Label + "?module-path=" + tok.Module + "&pin-source=file:" + tok.PINFile
}
