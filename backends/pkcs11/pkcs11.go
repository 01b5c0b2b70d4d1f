//go:build pkcs11 && cgo

package pkcs11

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	p11 "github.com/miekg/pkcs11"

	"github.com/signet-dev/signet/backends"
)

// PKCS#11 3.0 Edwards-curve constants, which miekg/pkcs11's 2.40 headers lack.
const (
	ckkECEdwards           = 0x40
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEdDSA               = 0x1057
)

func init() { backends.Register(Scheme, Open) }

func errorf(kind backends.Kind, format string, args ...any) error {
	return backends.Errorf(kind, Scheme, format, args...)
}

// Backend is the PKCS#11 backend.
type Backend struct {
	mod  *module
	slot uint
	pool *pool
	algs []backends.Algorithm

	opts backends.OpenOptions
	now  func() time.Time
	seen backends.Sightings // stray key pairs, by when this process first saw them

	mu      sync.Mutex
	handles map[string]p11.ObjectHandle // backend id -> private key object

	closeOnce sync.Once
}

// module is one loaded PKCS#11 library. C_Initialize may run once per
// process, so backends on the same library share it.
type module struct {
	path string
	ctx  *p11.Ctx
	refs int
}

var (
	modulesMu sync.Mutex
	modules   = map[string]*module{}
)

func loadModule(path string) (*module, error) {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m := modules[path]; m != nil {
		m.refs++
		return m, nil
	}
	if _, err := os.Stat(path); err != nil {
		return nil, errorf(backends.KindInvalidArgument, "module-path %s: %v", path, err)
	}
	ctx := p11.New(path)
	if ctx == nil {
		return nil, errorf(backends.KindInvalidArgument, "module-path %s: cannot load the PKCS#11 library", path)
	}
	if err := ctx.Initialize(); err != nil && !isCode(err, p11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		ctx.Destroy()
		return nil, classify(err, "initializing "+path)
	}
	m := &module{path: path, ctx: ctx, refs: 1}
	modules[path] = m
	return m, nil
}

func (m *module) release() {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	if m.refs--; m.refs == 0 {
		_ = m.ctx.Finalize() // the library is unloaded next: nothing can be done about a failure
		m.ctx.Destroy()
		delete(modules, m.path)
	}
}

