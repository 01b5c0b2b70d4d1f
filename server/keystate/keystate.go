// Package keystate is the published key set of each key ring as a document
// that outlives the process: the snapshot a replica keeps on local disk
// (state_dir) and hands to its authenticated peers, so that a replica
// restarted while a ring's backend does not answer still serves the ring's
// JWKS.
//
// The document holds public data only: per ring, the versions as the
// backend listed them (id, algorithm, public key as a JWK, creation time,
// whether disabled, certificate chain) and when they were read, plus the
// ring's name, algorithm and an identity of its backend, so that a
// snapshot of another ring, backend or configuration is never used. It is
// parsed strictly (bounded size, no unknown or repeated fields, every key
// parsed and its kid recomputed and compared); a document that fails any
// check is refused whole. It knows nothing of lifecycle states: the key set
// derives those from the versions, as it does from a backend read.
package keystate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	gojose "github.com/go-jose/go-jose/v4"

	"github.com/signet-dev/signet/backends"
)

// Format names the document's format and version.
const Format = "signet-keyset-snapshot/v1"

// MaxBytes bounds a document, on disk and from a peer: 100 versions of an
// RSA-4096 ring with certificate chains take well under 1 MiB.
const MaxBytes = 8 << 20

// Ring is one key ring's published key set as last read from its backend.
type Ring struct {
	Name      string
	Algorithm backends.Algorithm
	// Backend identifies the ring's backend configuration (BackendID).
	Backend string
	// ReadAt is when the versions were read from the backend (not when
	// they were copied from disk or a peer).
	ReadAt time.Time
	// Versions as the backend listed them, oldest first; RequestID is
	// never kept.
	Versions []backends.Version
}

// BackendID identifies a backend configuration without revealing it: the
// SHA-256 of its URI as configured. Two replicas of one deployment share
// it; a ring moved to another backend (or another key prefix) does not.
func BackendID(uri string) string {
	sum := sha256.Sum256([]byte(uri))
	return "sha256:" + hex.EncodeToString(sum[:])
}

type document struct {
	Format string     `json:"format"`
	Rings  []jsonRing `json:"rings"`
}

type jsonRing struct {
	Name      string        `json:"name"`
	Algorithm string        `json:"algorithm"`
	Backend   string        `json:"backend"`
	ReadAt    time.Time     `json:"read_at"`
	Versions  []jsonVersion `json:"versions"`
}

type jsonVersion struct {
	ID        string `json:"id"`
	Algorithm string `json:"algorithm"`
	// Kid is for people reading the file; it is recomputed from JWK on
	// load and a document whose kid differs is refused.
	Kid                 string          `json:"kid,omitempty"`
	JWK                 json.RawMessage `json:"jwk,omitempty"` // absent only for a disabled version whose key the backend no longer shows
	Created             time.Time       `json:"created"`
	Disabled            bool            `json:"disabled,omitempty"`
	Certificates        [][]byte        `json:"certificates,omitempty"` // DER, base64
	CertificatesProblem string          `json:"certificates_problem,omitempty"`
}

// Encode renders rings as a document. The same rings give the same bytes.
func Encode(rings []Ring) ([]byte, error) {
	doc := document{Format: Format, Rings: make([]jsonRing, 0, len(rings))}
	for _, r := range rings {
		jr := jsonRing{Name: r.Name, Algorithm: string(r.Algorithm), Backend: r.Backend, ReadAt: r.ReadAt.UTC(),
			Versions: make([]jsonVersion, 0, len(r.Versions))}
		for _, v := range r.Versions {
			jv := jsonVersion{ID: v.ID, Algorithm: string(v.Algorithm), Created: v.Created.UTC(), Disabled: v.Disabled,
				Certificates: v.Certificates, CertificatesProblem: v.CertificatesProblem}
			if v.PublicKey != nil {
				kid, err := backends.KeyID(v.PublicKey)
				if err != nil {
					return nil, fmt.Errorf("key ring %q version %s: %w", r.Name, v.ID, err)
				}
				jwk, err := gojose.JSONWebKey{Key: v.PublicKey}.MarshalJSON()
				if err != nil {
					return nil, fmt.Errorf("key ring %q version %s: %w", r.Name, v.ID, err)
				}
				jv.Kid, jv.JWK = kid, jwk
			}
			jr.Versions = append(jr.Versions, jv)
		}
		doc.Rings = append(doc.Rings, jr)
	}
	return json.MarshalIndent(doc, "", " ")
}

