package local_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/local"
	"github.com/signet-dev/signet/backends/signertest"
	"github.com/signet-dev/signet/internal/clocktest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	signertest.Run(t, signertest.Harness{OpenWith: func(t *testing.T, opts backends.OpenOptions) backends.Signer {
		s, err := local.Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}})
}

func openStore(t *testing.T, dir, kek string) (*local.Store, error) {
	t.Helper()
	return local.Open(dir, backends.OpenOptions{Getenv: func(k string) string {
		if k == local.KEKEnv {
			return kek
		}
		return ""
	}})
}

var ring = backends.KeyRing{Name: "default", Algorithm: backends.ES256}

// seed creates a store with one version and returns the path of its file.
func seed(t *testing.T, dir, kek string) string {
	t.Helper()
	s, err := openStore(t, dir, kek)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := signertest.CreateVersion(t, s, ring, "")
	return filepath.Join(dir, "rings", ring.Name, v.ID+".json")
}

func TestFilesArePrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := seed(t, dir, "")
	for _, p := range []string{path, filepath.Join(dir, "kek")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
		}
	}
	for _, d := range []string{filepath.Join(dir, "rings"), filepath.Dir(path)} {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s has mode %v, want 0700", d, fi.Mode().Perm())
		}
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), "PRIVATE") {
		t.Errorf("key file holds a plaintext private key:\n%s", data)
	}
}

// A key file, ring directory or KEK file that the group or others may
// read is refused by the usage check, naming the file and its mode; a
// revoked version's file (no private key left) is not judged.
func TestKeysOthersMayReadAreRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := seed(t, dir, "")
	s, err := openStore(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.CheckKeyUsage(context.Background(), ring); err != nil {
		t.Fatalf("keys as Signet made them: %v", err)
	}
	for _, p := range []struct {
		path string
		mode os.FileMode
		want string
	}{
		{path, 0o644, "0644"},
		{filepath.Dir(path), 0o755, "0755"},
		{filepath.Join(dir, "kek"), 0o640, "0640"},
	} {
		if err := os.Chmod(p.path, p.mode); err != nil {
			t.Fatal(err)
		}
		err := s.CheckKeyUsage(context.Background(), ring)
		if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), p.path+" has mode "+p.want) {
			t.Errorf("%s made %v: %v, want FailedPrecondition naming the file and its mode", p.path, p.mode, err)
		}
		restore := os.FileMode(0o600)
		if p.mode.Perm()&0o100 != 0 {
			restore = 0o700
		}
		if err := os.Chmod(p.path, restore); err != nil {
			t.Fatal(err)
		}
	}
	v2 := signertest.CreateVersion(t, s, ring, "1")
	if err := s.DisableVersion(context.Background(), ring, "1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckKeyUsage(context.Background(), ring); err != nil {
		t.Errorf("a revoked version's file readable by others (%s holds no private key): %v", v2.ID, err)
	}
}