// Open opens the backend a pkcs11: URI describes and logs in.
func Open(ctx context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	o, err := parseURI(u)
	if err != nil {
		return nil, err
	}
	pin, err := readPIN(o.pinSource, getenv)
	if err != nil {
		return nil, err
	}
	size := max(4, 2*runtime.GOMAXPROCS(0))
	if o.sessions > 0 {
		size = o.sessions
	}
	mod, err := loadModule(o.modulePath)
	if err != nil {
		return nil, err
	}
	slot, err := findSlot(mod.ctx, o)
	if err != nil {
		mod.release()
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Backend{mod: mod, slot: slot, handles: map[string]p11.ObjectHandle{}, opts: opts, now: opts.Clock()}
	b.pool = newPool(mod.ctx, slot, pin, size)
	if err := b.pool.login(ctx); err != nil {
		_ = b.Close() // always nil; the login's error is the one to return
		return nil, err
	}
	if b.algs, err = supportedAlgorithms(mod.ctx, slot); err != nil {
		_ = b.Close() // always nil
		return nil, err
	}
	return b, nil
}

// readPIN reads the PIN from a pin-source parseURI accepted.
func readPIN(source string, getenv func(string) string) (string, error) {
	var pin string
	if path, ok := strings.CutPrefix(source, "file:"); ok {
		b, err := os.ReadFile(path) // #nosec G304 -- the operator's pin-source
		if err != nil {
			return "", errorf(backends.KindInvalidArgument, "pin-source: %v", err)
		}
		pin = strings.TrimRight(string(b), "\r\n")
	} else {
		pin = getenv(strings.TrimPrefix(source, "env:"))
	}
	if pin == "" {
		return "", errorf(backends.KindInvalidArgument, "no PIN: %s is empty", source)
	}
	return pin, nil
}

func findSlot(ctx *p11.Ctx, o uriOptions) (uint, error) {
	slots, err := ctx.GetSlotList(true)
	if err != nil {
		return 0, classify(err, "listing slots")
	}
	if o.bySlot {
		for _, sl := range slots {
			if uint64(sl) == o.slotID {
				return sl, nil
			}
		}
		return 0, errorf(backends.KindNotFound, "no token in slot %d", o.slotID)
	}
	for _, sl := range slots {
		info, err := ctx.GetTokenInfo(sl)
		if err == nil && strings.TrimRight(info.Label, " \x00") == o.token {
			return sl, nil
		}
	}
	return 0, errorf(backends.KindNotFound, "no token labelled %q", o.token)
}

// mechanisms each algorithm needs from the token.
var algMechanisms = map[backends.Algorithm][2]uint{
	backends.ES256: {p11.CKM_EC_KEY_PAIR_GEN, p11.CKM_ECDSA}, backends.ES384: {p11.CKM_EC_KEY_PAIR_GEN, p11.CKM_ECDSA},
	backends.ES512: {p11.CKM_EC_KEY_PAIR_GEN, p11.CKM_ECDSA},
	backends.RS256: {p11.CKM_RSA_PKCS_KEY_PAIR_GEN, p11.CKM_SHA256_RSA_PKCS}, backends.RS384: {p11.CKM_RSA_PKCS_KEY_PAIR_GEN, p11.CKM_SHA384_RSA_PKCS},
	backends.RS512: {p11.CKM_RSA_PKCS_KEY_PAIR_GEN, p11.CKM_SHA512_RSA_PKCS},
	backends.PS256: {p11.CKM_RSA_PKCS_KEY_PAIR_GEN, p11.CKM_SHA256_RSA_PKCS_PSS}, backends.PS384: {p11.CKM_RSA_PKCS_KEY_PAIR_GEN, p11.CKM_SHA384_RSA_PKCS_PSS},
	backends.PS512: {p11.CKM_RSA_PKCS_KEY_PAIR_GEN, p11.CKM_SHA512_RSA_PKCS_PSS},
	backends.EdDSA: {ckmECEdwardsKeyPairGen, ckmEdDSA},
}

func supportedAlgorithms(ctx *p11.Ctx, slot uint) ([]backends.Algorithm, error) {
	mechs, err := ctx.GetMechanismList(slot)
	if err != nil {
		return nil, classify(err, "listing mechanisms")
	}
	have := map[uint]bool{}
	for _, m := range mechs {
		have[m.Mechanism] = true
	}
	var algs []backends.Algorithm
	for _, a := range backends.AllAlgorithms {
		if m := algMechanisms[a]; have[m[0]] && have[m[1]] {
			algs = append(algs, a)
		}
	}
	return algs, nil
}

// Algorithms lists the algorithms whose mechanisms the token has.
func (b *Backend) Algorithms() []backends.Algorithm { return b.algs }

// object is one Signet key pair on the token, as found by listing.
type object struct {
	id      []byte
	ring    string
	n       uint32
	created time.Time
	pub     crypto.PublicKey
	private bool // the private half still exists
}

func label(ring string, n uint32, created time.Time) string {
	return fmt.Sprintf("signet/%s/%d/%s", ring, n, created.UTC().Format(time.RFC3339Nano))
}

// pendingPrefix starts the label a public key is generated with; it gets
// its final label only once its private half is known to exist, so that a
// generation interrupted half-way (SoftHSM2 killed in C_GenerateKeyPair
// keeps the public object alone) never looks like a revoked version.
const pendingPrefix = "signet-pending"

func parseLabel(l string) (ring string, n uint32, created time.Time, ok bool) {
	return parseLabelAs(l, "signet")
}

// labelSlot is the version number a final or pending label names; 0 for
// none.
func labelSlot(l string) uint32 {
	if _, n, _, ok := parseLabel(l); ok {
		return n
	}
	_, n, _, _ := parseLabelAs(l, pendingPrefix)
	return n
}

func parseLabelAs(l, prefix string) (ring string, n uint32, created time.Time, ok bool) {
	parts := strings.Split(l, "/")
	if len(parts) != 4 || parts[0] != prefix {
		return "", 0, time.Time{}, false
	}
	v, err := strconv.ParseUint(parts[2], 10, 32)
	if err != nil {
		return "", 0, time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, parts[3])
	if err != nil {
		return "", 0, time.Time{}, false
	}
	return parts[1], uint32(v), t, true
}

// stray is a key pair object of the ring that is not a version: the loser
// of a version-number race whose replica died before destroying it, or a
// pair whose generation was interrupted (a half missing, or unlabelled).
type stray struct {
	id    []byte
	label string
	why   string
	// handle, for an object whose CKA_ID is not one Signet gives (empty,
	// short, or missing): a search by class and CKA_ID may never find it
	// (SoftHSM2 killed while writing an object can leave it without a
	// CKA_ID at all), so it is destroyed by its handle. 0 for a pair
	// found by its CKA_ID.
	handle p11.ObjectHandle
	// slot is the version number a candidate for one holds (a pending
	// pair, a labelled duplicate, or a labelled pair whose public key
	// cannot be read, which may be a relabelling being written and so
	// counts as committed); 0 for any other stray.
	slot uint32
	// pending: the candidate's public half still has its pending label,
	// so it has not committed.
	pending bool
}

// half is what listing found of one object.
type half struct {
	label   string
	ok      bool // the label is a Signet label for the ring
	pending bool // the label is a pending label for the ring
	h       p11.ObjectHandle
}

// idSize is the length of the CKA_ID Signet gives a key pair: the version
// number, then 4 random bytes.
const idSize = 8

// list finds the ring's versions, oldest first, and its stray objects. A
// version is a public key labelled for the ring whose private half, if it
// still exists, carries the same label (none: revoked). Of two labelled key
// pairs with the same number, the one with the smaller CKA_ID is the
// version (an order every replica reads alike from the token, whatever its
// clock): the other is a stray, which CreateVersion makes sure never
// reported success (see settle). Any other object of the ring is a stray,
// never a version.
func (b *Backend) list(ctx context.Context, ring backends.KeyRing) ([]*object, []stray, error) {
	var out []*object
	var strays []stray
	// A key whose public key cannot be read is the newest's interrupted
	// creation (a process killed while SoftHSM2 wrote the object) or a
	// published version gone bad; only the first may be set aside.
	type unreadableKey struct {
		stray
		n       uint32
		ring    string
		created time.Time
		private bool
	}
	var unreadable []unreadableKey
	err := b.pool.with(ctx, func(sh p11.SessionHandle) error {
		out, strays, unreadable = nil, nil, nil
		// Every object on the token, found by its label rather than by a
		// template: an object a killed writer left may lack the attributes
		// (CKA_ID, even CKA_CLASS) a template would match on.
		hs, err := findObjects(b.mod.ctx, sh, nil)
		if err != nil {
			return err
		}
		pubs, privs := map[string]half{}, map[string]half{}
		var pubOrder, privOrder []string
		for _, h := range hs {
			lbl, class, id, err := objectAttributes(b.mod.ctx, sh, h)
			if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				continue // destroyed since it was found
			}
			if err != nil {
				return err
			}
			r, _, _, ok := parseLabel(lbl)
			pr, _, _, pending := parseLabelAs(lbl, pendingPrefix)
			hf := half{label: lbl, ok: ok && r == ring.Name, pending: pending && pr == ring.Name, h: h}
			if isKey := class == p11.CKO_PUBLIC_KEY || class == p11.CKO_PRIVATE_KEY; !isKey || len(id) != idSize {
				if !hf.ok && !hf.pending {
					continue // not this ring's
				}
				// Signet gives every pair an 8-byte CKA_ID; a labelled
				// object without one is a write SoftHSM2 has not finished:
				// left so when its process was killed, or read while
				// another process rewrites it (the relabelling that
				// commits a candidate). A public half of the second kind
				// is a candidate whose place in the order cannot be read,
				// so it holds the number its label names as an undecided
				// one (its CKA_ID orders first): settle never reports a win
				// past it, and a left one holds the number until it is
				// reaped by its handle, as a dead replica's pending pair is.
				st := stray{id: id, label: lbl, handle: h, why: "its CKA_ID is not one Signet gives (an object write that was not finished)"}
				switch class {
				case p11.CKO_PUBLIC_KEY:
					st.slot, st.pending = labelSlot(lbl), true
				case p11.CKO_PRIVATE_KEY:
				default:
					st.why = "it has no key object class (an object write that was not finished)"
				}
				strays = append(strays, st)
				continue
			}
			byID, order := pubs, &pubOrder
			if class == p11.CKO_PRIVATE_KEY {
				byID, order = privs, &privOrder
			}
			if _, dup := byID[string(id)]; !dup {
				*order = append(*order, string(id))
			}
			byID[string(id)] = hf
		}
		for _, id := range pubOrder {
			pub, priv := pubs[id], privs[id]
			_, hasPriv := privs[id]
			switch {
			case pub.pending:
				_, n, _, _ := parseLabelAs(pub.label, pendingPrefix)
				strays = append(strays, stray{id: []byte(id), label: pub.label, why: "its generation was not completed (the public half's label is still pending)",
					slot: n, pending: true})
				continue
			case !pub.ok && !(hasPriv && priv.ok):
				continue // not this ring's
			case !pub.ok:
				strays = append(strays, stray{id: []byte(id), label: priv.label, why: "its public half is not labelled for the ring"})
				continue
			case hasPriv && priv.label != pub.label:
				strays = append(strays, stray{id: []byte(id), label: pub.label, why: "its private half is not labelled like its public half"})
				continue
			}
			r, n, created, _ := parseLabel(pub.label)
			pk, err := readPublicKey(b.mod.ctx, sh, pub.h, ring.Algorithm)
			// SoftHSM2 rewrites an object's file when another process
			// changes an attribute (the relabelling of a new version), and a
			// read in that moment can see a torn value: read again, briefly,
			// before calling the key broken.
			for wait := 10 * time.Millisecond; err != nil && wait <= 160*time.Millisecond && ctx.Err() == nil; wait *= 2 {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
				pk, err = readPublicKey(b.mod.ctx, sh, pub.h, ring.Algorithm)
			}
			if err != nil {
				unreadable = append(unreadable, unreadableKey{stray{id: []byte(id), label: pub.label,
					why: "its public key cannot be read (" + err.Error() + "): its generation or relabelling was interrupted", slot: n}, n, r, created, hasPriv})
				continue
			}
			out = append(out, &object{id: []byte(id), ring: r, n: n, created: created, pub: pk, private: hasPriv})
		}
		for _, id := range privOrder {
			if _, hasPub := pubs[id]; !hasPub && privs[id].ok {
				strays = append(strays, stray{id: []byte(id), label: privs[id].label, why: "its public half is missing"})
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, classify(err, "listing keys of ring "+ring.Name)
	}
	var newest uint32
	readable := map[uint32]bool{}
	for _, o := range out {
		newest = max(newest, o.n)
		readable[o.n] = true
	}
	for _, u := range unreadable {
		// Set aside: newer than every readable version, or a duplicate of
		// a version number a readable pair holds (a lost race's loser).
		switch {
		case u.n <= newest && !readable[u.n] && !u.private:
			// A revoked version (its private half destroyed) whose public
			// key cannot be read: still a version, listed without its key,
			// never published.
			out = append(out, &object{id: u.id, ring: u.ring, n: u.n, created: u.created})
			continue
		case u.n <= newest && !readable[u.n]:
			return nil, nil, errorf(backends.KindFailedPrecondition, "key %q on the token: %s", u.label, u.why)
		}
		strays = append(strays, u.stray)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].n != out[j].n {
			return out[i].n < out[j].n
		}
		return bytes.Compare(out[i].id, out[j].id) < 0
	})
	versions := out[:0]
	for i, o := range out {
		if i > 0 && out[i-1].n == o.n {
			strays = append(strays, stray{id: o.id, label: label(o.ring, o.n, o.created),
				why: fmt.Sprintf("it duplicates version %d, which orders before it (smaller CKA_ID)", o.n), slot: o.n})
			continue
		}
		versions = append(versions, o)
	}
	return versions, strays, nil
}

// recover destroys the ring's stray objects once this process has seen
// each for longer than the grace (a live replica that lost a race destroys
// its own within a backend call). Failures are logged: the next refresh
// tries again.
func (b *Backend) recover(ctx context.Context, strays []stray) {
	for _, s := range strays {
		key, object := s.name()
		_, err := b.opts.Reap(&b.seen, key, func() error {
			if s.handle != 0 {
				return b.destroyHandle(ctx, s.handle, s.label)
			}
			return b.destroy(ctx, s.id, true)
		}, Scheme, backends.RecoveredRemoved, object, s.why)
		if err != nil && ctx.Err() == nil {
			b.opts.Logger.Warn("pkcs11: cannot destroy a stray object; the next refresh tries again", "object", object, "err", err)
		}
	}
}

// name is what identifies a stray: the key its sightings are kept under,
// and how logs and Leftovers name it. A stray found by its handle (its
// CKA_ID unusable, perhaps the same empty one as another's) is named by
// the handle and label, which SoftHSM2 keeps for an object's life.
func (s stray) name() (key, object string) {
	id := hex.EncodeToString(s.id)
	if s.handle != 0 {
		return fmt.Sprintf("handle %d %q", s.handle, s.label), fmt.Sprintf("handle=%d CKA_ID=%s label=%s", s.handle, id, s.label)
	}
	return id, "CKA_ID=" + id + " label=" + s.label
}

// destroyHandle destroys the object h if it still carries label: a handle
// names one object for the module's life, and the check keeps a stale
// listing from destroying anything else.
func (b *Backend) destroyHandle(ctx context.Context, h p11.ObjectHandle, label string) error {
	return b.pool.with(ctx, func(sh p11.SessionHandle) error {
		now, _, _, err := objectAttributes(b.mod.ctx, sh, h)
		if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
			return nil // destroyed already
		}
		if err != nil {
			return err
		}
		if now != label {
			return nil // not the object listed
		}
		return b.mod.ctx.DestroyObject(sh, h)
	})
}