// Decode parses a document strictly and refuses it whole on the first
// problem: larger than MaxBytes, not one JSON object, an unknown or
// repeated field, another format, a ring named twice, a version whose
// algorithm is not its ring's, a key that does not parse, is private, does
// not fit the algorithm, or whose recomputed kid is not the one written,
// or an enabled version without a key.
func Decode(data []byte) ([]Ring, error) {
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("%d bytes, more than the %d a key set snapshot may have", len(data), MaxBytes)
	}
	if err := checkNoDuplicateKeys(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc document
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a key set snapshot: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("not a key set snapshot: data after the document")
	}
	if doc.Format != Format {
		return nil, fmt.Errorf("format %q, want %q", doc.Format, Format)
	}
	out := make([]Ring, 0, len(doc.Rings))
	for _, jr := range doc.Rings {
		if slices.ContainsFunc(out, func(r Ring) bool { return r.Name == jr.Name }) {
			return nil, fmt.Errorf("key ring %q appears twice", jr.Name)
		}
		r, err := decodeRing(jr)
		if err != nil {
			return nil, fmt.Errorf("key ring %q: %w", jr.Name, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func decodeRing(jr jsonRing) (Ring, error) {
	alg, err := backends.ParseAlgorithm(jr.Algorithm)
	if err != nil {
		return Ring{}, err
	}
	if jr.Name == "" || jr.Backend == "" || jr.ReadAt.IsZero() {
		return Ring{}, errors.New("name, backend and read_at are required")
	}
	r := Ring{Name: jr.Name, Algorithm: alg, Backend: jr.Backend, ReadAt: jr.ReadAt, Versions: make([]backends.Version, 0, len(jr.Versions))}
	ids := map[string]bool{}
	for _, jv := range jr.Versions {
		if jv.ID == "" || ids[jv.ID] {
			return Ring{}, fmt.Errorf("version id %q is empty or repeated", jv.ID)
		}
		ids[jv.ID] = true
		if jv.Algorithm != string(alg) {
			return Ring{}, fmt.Errorf("version %s is %q but the ring is %s", jv.ID, jv.Algorithm, alg)
		}
		v := backends.Version{ID: jv.ID, Algorithm: alg, Created: jv.Created, Disabled: jv.Disabled,
			Certificates: jv.Certificates, CertificatesProblem: jv.CertificatesProblem}
		switch {
		case jv.JWK == nil && jv.Kid == "" && jv.Disabled:
		case jv.JWK == nil:
			return Ring{}, fmt.Errorf("version %s has no key", jv.ID)
		default:
			var jwk gojose.JSONWebKey
			if err := jwk.UnmarshalJSON(jv.JWK); err != nil {
				return Ring{}, fmt.Errorf("version %s: key: %w", jv.ID, err)
			}
			if !jwk.IsPublic() || jwk.KeyID != "" || jwk.Algorithm != "" || len(jwk.Certificates) > 0 {
				return Ring{}, fmt.Errorf("version %s: the key must be a bare public JWK", jv.ID)
			}
			if err := alg.CheckPublicKey(jwk.Key); err != nil {
				return Ring{}, fmt.Errorf("version %s: %w", jv.ID, err)
			}
			kid, err := backends.KeyID(jwk.Key)
			if err != nil {
				return Ring{}, fmt.Errorf("version %s: %w", jv.ID, err)
			}
			if kid != jv.Kid {
				return Ring{}, fmt.Errorf("version %s: its key's kid is %s, not the %q written beside it", jv.ID, kid, jv.Kid)
			}
			v.PublicKey = jwk.Key
		}
		r.Versions = append(r.Versions, v)
	}
	return r, nil
}

// checkNoDuplicateKeys refuses a JSON text in which an object names a
// member twice (encoding/json keeps the last silently).
func checkNoDuplicateKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		object bool
		keys   map[string]bool
		key    bool // in an object: the next token is a member name
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a key set snapshot: %w", err)
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			name, _ := tok.(string)
			if top.keys[name] {
				return fmt.Errorf("not a key set snapshot: member %q repeated", name)
			}
			top.keys[name] = true
			top.key = false
			continue
		}
		if top != nil && top.object {
			top.key = true // this token is the member's value (or opens it)
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// Find returns the ring named name in rings if it is a snapshot of this
// very ring: the same algorithm and backend. Otherwise ok is false and why
// says what differs.
func Find(rings []Ring, name string, alg backends.Algorithm, backend string) (r Ring, why string, ok bool) {
	for _, r := range rings {
		if r.Name != name {
			continue
		}
		switch {
		case r.Algorithm != alg:
			return Ring{}, fmt.Sprintf("the snapshot's key ring %q is %s, the configured one %s", name, r.Algorithm, alg), false
		case r.Backend != backend:
			return Ring{}, fmt.Sprintf("the snapshot's key ring %q is on another backend", name), false
		}
		return r, "", true
	}
	return Ring{}, fmt.Sprintf("the snapshot has no key ring %q", name), false
}

// KeepReadTimes gives each ring of cur whose versions are exactly those
// of the same ring in prev (same algorithm and backend) prev's ReadAt: a
// ring's ReadAt is when the backend was first seen listing these versions,
// so that re-reading an unchanged ring changes no byte of the document
// (and the file is not rewritten every refresh_interval).
func KeepReadTimes(prev, cur []Ring) []Ring {
	out := slices.Clone(cur)
	for i, r := range out {
		p, _, ok := Find(prev, r.Name, r.Algorithm, r.Backend)
		if !ok || p.ReadAt.After(r.ReadAt) {
			continue
		}
		a, errA := Encode([]Ring{{Name: r.Name, Algorithm: r.Algorithm, Backend: r.Backend, Versions: r.Versions}})
		b, errB := Encode([]Ring{{Name: p.Name, Algorithm: p.Algorithm, Backend: p.Backend, Versions: p.Versions}})
		if errA == nil && errB == nil && bytes.Equal(a, b) {
			out[i].ReadAt = p.ReadAt
		}
	}
	return out
}
