//go:build pkcs11 && cgo

package pkcs11

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"

	p11 "github.com/miekg/pkcs11"

	"github.com/signet-dev/signet/backends"
)

// Certificate chains live on the token as X.509 certificate objects
// (CKO_CERTIFICATE, CKC_X_509) with the CKA_ID of the version's key pair,
// one object per certificate of the chain, labelled
// signet-x5c/<ring>/<generation>/<writer>/<position>/<count>. A chain is
// complete when all its positions exist; the one in force for a version is
// its complete chain of the highest generation (of two writers of the same
// generation, the smaller writer id). A chain replaced by a newer one is
// destroyed by whoever lists it; an incomplete one (a writer that died
// half-way) once this process has seen it for longer than the recovery
// grace, like any other leftover.
//
// PKCS#11 has no compare-and-set: two replicas racing to attach a chain in
// the same moment may both write one. Every replica then picks the same
// one (the rule above) as soon as both are complete, and destroys the other.

const certPrefix = "signet-x5c"

// certObject is one certificate object of a ring's chain.
type certObject struct {
	id     string // hex CKA_ID: the version
	gen    uint64
	writer string
	pos    int
	count  int
	der    []byte
	h      p11.ObjectHandle
	label  string
}

func certLabel(ring string, gen uint64, writer string, pos, count int) string {
	return fmt.Sprintf("%s/%s/%d/%s/%d/%d", certPrefix, ring, gen, writer, pos, count)
}

func parseCertLabel(l, ring string) (gen uint64, writer string, pos, count int, ok bool) {
	p := strings.Split(l, "/")
	if len(p) != 6 || p[0] != certPrefix || p[1] != ring {
		return 0, "", 0, 0, false
	}
	gen, err1 := strconv.ParseUint(p[2], 10, 64)
	pos, err2 := strconv.Atoi(p[4])
	count, err3 := strconv.Atoi(p[5])
	if err1 != nil || err2 != nil || err3 != nil || pos < 0 || count < 1 || pos >= count || count > 16 {
		return 0, "", 0, 0, false
	}
	return gen, p[3], pos, count, true
}

// chainSet is what the token holds of a ring's chains.
type chainSet struct {
	inForce    map[string][][]byte     // version -> chain
	newestGen  map[string]uint64       // version -> highest generation of any object
	superseded []certObject            // complete chains not in force
	incomplete map[string][]certObject // group key -> objects of a chain with positions missing
}

// readChains lists the ring's certificate objects.
func (b *Backend) readChains(ctx context.Context, ring backends.KeyRing) (*chainSet, error) {
	var objs []certObject
	err := b.pool.with(ctx, func(sh p11.SessionHandle) error {
		objs = nil
		hs, err := findObjects(b.mod.ctx, sh, []*p11.Attribute{p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE)})
		if err != nil {
			return err
		}
		for _, h := range hs {
			attrs, err := attributes(b.mod.ctx, sh, h, p11.CKA_LABEL, p11.CKA_ID, p11.CKA_VALUE)
			if isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
				continue // destroyed since it was found
			}
			if err != nil {
				return err
			}
			gen, writer, pos, count, ok := parseCertLabel(string(attrs[0].Value), ring.Name)
			if !ok {
				continue
			}
			objs = append(objs, certObject{id: hex.EncodeToString(attrs[1].Value), gen: gen, writer: writer, pos: pos, count: count,
				der: attrs[2].Value, h: h, label: string(attrs[0].Value)})
		}
		return nil
	})
	if err != nil {
		return nil, classify(err, "listing the certificates of ring "+ring.Name)
	}
	type groupKey struct {
		id     string
		gen    uint64
		writer string
	}
	groups := map[groupKey][]certObject{}
	cs := &chainSet{inForce: map[string][][]byte{}, newestGen: map[string]uint64{}, incomplete: map[string][]certObject{}}
	for _, o := range objs {
		k := groupKey{o.id, o.gen, o.writer}
		groups[k] = append(groups[k], o)
		cs.newestGen[o.id] = max(cs.newestGen[o.id], o.gen)
	}
	var keys []groupKey
	for k := range groups {
		keys = append(keys, k)
	}
	// Best first: the highest generation, then the smallest writer.
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].gen != keys[j].gen {
			return keys[i].gen > keys[j].gen
		}
		return keys[i].writer < keys[j].writer
	})
	for _, k := range keys {
		g := groups[k]
		chain := make([][]byte, g[0].count)
		complete := true
		for _, o := range g {
			if o.count != len(chain) || chain[o.pos] != nil {
				complete = false
				break
			}
			chain[o.pos] = o.der
		}
		for _, c := range chain {
			complete = complete && c != nil
		}
		switch {
		case !complete:
			cs.incomplete[fmt.Sprintf("%s/%d/%s", k.id, k.gen, k.writer)] = g
		case cs.inForce[k.id] == nil:
			cs.inForce[k.id] = chain
		default:
			cs.superseded = append(cs.superseded, g...)
		}
	}
	return cs, nil
}