// Leftovers lists the ring's stray objects on the token.
func (b *Backend) Leftovers(ctx context.Context, ring backends.KeyRing) ([]backends.Leftover, error) {
	_, strays, err := b.list(ctx, ring)
	if err != nil {
		return nil, err
	}
	var out []backends.Leftover
	for _, s := range strays {
		_, object := s.name()
		l := backends.Leftover{ID: object, Kind: "key pair object that is not a version: " + s.why, State: "awaiting clean-up"}
		if _, _, created, ok := parseLabel(s.label); ok {
			l.Created = created
		}
		out = append(out, l)
	}
	cs, err := b.readChains(ctx, ring)
	if err != nil {
		return nil, err
	}
	for _, objs := range cs.incomplete {
		out = append(out, backends.Leftover{ID: "CKA_ID=" + objs[0].id + " label=" + objs[0].label,
			Kind: "certificate objects of a chain whose writing was interrupted", State: "awaiting clean-up"})
	}
	return out, nil
}

// objectAttributes reads an object's label, class and CKA_ID, each of which
// may be missing from an object whose writing was interrupted: a missing
// label reads as "", a missing class as ^0 (no class), a missing CKA_ID as
// empty.
func objectAttributes(ctx *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle) (label string, class uint, id []byte, err error) {
	attrs, err := attributes(ctx, sh, h, p11.CKA_LABEL, p11.CKA_CLASS, p11.CKA_ID)
	if err == nil {
		return string(attrs[0].Value), classOf(attrs[1].Value), attrs[2].Value, nil
	}
	if !isCode(err, p11.CKR_ATTRIBUTE_TYPE_INVALID) {
		return "", 0, nil, err
	}
	// One at a time: the token fills none of them when one is missing.
	vals := make([][]byte, 3)
	for i, t := range []uint{p11.CKA_LABEL, p11.CKA_CLASS, p11.CKA_ID} {
		a, err := attributes(ctx, sh, h, t)
		switch {
		case isCode(err, p11.CKR_ATTRIBUTE_TYPE_INVALID):
		case err != nil:
			return "", 0, nil, err
		default:
			vals[i] = a[0].Value
		}
	}
	return string(vals[0]), classOf(vals[1]), vals[2], nil
}

