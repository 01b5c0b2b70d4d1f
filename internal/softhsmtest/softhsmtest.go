// Package softhsmtest creates throwaway SoftHSM2 tokens for tests, in a
// temporary directory that is removed afterwards. Not for production use.
package softhsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	if err := os.WriteFile(tok.PINFile, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.Conf)
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", tok.Label, // #nosec G204 -- the test's own token label and PIN
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

// Object is one object of OpenSC's `pkcs11-tool --list-objects` listing.
type Object struct {
	Class string   // "Private Key Object", "Public Key Object", ...
	Label string   // its label
	ID    string   // its CKA_ID in hex
	Usage []string // what the token lets it be used for: "sign", "verify", "decrypt", ...
}

// ListObjects lists the token's objects as OpenSC's pkcs11-tool sees them
// (logged in, so private keys are listed too): the token's own view, not
// Signet's. It also returns the listing as pkcs11-tool printed it.
func (tok *Token) ListObjects(t testing.TB) ([]Object, string) {
	t.Helper()
	out := tok.Tool(t, "--list-objects")
	return parseListing(out), out
}

// Tool runs OpenSC's pkcs11-tool on the token, logged in as the user, in
// another process: what an operator (or an intruder) with the PIN can do
// behind the back of the process under test. It fails the test if
// pkcs11-tool does, and returns what it printed.
func (tok *Token) Tool(t testing.TB, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("pkcs11-tool"); err != nil {
		t.Fatalf("OpenSC's pkcs11-tool is not installed: `make test` installs Debian's opensc")
	}
	args = append([]string{"--module", tok.Module, "--token-label", tok.Label, "--login", "--pin", tok.PIN}, args...)
	out, err := exec.Command("pkcs11-tool", args...).CombinedOutput() // #nosec G204 -- test helper: the arguments are the test's own
	if err != nil {
		t.Fatalf("pkcs11-tool %s: %v\n%s", strings.Join(args[6:], " "), err, out)
	}
	return string(out)
}

// parseListing reads pkcs11-tool's listing: a line naming the class
// ("Private Key Object; EC"), then indented "name: value" lines.
func parseListing(s string) []Object {
	var objs []Object
	for _, line := range strings.Split(s, "\n") {
		if line == "" {
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			class, _, _ := strings.Cut(line, ";")
			objs = append(objs, Object{Class: strings.TrimSpace(class)})
			continue
		}
		if len(objs) == 0 {
			continue
		}
		o := &objs[len(objs)-1]
		name, value, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch name {
		case "label":
			o.Label = value
		case "ID":
			o.ID = value
		case "Usage":
			for _, u := range strings.Split(value, ",") {
				if u = strings.TrimSpace(u); u != "" && u != "none" {
					o.Usage = append(o.Usage, u)
				}
			}
		}
	}
	return objs
}
