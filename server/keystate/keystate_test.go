package keystate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
)

func testRings(t *testing.T) []Ring {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ec2, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ed, _, _ := ed25519.GenerateKey(rand.Reader)
	at := time.Date(2026, 12, 7, 23, 0, 0, 123456789, time.UTC)
	return []Ring{
		{Name: "default", Algorithm: backends.ES256, Backend: BackendID("vault://vault:8200/transit"), ReadAt: at,
			Versions: []backends.Version{
				{ID: "1", Algorithm: backends.ES256, PublicKey: &ec.PublicKey, Created: at.Add(-time.Hour), Disabled: true},
				{ID: "2", Algorithm: backends.ES256, PublicKey: &ec2.PublicKey, Created: at.Add(-time.Minute), Certificates: [][]byte{{1, 2, 3}}},
				{ID: "3", Algorithm: backends.ES256, Created: at, Disabled: true}, // revoked, key no longer shown
			}},
		{Name: "ed", Algorithm: backends.EdDSA, Backend: BackendID("local:///data"), ReadAt: at,
			Versions: []backends.Version{{ID: "a", Algorithm: backends.EdDSA, PublicKey: ed, Created: at}}},
	}
}

func TestRoundTrip(t *testing.T) {
	rings := testRings(t)
	data, err := Encode(rings)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatalf("Decode: %v\n%s", err, data)
	}
	again, _ := Encode(got)
	if !bytes.Equal(again, data) {
		t.Errorf("not stable:\n%s\n%s", data, again)
	}
	for i, r := range got {
		for j, v := range r.Versions {
			w := rings[i].Versions[j]
			if !v.Created.Equal(w.Created) || v.Disabled != w.Disabled || v.ID != w.ID {
				t.Errorf("%s/%s: %+v, want %+v", r.Name, v.ID, v, w)
			}
			if w.PublicKey != nil {
				k1, _ := backends.KeyID(v.PublicKey)
				k2, _ := backends.KeyID(w.PublicKey)
				if k1 != k2 {
					t.Errorf("%s/%s: key changed", r.Name, v.ID)
				}
			}
		}
	}
	if _, _, ok := Find(got, "default", backends.ES256, BackendID("vault://vault:8200/transit")); !ok {
		t.Error("Find: the ring itself is not found")
	}
}

// edit decodes the encoded rings as generic JSON, lets f change it, and
// re-encodes it.
func edit(t *testing.T, f func(doc map[string]any)) []byte {
	t.Helper()
	data, err := Encode(testRings(t))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	f(doc)
	out, _ := json.Marshal(doc)
	return out
}

func version(doc map[string]any, ring, v int) map[string]any {
	return doc["rings"].([]any)[ring].(map[string]any)["versions"].([]any)[v].(map[string]any)
}