// classOf decodes a CKA_CLASS value (a CK_ULONG in the host's byte order);
// ^0 when it is missing or malformed.
func classOf(v []byte) uint {
	switch len(v) {
	case 8:
		return uint(binary.NativeEndian.Uint64(v))
	case 4:
		return uint(binary.NativeEndian.Uint32(v))
	}
	return ^uint(0)
}

// attributes reads attributes of an object. The token lists every object,
// including those another session (another ring, another replica) is
// creating or destroying at that moment: an attribute whose length changed
// between the two calls GetAttributeValue makes (CKR_BUFFER_TOO_SMALL) is
// read again.
func attributes(ctx *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle, types ...uint) ([]*p11.Attribute, error) {
	tmpl := make([]*p11.Attribute, len(types))
	for attempt := 0; ; attempt++ {
		for i, t := range types {
			tmpl[i] = p11.NewAttribute(t, nil)
		}
		attrs, err := ctx.GetAttributeValue(sh, h, tmpl)
		if !isCode(err, p11.CKR_BUFFER_TOO_SMALL) || attempt == 4 {
			return attrs, err
		}
	}
}

func findObjects(ctx *p11.Ctx, sh p11.SessionHandle, tmpl []*p11.Attribute) ([]p11.ObjectHandle, error) {
	if err := ctx.FindObjectsInit(sh, tmpl); err != nil {
		return nil, err
	}
	defer ctx.FindObjectsFinal(sh)
	var all []p11.ObjectHandle
	for {
		hs, _, err := ctx.FindObjects(sh, 100)
		if err != nil {
			return nil, err
		}
		if len(hs) == 0 {
			return all, nil
		}
		all = append(all, hs...)
	}
}