// cleanChains destroys superseded chains at once and incomplete ones once
// they have been seen for longer than the grace. Failures are logged.
func (b *Backend) cleanChains(ctx context.Context, cs *chainSet) {
	destroy := func(objs []certObject, why string) {
		err := b.pool.with(ctx, func(sh p11.SessionHandle) error {
			for _, o := range objs {
				if err := b.mod.ctx.DestroyObject(sh, o.h); err != nil && !isCode(err, p11.CKR_OBJECT_HANDLE_INVALID) {
					return err
				}
			}
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				b.opts.Logger.Warn("pkcs11: cannot destroy certificate objects; the next refresh tries again", "err", err)
			}
			return
		}
		if len(objs) > 0 {
			b.opts.Recovered(Scheme, backends.RecoveredRemoved, fmt.Sprintf("certificate chain CKA_ID=%s label=%q", objs[0].id, objs[0].label), why)
		}
	}
	if len(cs.superseded) > 0 {
		destroy(cs.superseded, "a certificate chain replaced by a newer one")
	}
	for key, objs := range cs.incomplete {
		if b.seen.Stale("x5c/"+key, b.now(), b.opts.Grace()) {
			destroy(objs, "a certificate chain whose writing was interrupted")
			b.seen.Forget("x5c/" + key)
		}
	}
}

var _ backends.CertificateStore = (*Backend)(nil)

// PutCertificates writes chain as the version's next generation of
// certificate objects, if the chain in force is old, and returns the chain
// in force afterwards.
func (b *Backend) PutCertificates(ctx context.Context, ring backends.KeyRing, versionID string, old, chain [][]byte) ([][]byte, error) {
	if len(chain) == 0 || len(chain) > 16 {
		return nil, errorf(backends.KindInvalidArgument, "a certificate chain of %d certificates", len(chain))
	}
	id, err := hex.DecodeString(versionID)
	if err != nil || len(id) != idSize {
		return nil, errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
	}
	certs := make([]*x509.Certificate, len(chain))
	for i, der := range chain {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, errorf(backends.KindInvalidArgument, "certificate %d of the chain: %v", i, err)
		}
	}
	cs, err := b.readChains(ctx, ring)
	if err != nil {
		return nil, err
	}
	backends.Step(ctx, "list certificates")
	if cur := cs.inForce[versionID]; !backends.SameChain(cur, old) {
		return cur, nil
	}
	w := make([]byte, 4)
	if _, err := rand.Read(w); err != nil {
		return nil, errorf(backends.KindUnknown, "naming the certificate objects: %v", err)
	}
	writer, gen := hex.EncodeToString(w), cs.newestGen[versionID]+1
	for i, c := range certs {
		tmpl := []*p11.Attribute{
			p11.NewAttribute(p11.CKA_CLASS, p11.CKO_CERTIFICATE), p11.NewAttribute(p11.CKA_CERTIFICATE_TYPE, p11.CKC_X_509),
			p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_PRIVATE, false),
			p11.NewAttribute(p11.CKA_LABEL, certLabel(ring.Name, gen, writer, i, len(chain))), p11.NewAttribute(p11.CKA_ID, id),
			p11.NewAttribute(p11.CKA_SUBJECT, c.RawSubject), p11.NewAttribute(p11.CKA_ISSUER, c.RawIssuer),
			p11.NewAttribute(p11.CKA_VALUE, c.Raw),
		}
		err := b.pool.with(ctx, func(sh p11.SessionHandle) error {
			_, err := b.mod.ctx.CreateObject(sh, tmpl)
			return err
		})
		if err != nil {
			return nil, classify(err, fmt.Sprintf("storing certificate %d of the chain of version %s", i, versionID))
		}
		backends.Step(ctx, "CreateObject certificate")
	}
	cs, err = b.readChains(ctx, ring)
	if err != nil {
		return nil, err
	}
	b.cleanChains(ctx, cs)
	return cs.inForce[versionID], nil
}
