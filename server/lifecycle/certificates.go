package lifecycle

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/x5c"
	"github.com/signet-dev/signet/server/x5c/vaultpki"
)

// CertSource is where a ring's certificates come from.
type CertSource int

const (
	// SourceSelfSigned: each version's certificate is signed by its own key.
	SourceSelfSigned CertSource = iota + 1
	// SourceCARing: issued by the active version of another ring, a CA ring.
	SourceCARing
	// SourceVaultPKI: issued by a Vault PKI engine from a request the
	// version's key signed.
	SourceVaultPKI
)

var sourceNames = map[CertSource]string{SourceSelfSigned: "self_signed", SourceCARing: "ca_ring", SourceVaultPKI: "vault_pki"}

func (s CertSource) String() string { return sourceNames[s] }

// CertSpec is a ring's x5c configuration. On a CA ring only Profile is
// used: its certificates are always self-signed CA certificates.
type CertSpec struct {
	Source   CertSource
	CARing   string
	VaultPKI *vaultpki.Client
	Profile  x5c.Profile
	// Required: a version without a valid chain is neither published nor
	// signs (the previous version stays active); otherwise it is published
	// without x5c.
	Required bool
}

// certState is a ring's certificate work in this process. mu is held for
// the whole of each certify, so that one obtains chains for the ring at a
// time in this process (the backend's compare-and-set settles it between
// replicas). problems, the last failure to obtain each version's chain, is
// replaced whole and only with mu held; readers load it without a lock.
type certState struct {
	mu       sync.Mutex
	problems atomic.Pointer[map[string]CertProblem] // version ID -> the last failure
}

// CertProblem is why a version has no valid chain now.
type CertProblem struct {
	// Reason is one of a few stable words, for metrics: "issue_failed",
	// "store_failed", "invalid", "no_ca_certificate".
	Reason string
	Err    error
	At     time.Time
}

// load returns the last failures by version ID; nil with none.
func (c *certState) load() map[string]CertProblem {
	if m := c.problems.Load(); m != nil {
		return *m
	}
	return nil
}

// set records p as the last failure for version id, or forgets it (p
// nil). Called with c.mu held.
func (c *certState) set(id string, p *CertProblem) {
	cur := c.load()
	if _, had := cur[id]; p == nil && !had {
		return // nothing to forget: the usual case writes nothing
	}
	next := maps.Clone(cur)
	if next == nil {
		next = map[string]CertProblem{}
	}
	if p == nil {
		delete(next, id)
	} else {
		next[id] = *p
	}
	c.problems.Store(&next)
}

// permanent returns a failure that no retry can mend, which New refuses
// to start with: the backend cannot store this kind of chain, or the issuer
// refused the request for good (permission denied, a wrong mount or role,
// a request its role forbids) rather than being unreachable.
func (c *certState) permanent() error {
	for _, p := range c.load() {
		switch k := backends.KindOf(p.Err); {
		case k == backends.KindUnimplemented:
			return p.Err
		case p.Reason == "issue_failed" && (k == backends.KindPermissionDenied || k == backends.KindInvalidArgument ||
			k == backends.KindFailedPrecondition):
			return p.Err
		}
	}
	return nil
}

func (c *certState) get(id string) (CertProblem, bool) {
	p, ok := c.load()[id]
	return p, ok
}

// checkChain parses the chain a backend stored with v and sets v.Chain, or
// v.CertProblem when there is none or it is unusable. A chain for another
// key is logged as an error: it is never published with v's key.
func (ks *KeySet) checkChain(r *Ring, v *Version, now time.Time) {
	if r.cert == nil {
		return
	}
	if v.CertificatesProblem != "" {
		v.CertProblem = "the stored certificate chain is unusable: " + v.CertificatesProblem
		return
	}
	if len(v.Certificates) == 0 {
		v.CertProblem = "no certificate chain stored yet"
		return
	}
	chain, err := x5c.Parse(v.Certificates, v.PublicKey, now)
	switch {
	case errors.Is(err, x5c.ErrWrongKey):
		v.CertProblem, v.certWrongKey = "the stored certificate is for another key: never published with this version", true
		ks.log.Error("key mismatch: the certificate stored with a version is for another key; the version is not published",
			"key_ring", r.Name, "backend_id", v.ID, "kid", v.Kid)
	case err != nil:
		v.CertProblem = "the stored certificate chain is unusable: " + err.Error()
	default:
		v.Chain = chain
	}
}

// chainNeed is the decision for one version of a ring with x5c: why it
// needs a new chain now; "" if it needs none (its chain is fine, or it is
// disabled or retired), and then its last failure is forgotten.
type chainNeed struct {
	v   *Version
	why string
}