func readPublicKey(ctx *p11.Ctx, sh p11.SessionHandle, h p11.ObjectHandle, alg backends.Algorithm) (crypto.PublicKey, error) {
	var pub crypto.PublicKey
	switch {
	case alg.IsRSAPKCS1() || alg.IsRSAPSS():
		attrs, err := attributes(ctx, sh, h, p11.CKA_MODULUS, p11.CKA_PUBLIC_EXPONENT)
		if err != nil {
			return nil, err
		}
		e := new(big.Int).SetBytes(attrs[1].Value)
		if !e.IsInt64() || e.Int64() > 1<<31 {
			return nil, fmt.Errorf("RSA public exponent out of range")
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(attrs[0].Value), E: int(e.Int64())}
	default:
		attrs, err := attributes(ctx, sh, h, p11.CKA_EC_POINT)
		if err != nil {
			return nil, err
		}
		// CKA_EC_POINT is a DER OCTET STRING holding the point.
		var point []byte
		if rest, err := asn1.Unmarshal(attrs[0].Value, &point); err != nil || len(rest) != 0 {
			point = attrs[0].Value // some tokens store it bare
		}
		if alg.IsEdDSA() {
			if len(point) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("Ed25519 point of %d bytes", len(point))
			}
			pub = ed25519.PublicKey(point)
		} else {
			k, err := ecdsa.ParseUncompressedPublicKey(alg.Curve(), point)
			if err != nil {
				return nil, err
			}
			pub = k
		}
	}
	if err := alg.CheckPublicKey(pub); err != nil {
		return nil, fmt.Errorf("the key does not fit %s: %v", alg, err)
	}
	return pub, nil
}

func (o *object) version(alg backends.Algorithm) backends.Version {
	return backends.Version{ID: hex.EncodeToString(o.id), Algorithm: alg, PublicKey: o.pub, Created: o.created, Disabled: !o.private}
}

// Versions lists the ring's key pairs on the token, and destroys stray
// objects of the ring that have been seen long enough.
func (b *Backend) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	objs, strays, err := b.list(ctx, ring)
	if err != nil {
		return nil, err
	}
	b.recover(ctx, strays)
	cs, err := b.readChains(ctx, ring)
	if err != nil {
		return nil, err
	}
	b.cleanChains(ctx, cs)
	out := make([]backends.Version, len(objs))
	for i, o := range objs {
		out[i] = o.version(ring.Algorithm)
		out[i].Certificates = cs.inForce[out[i].ID]
	}
	return out, nil
}

var curveOIDs = map[backends.Algorithm]asn1.ObjectIdentifier{
	backends.ES256: {1, 2, 840, 10045, 3, 1, 7},
	backends.ES384: {1, 3, 132, 0, 34},
	backends.ES512: {1, 3, 132, 0, 35},
	backends.EdDSA: {1, 3, 101, 112},
}

// The usage attributes of each half of a key pair. A version's key pair
// has exactly one of each true: CKA_SIGN on the private key, CKA_VERIFY on
// the public one.
var (
	privateUsages = []usage{{p11.CKA_SIGN, "CKA_SIGN"}, {p11.CKA_DECRYPT, "CKA_DECRYPT"}, {p11.CKA_UNWRAP, "CKA_UNWRAP"},
		{p11.CKA_DERIVE, "CKA_DERIVE"}, {p11.CKA_SIGN_RECOVER, "CKA_SIGN_RECOVER"}}
	publicUsages = []usage{{p11.CKA_VERIFY, "CKA_VERIFY"}, {p11.CKA_ENCRYPT, "CKA_ENCRYPT"}, {p11.CKA_WRAP, "CKA_WRAP"},
		{p11.CKA_VERIFY_RECOVER, "CKA_VERIFY_RECOVER"}, {p11.CKA_DERIVE, "CKA_DERIVE"}}
)

type usage struct {
	attr uint
	name string
}

// usageTemplate sets the one usage attribute that is wanted, and every
// other of the half's usage attributes false.
func usageTemplate(want uint, all []usage) []*p11.Attribute {
	out := make([]*p11.Attribute, len(all))
	for i, u := range all {
		out[i] = p11.NewAttribute(u.attr, u.attr == want)
	}
	return out
}

// CheckKeyUsage refuses a ring one of whose private keys that can still
// sign may also decrypt, unwrap, derive or sign with recovery: an object
// made by hand, or by a Signet that left those attributes to the token.
// Public halves are not judged: what a public key can do, anyone who has it
// can do outside the token.
func (b *Backend) CheckKeyUsage(ctx context.Context, ring backends.KeyRing) error {
	objs, _, err := b.list(ctx, ring)
	if err != nil {
		return err
	}
	var broad []string
	err = b.pool.with(ctx, func(sh p11.SessionHandle) error {
		broad = nil
		for _, o := range objs {
			if !o.private {
				continue // revoked: its private key is gone
			}
			hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_ID, o.id)})
			if err != nil {
				return err
			}
			for _, h := range hs {
				var set []string
				for _, u := range privateUsages[1:] {
					attrs, err := attributes(b.mod.ctx, sh, h, u.attr)
					if isCode(err, p11.CKR_ATTRIBUTE_TYPE_INVALID) {
						continue // the token has no such attribute for this key type: it cannot allow it
					}
					if err != nil {
						return err
					}
					if v := attrs[0].Value; len(v) > 0 && v[0] != 0 {
						set = append(set, u.name)
					}
				}
				if len(set) > 0 {
					broad = append(broad, fmt.Sprintf("the private key of version %d (CKA_ID=%s, label %q) has %s set",
						o.n, hex.EncodeToString(o.id), label(o.ring, o.n, o.created), strings.Join(set, ", ")))
				}
			}
		}
		return nil
	})
	if err != nil {
		return classify(err, "reading the usage attributes of ring "+ring.Name)
	}
	if len(broad) > 0 {
		return errorf(backends.KindFailedPrecondition, "key ring %q: %s: it may do more than sign (Signet sets only CKA_SIGN); "+
			"clear those attributes on the token, or rotate and revoke the version", ring.Name, strings.Join(broad, "; "))
	}
	return nil
}

