// Package proto holds the API's .proto sources; its test runs buf breaking
// (pinned in scripts/tools/go.mod) so that `make test` fails on an API
// change that would break released clients.
package proto

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// buf runs the pinned buf from the repository root with args.
func buf(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "-modfile=scripts/tools/go.mod", "buf"}, args...)...) // #nosec G204 -- fixed tool, test arguments
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestAPIDoesNotBreakRelease is `make check-breaking`: the API in proto/
// keeps every promise of the released one (released.binpb).
func TestAPIDoesNotBreakRelease(t *testing.T) {
	if out, err := buf(t, "breaking", "--against", "proto/released.binpb"); err != nil {
		t.Fatalf("proto/ breaks the released API (proto/released.binpb):\n%s", out)
	}
}

// TestBreakingChangeIsCaught breaks a copy of the API on purpose, in the
// ways a careless edit would (a field renumbered, a field's type changed, a
// field removed), and checks that buf breaking refuses each against the
// released image, naming what broke.
func TestBreakingChangeIsCaught(t *testing.T) {
	src, err := os.ReadFile("signet/v1/signet.proto")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, old, new, want string
	}{
		{"renumbered", "string key_ring = 1 [(google.api.field_behavior) = REQUIRED];\n  // The \"sub\" claim. Optional.\n  string subject = 2;",
			"string key_ring = 1 [(google.api.field_behavior) = REQUIRED];\n  // The \"sub\" claim. Optional.\n  string subject = 20;", `"2" with name "subject"`},
		{"type changed", "bool revoke_previous = 2", "string revoke_previous = 2", `changed type from "bool" to "string"`},
		{"field removed", "  string jti = 3;\n", "", `Previously present field "3" with name "jti"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !strings.Contains(string(src), c.old) {
				t.Fatalf("the fixture's edit no longer applies: signet.proto has no %q", c.old)
			}
			// A copy of the repository's layout, with its own buf.yaml: the
			// breaking rules checked are the ones `make check-breaking`
			// uses, so weakening them there fails this test.
			dir := t.TempDir()
			broken := strings.Replace(string(src), c.old, c.new, 1)
			for name, data := range map[string]string{
				"proto/signet/v1/signet.proto":          broken,
				"proto/signet/v1/errors.proto":          readFile(t, "signet/v1/errors.proto"),
				"proto/google/api/field_behavior.proto": readFile(t, "google/api/field_behavior.proto"),
				"buf.yaml":                              readFile(t, "../buf.yaml"),
			} {
				path := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			out, err := buf(t, "breaking", dir, "--against", "proto/released.binpb")
			if err == nil {
				t.Fatalf("buf breaking accepted a broken API (%s):\n%s", c.name, out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("buf breaking refused, but not for the change made (want %q):\n%s", c.want, out)
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path) // #nosec G304 -- the test's own fixtures
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