func TestRefusesUnreadableKeys(t *testing.T) {
	t.Parallel()
	kekA := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	kekB := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
	tests := []struct {
		name    string
		kek     string
		corrupt func(t *testing.T, dir, path string)
		want    string
	}{
		{name: "wrong KEK", kek: kekB, want: "wrong key-encryption key"},
		{name: "no KEK for existing keys", kek: "", want: "no key-encryption key"},
		{name: "malformed KEK", kek: "c2hvcnQ=", want: "want 32 bytes"},
		{name: "flipped ciphertext byte", kek: kekA, want: "does not decrypt", corrupt: func(t *testing.T, dir, path string) {
			edit(t, path, func(m map[string]any) {
				b, _ := base64.StdEncoding.DecodeString(m["private_key"].(string))
				b[len(b)-1] ^= 1
				m["private_key"] = base64.StdEncoding.EncodeToString(b)
			})
		}},
		{name: "swapped public key", kek: kekA, want: "does not decrypt", corrupt: func(t *testing.T, dir, path string) {
			other := seedElsewhere(t, kekA)
			edit(t, path, func(m map[string]any) { m["public_key"] = other["public_key"] })
		}},
		{name: "truncated file", kek: kekA, want: "not valid JSON", corrupt: func(t *testing.T, dir, path string) {
			data, _ := os.ReadFile(path)
			os.WriteFile(path, data[:len(data)/2], 0o600)
		}},
		{name: "file renamed to another version", kek: kekA, want: "says it is version", corrupt: func(t *testing.T, dir, path string) {
			os.Rename(path, filepath.Join(filepath.Dir(path), "7.json"))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := seed(t, dir, kekA)
			if tt.corrupt != nil {
				tt.corrupt(t, dir, path)
			}
			before := listDir(t, dir)
			s, err := openStore(t, dir, tt.kek)
			if err == nil {
				_, err = s.Versions(context.Background(), ring)
				s.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one saying %q", err, tt.want)
			}
			if after := listDir(t, dir); after != before {
				t.Errorf("a failed open changed the key directory:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestKEKFromEnvironmentIsNotWritten(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kek := hex.EncodeToString(bytes.Repeat([]byte{7}, 32))
	seed(t, dir, kek)
	if _, err := os.Stat(filepath.Join(dir, "kek")); !os.IsNotExist(err) {
		t.Fatalf("a KEK from %s was written to disk (stat: %v)", local.KEKEnv, err)
	}
	s, err := openStore(t, dir, kek)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if vs, err := s.Versions(context.Background(), ring); err != nil || len(vs) != 1 {
		t.Fatalf("reopened with the same hex KEK: %d versions, %v", len(vs), err)
	}
}

func TestRevokeErasesPrivateKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := seed(t, dir, "")
	s, err := openStore(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.DisableVersion(context.Background(), ring, "1"); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	data, _ := os.ReadFile(path)
	json.Unmarshal(data, &m)
	if _, ok := m["private_key"]; ok || m["disabled"] != true {
		t.Fatalf("revoked key file still holds the private key or is not marked disabled:\n%s", data)
	}
}

// TestVersionRevokedByAnotherProcessNeverSigns is the soak's finding: a
// replica sharing the directory signed with a version another had revoked,
// from the private key it held in memory, until its next refresh.
func TestVersionRevokedByAnotherProcessNeverSigns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed(t, dir, "")
	a, err := openStore(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := openStore(t, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	input := []byte("eyJhbGciOiJFUzI1NiJ9.e30")
	if _, err := b.Sign(context.Background(), ring, "1", input); err != nil {
		t.Fatalf("signing before the revocation: %v", err)
	}
	signertest.CreateVersion(t, a, ring, "1")
	if err := a.DisableVersion(context.Background(), ring, "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Sign(context.Background(), ring, "1", input); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Fatalf("signing with a version another process revoked: %v, want FailedPrecondition", err)
	}
}

func seedElsewhere(t *testing.T, kek string) map[string]any {
	path := seed(t, t.TempDir(), kek)
	var m map[string]any
	data, _ := os.ReadFile(path)
	json.Unmarshal(data, &m)
	return m
}

func edit(t *testing.T, path string, f func(map[string]any)) {
	t.Helper()
	var m map[string]any
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	data, _ = json.Marshal(m)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func listDir(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(p)
			fmt.Fprintf(&b, "%s:%x ", strings.TrimPrefix(p, dir), sha256.Sum256(data))
		}
		return nil
	})
	return b.String()
}

// A temporary file an interrupted write left in a ring's directory is
// never a version, is left alone while it may be a live write's, and is
// removed by Versions once older than the grace. (Regression: a crash
// between writing and linking left it forever.)
func TestStaleTemporaryFilesAreRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clock := clocktest.New()
	removed := 0
	s, err := local.Open(dir, backends.OpenOptions{Now: clock.Now, RecoveryGrace: time.Minute,
		OnRecover: func(action string) {
			if action == backends.RecoveredRemoved {
				removed++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v := signertest.CreateVersion(t, s, ring, "")
	tmp := filepath.Join(dir, "rings", ring.Name, ".tmp-123456")
	if err := os.WriteFile(tmp, []byte(`{"ring":"default","version":"2"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions(context.Background(), ring)
	if err != nil || len(vs) != 1 || vs[0].ID != v.ID {
		t.Fatalf("versions with a temporary file beside them: %+v, %v", vs, err)
	}
	if _, err := os.Stat(tmp); err != nil || removed != 0 {
		t.Fatalf("a fresh temporary file was removed (%v, %d): it may be a live write's", err, removed)
	}
	if left, err := s.Leftovers(context.Background(), ring); err != nil || len(left) != 1 || left[0].ID != tmp {
		t.Errorf("leftovers: %+v, %v", left, err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := s.Versions(context.Background(), ring); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, fs.ErrNotExist) || removed != 1 {
		t.Errorf("a stale temporary file is still there (%v), %d removals reported", err, removed)
	}
}

// A revoked version's file whose public key cannot be used (damaged, or
// of another algorithm) does not fail the read of the ring: the version is
// listed revoked without a key, since it is never published. The same
// damage to an enabled version's file stops the read.
func TestRevokedVersionWithUnusablePublicKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kek := hex.EncodeToString(bytes.Repeat([]byte{9}, 32))
	s, err := openStore(t, dir, kek)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	v1 := signertest.CreateVersion(t, s, ring, "")
	v2 := signertest.CreateVersion(t, s, ring, v1.ID)
	if err := s.DisableVersion(ctx, ring, v1.ID); err != nil {
		t.Fatal(err)
	}
	damage := func(id string) {
		t.Helper()
		path := filepath.Join(dir, "rings", ring.Name, id+".json")
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var f map[string]any
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		f["public_key"] = base64.StdEncoding.EncodeToString([]byte("not a key"))
		raw, _ = json.Marshal(f)
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	damage(v1.ID)
	fresh, err := openStore(t, dir, kek)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	vs, err := fresh.Versions(ctx, ring)
	if err != nil {
		t.Fatalf("Versions with a revoked version's public key damaged: %v", err)
	}
	if len(vs) != 2 || !vs[0].Disabled || vs[0].PublicKey != nil || vs[1].ID != v2.ID || vs[1].Disabled {
		t.Errorf("listed %+v; want %s revoked without a key, then %s", vs, v1.ID, v2.ID)
	}
	damage(v2.ID)
	again, err := openStore(t, dir, kek)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.Versions(ctx, ring); backends.KindOf(err) != backends.KindFailedPrecondition {
		t.Errorf("Versions with the enabled version's public key damaged: %v, want failed precondition", err)
	}
}