// CreateVersion generates a key pair in the token as version latest+1,
// through the rotation protocol (backends.Rotate) over rotation's
// primitives.
func (b *Backend) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (backends.Version, error) {
	if !backends.Supports(b, ring.Algorithm) {
		return backends.Version{}, errorf(backends.KindUnimplemented, "the token cannot generate and sign %q keys", ring.Algorithm)
	}
	if strings.Contains(ring.Name, "/") {
		return backends.Version{}, errorf(backends.KindInvalidArgument, "key ring name %q contains '/'", ring.Name)
	}
	return backends.Rotate(ctx, b.opts, Scheme, ring, latest, &rotation{b: b, ring: ring})
}

// rotation is PKCS#11's primitives of the rotation protocol
// (backends.Protocol); the package documentation tells the whole race.
// The claim is the slot's number in the candidate's CKA_ID, the candidate
// a key pair whose public half is labelled pending (no Versions lists
// it), the order the candidates' CKA_IDs as the token holds them. The
// token cannot show a candidate before it is generated, so the settle
// comes after the commit: Pick lets a candidate commit when no pair for
// the slot has committed and no pending one orders before it, and Commit
// relabels the public half (which makes it a version), then waits until no
// pending candidate that orders before it is left undecided, and loses if
// a committed one does. A loser destroys its pair.
type rotation struct {
	b    *Backend
	ring backends.KeyRing

	n         uint32 // the slot
	id        []byte // the candidate's CKA_ID: n, then 4 random bytes
	lbl       string // the final label
	pubHandle p11.ObjectHandle
	made      bool // the pair was generated
}

// Newest lists the ring's versions.
func (r *rotation) Newest(ctx context.Context) (string, error) {
	objs, _, err := r.b.list(ctx, r.ring)
	if err != nil {
		return "", err
	}
	backends.Step(ctx, "list")
	r.n = 1
	if len(objs) == 0 {
		return "", nil
	}
	r.n = objs[len(objs)-1].n + 1
	return hex.EncodeToString(objs[len(objs)-1].id), nil
}

// Claim draws the candidate's CKA_ID for the slot; the token is not
// called.
func (r *rotation) Claim(context.Context) error {
	r.id = make([]byte, idSize)
	binary.BigEndian.PutUint32(r.id, r.n)
	rand.Read(r.id[4:])
	r.lbl = label(r.ring.Name, r.n, time.Now().UTC())
	return nil
}

// Create generates the pair, its public half labelled pending.
func (r *rotation) Create(ctx context.Context) error {
	pending := pendingPrefix + strings.TrimPrefix(r.lbl, "signet")
	// Every usage attribute is set, none left to the token's defaults
	// (SoftHSM2's let a private key decrypt and unwrap, and its public key
	// encrypt and wrap): the private key signs and the public key verifies,
	// nothing else.
	pubTmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, false),
		p11.NewAttribute(p11.CKA_LABEL, pending), p11.NewAttribute(p11.CKA_ID, r.id),
	}
	pubTmpl = append(pubTmpl, usageTemplate(p11.CKA_VERIFY, publicUsages)...)
	privTmpl := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, true), p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_LABEL, r.lbl), p11.NewAttribute(p11.CKA_ID, r.id),
	}
	privTmpl = append(privTmpl, usageTemplate(p11.CKA_SIGN, privateUsages)...)
	var mech uint
	switch alg := r.ring.Algorithm; {
	case alg.IsECDSA() || alg.IsEdDSA():
		mech = p11.CKM_EC_KEY_PAIR_GEN
		if alg.IsEdDSA() {
			mech = ckmECEdwardsKeyPairGen
		}
		params, _ := asn1.Marshal(curveOIDs[alg])
		pubTmpl = append(pubTmpl, p11.NewAttribute(p11.CKA_EC_PARAMS, params))
	default:
		mech = p11.CKM_RSA_PKCS_KEY_PAIR_GEN
		pubTmpl = append(pubTmpl, p11.NewAttribute(p11.CKA_MODULUS_BITS, alg.RSABits()),
			p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}))
	}
	err := r.b.pool.with(ctx, func(sh p11.SessionHandle) error {
		var err error
		r.pubHandle, _, err = r.b.mod.ctx.GenerateKeyPair(sh, []*p11.Mechanism{p11.NewMechanism(mech, nil)}, pubTmpl, privTmpl)
		return err
	})
	if err != nil {
		return classify(err, "generating a key pair for ring "+r.ring.Name)
	}
	r.made = true
	backends.Step(ctx, "GenerateKeyPair")
	return nil
}

// Resolve has nothing to read back: the token is a library in this
// process, which does not lose answers.
func (r *rotation) Resolve(_ context.Context, err error) error { return err }

// Settle does nothing before the commit (see rotation).
func (r *rotation) Settle(context.Context) error { return nil }

// Pick lets the candidate commit if no pair holds the slot or will win it.
func (r *rotation) Pick(ctx context.Context) error {
	_, won, err := r.b.settle(ctx, r.ring, r.n, r.id, false)
	backends.Step(ctx, "list candidates")
	switch {
	case err != nil:
		return err
	case !won:
		return backends.Lost("")
	}
	return nil
}