func TestDecodeRefuses(t *testing.T) {
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKid, _ := backends.KeyID(&other.PublicKey)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	valid, _ := Encode(testRings(t))
	cases := map[string][]byte{
		"empty":           nil,
		"not JSON":        []byte("{\"format\": "),
		"truncated":       valid[:len(valid)/2],
		"trailing data":   append(append([]byte{}, valid...), []byte(" {}")...),
		"two documents":   append(append([]byte{}, valid...), valid...),
		"oversized":       append(append([]byte{}, valid...), bytes.Repeat([]byte(" "), MaxBytes)...),
		"another format":  edit(t, func(d map[string]any) { d["format"] = "signet-keyset-snapshot/v2" }),
		"unknown field":   edit(t, func(d map[string]any) { d["extra"] = true }),
		"unknown in ring": edit(t, func(d map[string]any) { version(d, 0, 1)["private"] = "x" }),
		"wrong kid": edit(t, func(d map[string]any) {
			version(d, 0, 1)["kid"] = otherKid // a kid that is not the key's: a tampered file
		}),
		"no kid": edit(t, func(d map[string]any) { delete(version(d, 0, 1), "kid") }),
		"key replaced": edit(t, func(d map[string]any) {
			jwk, _ := json.Marshal(map[string]any{"kty": "EC", "crv": "P-256",
				"x": b64(other.X.FillBytes(make([]byte, 32))), "y": b64(other.Y.FillBytes(make([]byte, 32)))})
			version(d, 0, 1)["jwk"] = json.RawMessage(jwk) // the kid written is the old key's
		}),
		"private key": edit(t, func(d map[string]any) {
			jwk, _ := json.Marshal(map[string]any{"kty": "EC", "crv": "P-256",
				"x": b64(other.X.FillBytes(make([]byte, 32))), "y": b64(other.Y.FillBytes(make([]byte, 32))),
				"d": b64(privateScalar(t, other))})
			version(d, 0, 1)["jwk"], version(d, 0, 1)["kid"] = json.RawMessage(jwk), otherKid
		}),
		"key of another algorithm": edit(t, func(d map[string]any) {
			jwk, _ := json.Marshal(map[string]any{"kty": "EC", "crv": "P-384",
				"x": b64(p384.X.FillBytes(make([]byte, 48))), "y": b64(p384.Y.FillBytes(make([]byte, 48)))})
			kid, _ := backends.KeyID(&p384.PublicKey)
			version(d, 0, 1)["jwk"], version(d, 0, 1)["kid"] = json.RawMessage(jwk), kid
		}),
		"version of another algorithm": edit(t, func(d map[string]any) { version(d, 0, 1)["algorithm"] = "ES384" }),
		"enabled without key": edit(t, func(d map[string]any) {
			delete(version(d, 0, 1), "jwk")
			delete(version(d, 0, 1), "kid")
		}),
		"repeated version": edit(t, func(d map[string]any) { version(d, 0, 1)["id"] = "1" }),
		"ring twice": edit(t, func(d map[string]any) {
			rs := d["rings"].([]any)
			d["rings"] = append(rs, rs[0])
		}),
		"no backend":   edit(t, func(d map[string]any) { delete(d["rings"].([]any)[0].(map[string]any), "backend") }),
		"no read time": edit(t, func(d map[string]any) { delete(d["rings"].([]any)[0].(map[string]any), "read_at") }),
	}
	// A repeated member: encoding/json would keep the last one silently.
	cases["repeated member"] = bytes.Replace(valid, []byte(`"format": "`+Format+`",`),
		[]byte(`"format": "`+Format+`", "format": "`+Format+`",`), 1)
	if bytes.Equal(cases["repeated member"], valid) {
		t.Fatal("the repeated-member case did not change the document")
	}
	for name, data := range cases {
		if _, err := Decode(data); err == nil {
			t.Errorf("%s: Decode accepted it", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func privateScalar(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	d, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func b64(b []byte) string {
	out, _ := json.Marshal(b) // standard base64 in quotes
	s := strings.Trim(string(out), `"`)
	s = strings.NewReplacer("+", "-", "/", "_").Replace(strings.TrimRight(s, "="))
	return s
}

func TestFindRefusesForeignRings(t *testing.T) {
	rings := testRings(t)
	for _, c := range []struct {
		name, ring string
		alg        backends.Algorithm
		backend    string
	}{
		{"another ring", "other", backends.ES256, rings[0].Backend},
		{"another algorithm", "default", backends.ES384, rings[0].Backend},
		{"another backend", "default", backends.ES256, BackendID("vault://vault:8200/transit?key_prefix=x")},
	} {
		if _, why, ok := Find(rings, c.ring, c.alg, c.backend); ok || why == "" {
			t.Errorf("%s: found (%q)", c.name, why)
		}
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	f := NewFile(dir)
	if rings, err := f.Load(); rings != nil || err != nil {
		t.Fatalf("no file: %v %v", rings, err)
	}
	data, _ := Encode(testRings(t))
	if wrote, err := f.Save(data); !wrote || err != nil {
		t.Fatalf("Save: %v %v", wrote, err)
	}
	st, err := os.Stat(f.Path())
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode: %v %v", st, err)
	}
	if wrote, err := f.Save(data); wrote || err != nil {
		t.Errorf("Save of the same content wrote again: %v %v", wrote, err)
	}
	if rings, err := NewFile(dir).Load(); err != nil || len(rings) != 2 {
		t.Errorf("Load: %d rings, %v", len(rings), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the directory holds %d entries, want the file alone (no temporary left)", len(entries))
	}

	// Corrupt, writable by others, a symbolic link: refused, never a panic.
	if err := os.WriteFile(f.Path(), data[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFile(dir).Load(); err == nil {
		t.Error("a truncated file was accepted")
	}
	if err := os.WriteFile(f.Path(), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f.Path(), 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFile(dir).Load(); err == nil {
		t.Error("a world-writable file was accepted")
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, "real.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(f.Path()); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(other, "real.json"), f.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFile(dir).Load(); err == nil {
		t.Error("a symbolic link was followed")
	}
	big := append(append([]byte{}, data...), bytes.Repeat([]byte(" "), MaxBytes)...)
	_ = os.Remove(f.Path())
	if err := os.WriteFile(f.Path(), big, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewFile(dir).Load(); err == nil {
		t.Error("an oversized file was accepted")
	}
}

func TestKeepReadTimes(t *testing.T) {
	prev := testRings(t)
	cur := testRings(t)
	cur[0].Versions, cur[1].Versions = prev[0].Versions, prev[1].Versions
	later := prev[0].ReadAt.Add(time.Hour)
	cur[0].ReadAt, cur[1].ReadAt = later, later
	cur[1].Versions = append(cur[1].Versions[:0:0], cur[1].Versions...)
	cur[1].Versions[0].Disabled = true // changed
	got := KeepReadTimes(prev, cur)
	if !got[0].ReadAt.Equal(prev[0].ReadAt) {
		t.Errorf("unchanged ring: read_at %v, want the first read's %v", got[0].ReadAt, prev[0].ReadAt)
	}
	if !got[1].ReadAt.Equal(later) {
		t.Errorf("changed ring: read_at %v, want %v", got[1].ReadAt, later)
	}
}