// chainsNeeded decides which versions of a ring with x5c configuration
// cert need a new chain at now: vs are the ring's versions (states as of
// now) and caVersions, for a ring whose certificates a CA ring issues, that
// CA ring's (nil: not read). It is pure.
//
// The enabled versions that are or may become published need one, and for
// a CA ring every enabled version that may issue: each needs a chain when
// it has none, when its certificate expires within renew_before, or
// (ca_ring) when it was issued by another CA certificate than the CA ring's
// active one, or by a revoked CA version. A leaf whose life was capped at
// its CA certificate's notAfter is not renewed for that: a new one could not
// outlive the CA certificate either; the CA ring's renewal re-issues it.
func chainsNeeded(cert *CertSpec, ca bool, vs []*Version, caVersions *snapshot, now time.Time) []chainNeed {
	out := make([]chainNeed, 0, len(vs))
	for _, v := range vs {
		need := chainNeed{v: v}
		if !v.Disabled && v.State != StateRetired {
			need.why = needsChain(cert, ca, v, caVersions, now)
		}
		out = append(out, need)
	}
	return out
}

// needsChain says why enabled version v needs a new chain (see
// chainsNeeded), or "".
func needsChain(cert *CertSpec, ca bool, v *Version, caVersions *snapshot, now time.Time) string {
	if v.Chain == nil {
		return "it has none"
	}
	leaf := v.Chain[0]
	capped := cert.Source == SourceCARing && !ca && len(v.Chain) > 1 && !leaf.NotAfter.Before(v.Chain[1].NotAfter)
	if leaf.NotAfter.Sub(now) < cert.Profile.RenewBefore && !capped {
		return "its certificate expires at " + leaf.NotAfter.UTC().Format(time.RFC3339) + ", within renew_before"
	}
	if cert.Source != SourceCARing || ca || caVersions == nil {
		return ""
	}
	if len(v.Chain) > 1 {
		for _, cv := range caVersions.versions {
			if cv.Disabled && publicKeyEqual(cv.PublicKey, v.Chain[1].PublicKey) {
				return "its CA certificate is that of revoked version " + cv.ID + " of the CA ring"
			}
		}
	}
	if a := caVersions.active; a != nil && a.Chain != nil && (len(v.Chain) < 2 || !v.Chain[1].Equal(a.Chain[0])) {
		return "the CA ring's active certificate changed"
	}
	return ""
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// certify obtains and stores a chain for each version of r that needs one
// (chainsNeeded, decided once from the snapshot and the clock), then
// re-reads the ring if it stored anything. Failures are recorded per
// version (Status, ListKeys, metrics) and logged, never returned: the key
// set stays in force. A CA ring's certify goes on to the rings it serves,
// whose leaves follow its active certificate.
func (ks *KeySet) certify(ctx context.Context, r *Ring) {
	if r.cert == nil {
		return
	}
	cs, ok := r.backend.(backends.CertificateStore)
	if !ok {
		return // refused at startup
	}
	r.certs.mu.Lock()
	defer r.certs.mu.Unlock()
	now := ks.now()
	var caVersions *snapshot
	if caRing := ks.byName[r.cert.CARing]; r.cert.Source == SourceCARing && !r.ca && caRing != nil {
		caVersions = ks.current(caRing)
	}
	stored := false
	for _, need := range chainsNeeded(r.cert, r.ca, ks.current(r).versions, caVersions, now) {
		v, why := need.v, need.why
		if why == "" {
			r.certs.set(v.ID, nil)
			continue
		}
		if v.certWrongKey {
			ks.log.Error("replacing a certificate stored for another key", "key_ring", r.Name, "backend_id", v.ID)
		}
		at := ks.now() // a certificate is issued as of its own instant, not the decision's
		chain, reason, err := ks.issue(ctx, r, v, at)
		if err == nil {
			bctx, cancel := ks.backendContext(ctx)
			_, err = cs.PutCertificates(bctx, r.key, v.ID, v.Certificates, chain)
			cancel()
			ks.observe(r, err)
			reason = "store_failed"
		}
		if err != nil {
			ks.log.Warn("cannot obtain a certificate chain for a version", "key_ring", r.Name, "backend_id", v.ID, "kid", v.Kid,
				"source", r.certSource(), "why_needed", why, "err", err)
			r.certs.set(v.ID, &CertProblem{Reason: reason, Err: err, At: at})
			ks.hooks.certProblem(r.Name, reason)
			continue
		}
		r.certs.set(v.ID, nil)
		stored = true
		if v.Chain != nil {
			ks.log.Info("renewed a version's certificate ahead of time", "key_ring", r.Name, "backend_id", v.ID, "kid", v.Kid,
				"why", why, "old_not_after", v.Chain[0].NotAfter.UTC())
		} else {
			ks.log.Info("stored a certificate chain for a version", "key_ring", r.Name, "backend_id", v.ID, "kid", v.Kid,
				"source", r.certSource())
		}
	}
	if stored {
		if err := ks.Refresh(ctx, r); err != nil {
			ks.log.Warn("cannot re-read a key ring after storing certificates", "key_ring", r.Name, "err", err)
		}
	}
	if r.ca { // its active certificate may have changed: the leaves it issued follow at once
		for _, dep := range ks.rings {
			if dep.cert != nil && dep.cert.Source == SourceCARing && dep.cert.CARing == r.Name {
				ks.certify(ctx, dep)
			}
		}
	}
}

func (r *Ring) certSource() string {
	if r.ca {
		return "ca"
	}
	return r.cert.Source.String()
}

// issue makes a new chain for v. Every signature is the backend's.
func (ks *KeySet) issue(ctx context.Context, r *Ring, v *Version, now time.Time) (chain [][]byte, reason string, err error) {
	bctx, cancel := ks.backendContext(ctx)
	defer cancel()
	signer := &backends.MessageSigner{Ctx: bctx, Backend: r.backend, Ring: r.key, Version: v.Version}
	p := r.cert.Profile
	switch {
	case r.ca:
		der, err := x5c.CA(signer, r.key.Algorithm, p, now)
		return [][]byte{der}, "issue_failed", err
	case r.cert.Source == SourceSelfSigned:
		der, err := x5c.SelfSigned(signer, r.key.Algorithm, p, now)
		return [][]byte{der}, "issue_failed", err
	case r.cert.Source == SourceCARing:
		ca := ks.byName[r.cert.CARing]
		if ca == nil {
			return nil, "no_ca_certificate", fmt.Errorf("CA ring %q is not read yet", r.cert.CARing)
		}
		a := ks.current(ca).active
		if ks.notStarted(ca) != nil {
			return nil, "no_ca_certificate", fmt.Errorf("CA ring %q has not read its backend since start-up", ca.Name)
		}
		if a == nil || a.Chain == nil {
			return nil, "no_ca_certificate", fmt.Errorf("CA ring %q has no active version with a valid CA certificate", ca.Name)
		}
		caSigner := &backends.MessageSigner{Ctx: bctx, Backend: ca.backend, Ring: ca.key, Version: a.Version}
		der, err := x5c.Leaf(v.PublicKey, a.Chain[0], caSigner, ca.key.Algorithm, p, now)
		if err != nil {
			return nil, "issue_failed", err
		}
		return append([][]byte{der}, a.Chain.DER()...), "", nil
	case r.cert.Source == SourceVaultPKI:
		csr, err := x5c.CSR(signer, r.key.Algorithm, p)
		if err != nil {
			return nil, "issue_failed", fmt.Errorf("certification request: %w", err)
		}
		chain, err := r.cert.VaultPKI.Issue(bctx, csr, p)
		if err != nil {
			return nil, "issue_failed", err
		}
		parsed, err := x5c.Parse(chain, v.PublicKey, now)
		if err != nil {
			return nil, "invalid", fmt.Errorf("the chain Vault PKI returned: %w", err)
		}
		if err := x5c.CheckLeaf(parsed[0], p, now); err != nil {
			return nil, "invalid", fmt.Errorf("the certificate Vault PKI issued: %w", err)
		}
		return chain, "", nil
	}
	return nil, "issue_failed", fmt.Errorf("no certificate source")
}

// certProblem says why v has no valid chain: the last failure to obtain
// one, else what the stored chain lacks.
func (ks *KeySet) certProblem(r *Ring, v *Version) string {
	if p := ks.CertificateProblem(r, v); p != "" {
		return p
	}
	return v.CertProblem
}

// CertificateProblem says why version v of r has no valid certificate
// chain, or why obtaining a new one failed; "" when there is nothing to say.
func (ks *KeySet) CertificateProblem(r *Ring, v *Version) string {
	if r.cert == nil {
		return ""
	}
	if p, ok := r.certs.get(v.ID); ok {
		return fmt.Sprintf("%s since %s: %v", p.Reason, p.At.UTC().Format(time.RFC3339), p.Err)
	}
	if v.Chain == nil && !v.Disabled && v.State != StateRetired {
		return v.CertProblem
	}
	return ""
}