// Commit relabels the public half, then settles.
func (r *rotation) Commit(ctx context.Context) (backends.Version, error) {
	err := r.b.pool.with(ctx, func(sh p11.SessionHandle) error {
		return r.b.mod.ctx.SetAttributeValue(sh, r.pubHandle, []*p11.Attribute{p11.NewAttribute(p11.CKA_LABEL, r.lbl)})
	})
	if err != nil {
		return backends.Version{}, classify(err, "labelling the public key generated for ring "+r.ring.Name)
	}
	backends.Step(ctx, "label public key")
	v, won, err := r.b.settle(ctx, r.ring, r.n, r.id, true)
	backends.Step(ctx, "list again")
	switch {
	case err != nil:
		return backends.Version{}, err
	case !won:
		return backends.Version{}, backends.Lost("")
	}
	return v.version(r.ring.Algorithm), nil
}

// Abandon destroys the candidate pair: a lost race or a failed create
// must not leave it for the grace (a committed candidate that has not
// reported success may still be displaced).
func (r *rotation) Abandon(ctx context.Context, _ bool) (string, error) {
	if !r.made {
		return backends.NothingMade, nil
	}
	what := fmt.Sprintf("the candidate for version %d made here", r.n)
	if err := r.b.destroy(ctx, r.id, true); err != nil {
		return what, classify(err, "destroying "+what)
	}
	backends.Step(ctx, "destroy candidate")
	return what + " is destroyed", nil
}

// Release does nothing: the claim is the candidate.
func (r *rotation) Release(context.Context) {}

// settleWait is how often a committed candidate looks again while a
// pending one that orders before it is still undecided.
const settleWait = 10 * time.Millisecond

// settle decides whether the pair id wins version n of the ring. The
// candidates for n are the pairs generated for it; they order by CKA_ID,
// which the token holds and every replica reads alike. Before committing
// (committed false), id goes on only if no pair for n has committed (a
// committed one, or one that orders before it, wins) and no pending one
// orders before it. After committing, id wins once no committed pair
// orders before it and no pending one that does is left: such a pending
// one is undecided (it commits if it listed before id committed, and
// loses otherwise), so settle waits, within ctx, for its replica to
// commit or remove it. A pair that wins here is the version for good:
// every candidate for n that a replica lists from now on finds a
// committed pair for n and loses before committing, and list orders the
// committed ones as settle does.
//
// A committed winner is returned as listed.
func (b *Backend) settle(ctx context.Context, ring backends.KeyRing, n uint32, id []byte, committed bool) (*object, bool, error) {
	for {
		objs, strays, err := b.list(ctx, ring)
		if err != nil {
			return nil, false, err
		}
		var mine *object
		var otherCommitted, committedBefore, pendingBefore bool
		for _, o := range objs {
			if bytes.Equal(o.id, id) {
				mine = o
			}
			if o.n == n && !bytes.Equal(o.id, id) {
				otherCommitted = true
				committedBefore = committedBefore || bytes.Compare(o.id, id) < 0
			}
		}
		for _, s := range strays {
			if s.slot != n || bytes.Equal(s.id, id) {
				continue
			}
			before := bytes.Compare(s.id, id) < 0
			if s.pending {
				pendingBefore = pendingBefore || before
			} else {
				otherCommitted = true
				committedBefore = committedBefore || before
			}
		}
		switch {
		case !committed:
			return nil, !otherCommitted && !pendingBefore, nil
		case committedBefore:
			return nil, false, nil
		case mine == nil:
			return nil, false, errorf(backends.KindUnknown, "key ring %q: the key pair generated for version %d is not on the token", ring.Name, n)
		case !pendingBefore:
			return mine, true, nil
		}
		select {
		case <-ctx.Done():
			return nil, false, errorf(backends.KindUnavailable, "key ring %q: another replica's candidate for version %d is still undecided", ring.Name, n)
		case <-time.After(settleWait):
		}
	}
}

// destroy removes the private (and, with both, the public) object of a version.
func (b *Backend) destroy(ctx context.Context, id []byte, both bool) error {
	classes := []uint{p11.CKO_PRIVATE_KEY}
	if both {
		classes = append(classes, p11.CKO_PUBLIC_KEY)
	}
	err := b.pool.with(ctx, func(sh p11.SessionHandle) error {
		for _, class := range classes {
			hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, class), p11.NewAttribute(p11.CKA_ID, id)})
			if err != nil {
				return err
			}
			for _, h := range hs {
				if err := b.mod.ctx.DestroyObject(sh, h); err != nil {
					return err
				}
			}
		}
		return nil
	})
	b.mu.Lock()
	delete(b.handles, hex.EncodeToString(id))
	b.mu.Unlock()
	return err
}

// DisableVersion destroys the version's private key object.
func (b *Backend) DisableVersion(ctx context.Context, ring backends.KeyRing, versionID string) error {
	objs, _, err := b.list(ctx, ring)
	if err != nil {
		return err
	}
	backends.Step(ctx, "list")
	for _, o := range objs {
		if hex.EncodeToString(o.id) == versionID {
			if !o.private {
				return nil
			}
			if err := b.destroy(ctx, o.id, false); err != nil {
				return classify(err, "destroying the private key of version "+versionID)
			}
			backends.Step(ctx, "DestroyObject private key")
			return nil
		}
	}
	return errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
}

// privateKey finds (and caches) the private key object of a version.
func (b *Backend) privateKey(sh p11.SessionHandle, ring backends.KeyRing, versionID string) (p11.ObjectHandle, error) {
	b.mu.Lock()
	h, ok := b.handles[versionID]
	b.mu.Unlock()
	if ok {
		return h, nil
	}
	id, err := hex.DecodeString(versionID)
	if err != nil || len(id) != 8 {
		return 0, errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
	}
	hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY), p11.NewAttribute(p11.CKA_ID, id)})
	if err != nil {
		return 0, err
	}
	if len(hs) == 0 {
		pubs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY), p11.NewAttribute(p11.CKA_ID, id)})
		if err == nil && len(pubs) > 0 {
			return 0, errorf(backends.KindFailedPrecondition, "version %s of key ring %q is revoked (its private key was destroyed)", versionID, ring.Name)
		}
		return 0, errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
	}
	b.mu.Lock()
	b.handles[versionID] = hs[0]
	b.mu.Unlock()
	return hs[0], nil
}

var hashMechanisms = map[crypto.Hash]struct{ hash, mgf uint }{
	crypto.SHA256: {p11.CKM_SHA256, p11.CKG_MGF1_SHA256},
	crypto.SHA384: {p11.CKM_SHA384, p11.CKG_MGF1_SHA384},
	crypto.SHA512: {p11.CKM_SHA512, p11.CKG_MGF1_SHA512},
}

// Sign signs with exactly the named version.
func (b *Backend) Sign(ctx context.Context, ring backends.KeyRing, versionID string, signingInput []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	alg := ring.Algorithm
	mechs, ok := algMechanisms[alg]
	if !ok {
		return nil, errorf(backends.KindUnimplemented, "algorithm %q is not supported", alg)
	}
	msg := signingInput
	var mech *p11.Mechanism
	switch {
	case alg.IsECDSA():
		h := alg.Hash().New()
		h.Write(signingInput)
		msg = h.Sum(nil)
		mech = p11.NewMechanism(p11.CKM_ECDSA, nil)
	case alg.IsRSAPSS():
		hm := hashMechanisms[alg.Hash()]
		mech = p11.NewMechanism(mechs[1], p11.NewPSSParams(hm.hash, hm.mgf, uint(alg.Hash().Size())))
	default:
		mech = p11.NewMechanism(mechs[1], nil)
	}
	// The first Sign with a version in this process checks that it is one:
	// a duplicate or incomplete key pair on the token (strays) never signs.
	b.mu.Lock()
	_, cached := b.handles[versionID]
	b.mu.Unlock()
	if !cached {
		objs, _, err := b.list(ctx, ring)
		if err != nil {
			return nil, err
		}
		found := false
		for _, o := range objs {
			found = found || hex.EncodeToString(o.id) == versionID
		}
		if !found {
			return nil, errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
		}
	}
	var sig []byte
	err := b.pool.with(ctx, func(sh p11.SessionHandle) error {
		key, err := b.privateKey(sh, ring, versionID)
		if err != nil {
			return err
		}
		if err := b.mod.ctx.SignInit(sh, []*p11.Mechanism{mech}, key); err != nil {
			if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) || isCode(err, p11.CKR_KEY_HANDLE_INVALID) {
				b.mu.Lock()
				delete(b.handles, versionID) // destroyed elsewhere; the next call looks again
				b.mu.Unlock()
			}
			return err
		}
		sig, err = b.mod.ctx.Sign(sh, msg)
		return err
	})
	if err != nil {
		return nil, classify(err, "signing with version "+versionID+" of ring "+ring.Name)
	}
	if want := alg.SignatureSize(); want != 0 && len(sig) != want {
		return nil, errorf(backends.KindUnknown, "the token returned a %d-byte %s signature, want %d", len(sig), alg, want)
	}
	return sig, nil
}

// Close closes the backend's sessions and, with the last backend on the
// library, finalizes it. It is safe to call more than once.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		b.pool.close()
		b.mod.release()
	})
	return nil
}

func isCode(err error, code uint) bool {
	var e p11.Error
	return errors.As(err, &e) && uint(e) == code
}

// classify maps CKR_* codes to the shared kinds; the message names the code
// and never holds the PIN.
func classify(err error, what string) error {
	var be *backends.Error
	if errors.As(err, &be) {
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: what + ": no session became free in time", Err: err}
	}
	var e p11.Error
	if !errors.As(err, &e) {
		return errorf(backends.KindUnknown, "%s: %v", what, err)
	}
	kind := backends.KindUnknown
	switch uint(e) {
	case p11.CKR_PIN_INCORRECT, p11.CKR_PIN_LOCKED, p11.CKR_PIN_EXPIRED, p11.CKR_USER_NOT_LOGGED_IN:
		kind = backends.KindPermissionDenied
	case p11.CKR_DEVICE_REMOVED, p11.CKR_DEVICE_ERROR, p11.CKR_TOKEN_NOT_PRESENT, p11.CKR_SESSION_HANDLE_INVALID,
		p11.CKR_SESSION_CLOSED, p11.CKR_DEVICE_MEMORY, p11.CKR_HOST_MEMORY, p11.CKR_SESSION_COUNT:
		kind = backends.KindUnavailable
	case p11.CKR_KEY_HANDLE_INVALID, p11.CKR_OBJECT_HANDLE_INVALID:
		kind = backends.KindNotFound
	case p11.CKR_MECHANISM_INVALID, p11.CKR_MECHANISM_PARAM_INVALID, p11.CKR_KEY_TYPE_INCONSISTENT, p11.CKR_TEMPLATE_INCONSISTENT,
		p11.CKR_ATTRIBUTE_VALUE_INVALID, p11.CKR_DOMAIN_PARAMS_INVALID, p11.CKR_KEY_FUNCTION_NOT_PERMITTED:
		kind = backends.KindInvalidArgument
	case p11.CKR_ATTRIBUTE_SENSITIVE:
		kind = backends.KindPermissionDenied
	}
	return &backends.Error{Kind: kind, Backend: Scheme, Msg: fmt.Sprintf("%s: %s", what, e.Error()), Err: err}
}
