package azurekv

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/signet-dev/signet/backends"
)

// Scheme is the URI scheme of this backend.
const Scheme = "azurekv"

func init() { backends.Register(Scheme, Open) }

func errorf(kind backends.Kind, format string, args ...any) error {
	return backends.Errorf(kind, Scheme, format, args...)
}

// keySpec is what a JWS algorithm needs of a Key Vault key.
type keySpec struct {
	ec    bool
	curve azkeys.CurveName
	bits  int32 // the size Signet creates; larger existing keys are accepted
	sign  azkeys.SignatureAlgorithm
}

var specs = map[backends.Algorithm]keySpec{
	backends.ES256: {ec: true, curve: azkeys.CurveNameP256, sign: azkeys.SignatureAlgorithmES256},
	backends.ES384: {ec: true, curve: azkeys.CurveNameP384, sign: azkeys.SignatureAlgorithmES384},
	backends.ES512: {ec: true, curve: azkeys.CurveNameP521, sign: azkeys.SignatureAlgorithmES512},
	backends.RS256: {bits: 2048, sign: azkeys.SignatureAlgorithmRS256},
	backends.RS384: {bits: 3072, sign: azkeys.SignatureAlgorithmRS384},
	backends.RS512: {bits: 4096, sign: azkeys.SignatureAlgorithmRS512},
	backends.PS256: {bits: 2048, sign: azkeys.SignatureAlgorithmPS256},
	backends.PS384: {bits: 3072, sign: azkeys.SignatureAlgorithmPS384},
	backends.PS512: {bits: 4096, sign: azkeys.SignatureAlgorithmPS512},
}

// supported is every algorithm but EdDSA: Key Vault has no Ed25519 keys.
var supported = func() []backends.Algorithm {
	var out []backends.Algorithm
	for _, a := range backends.AllAlgorithms {
		if _, ok := specs[a]; ok {
			out = append(out, a)
		}
	}
	return out
}()

func unsupported(alg backends.Algorithm) error {
	if alg == backends.EdDSA {
		return errorf(backends.KindUnimplemented, "EdDSA: Azure Key Vault offers no Ed25519 keys (key types EC and RSA only, API version %s); use ES256 or another algorithm", apiVersion)
	}
	return errorf(backends.KindUnimplemented, "algorithm %q is not supported", alg)
}

// apiVersion is the Key Vault REST API version azkeys speaks.
const apiVersion = "2025-07-01"

// Tags on every version Signet creates.
const (
	tagRing      = "signet-ring"
	tagSeq       = "signet-seq"
	tagState     = "signet-state"     // stateCreating, statePublished or stateLost
	tagPublished = "signet-published" // when the version was enabled (Unix seconds, Key Vault's clock): its creation time for Signet
	tagPubPrefix = "signet-pub-"      // the public key (PKIX, base64), in chunks: Key Vault refuses get on a disabled version
	tagValueMax  = 256
)

// The signet-state tag of a version Signet creates. It is created disabled
// as stateCreating; the replica that wins the rotation race enables it as
// statePublished in one update; a loser, or a live replica once the
// creating replica is gone, tags it stateLost. Versions made before the tag
// existed carry none and count as published.
const (
	stateCreating  = "creating"
	statePublished = "published"
	stateLost      = "lost"
)

// CreateWindow bounds how long Key Vault may take from stamping a new
// version's "created" time to answering its create request: a replica
// whose create answer came later than this (by Key Vault's own Date
// header) gives up its version rather than risk a decision another replica
// could not see. Every replica waits, after its create, until Key Vault's
// clock is past created + 1 s (created is whole seconds) + CreateWindow
// before it re-lists and decides: by then every racing version that could
// win is listed.
const CreateWindow = time.Second

// Backend is the Azure Key Vault backend.
type Backend struct {
	client *azkeys.Client
	vault  string // https://host/
	prefix string
	hsm    bool
	// managedHSM: the host is a Managed HSM, whose local RBAC has data
	// actions of its own.
	managedHSM bool
	opts       backends.OpenOptions
	now        func() time.Time
	seen       backends.Sightings // losers of rotation races, by when this process first saw them enabled

	mu   sync.Mutex
	pubs map[string]crypto.PublicKey // by key id (URL); a version's key never changes
}

// uriOptions is what an azurekv: URI says, read without opening anything.
type uriOptions struct {
	vault, prefix                        string
	hsm, managedHSM, noInstanceDiscovery bool
}

var (
	hostPattern   = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?(:[0-9]{1,5})?$`)
	prefixPattern = regexp.MustCompile(`^[0-9a-zA-Z-]{0,64}$`)
	namePattern   = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)
)

// parseURI reads an azurekv: URI's vault and options and applies their
// defaults.
func parseURI(u *url.URL) (uriOptions, error) {
	if u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.Fragment != "" || !hostPattern.MatchString(u.Host) {
		return uriOptions{}, errorf(backends.KindInvalidArgument, "want azurekv://VAULT-NAME.vault.azure.net/[?options] (or a Managed HSM host), not %q", u.Redacted())
	}
	// Key Vault's key ids name the host in lower case and without the
	// default port: so does Signet, to recognise them.
	host := strings.ToLower(strings.TrimSuffix(u.Host, ":443"))
	managed := strings.Contains(host, ".managedhsm.")
	o := uriOptions{vault: "https://" + host + "/", prefix: "signet-", hsm: managed, managedHSM: managed}
	// Credentials come from the environment, never the URI: no option names one.
	q, err := backends.ParseOptions(Scheme, u, "key_prefix", "hsm", "disable_instance_discovery")
	if err != nil {
		return uriOptions{}, err
	}
	if p := q.Get("key_prefix"); p != "" {
		if o.prefix = p; !prefixPattern.MatchString(o.prefix) {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "key_prefix=%q: at most 64 of 0-9 a-z A-Z -", o.prefix)
		}
	}
	if o.hsm, err = q.Bool("hsm", o.hsm); err != nil {
		return uriOptions{}, err
	}
	if o.noInstanceDiscovery, err = q.Bool("disable_instance_discovery", false); err != nil {
		return uriOptions{}, err
	}
	return o, nil
}

// Open opens the backend an azurekv: URI describes, with
// azidentity.DefaultAzureCredential.
func Open(_ context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
	o, err := parseURI(u)
	if err != nil {
		return nil, err
	}
	var co azcore.ClientOptions
	if opts.TracerProvider != nil {
		co.Transport = &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport.(*http.Transport).Clone(),
			otelhttp.WithTracerProvider(opts.TracerProvider))}
	}
	cred, err := azidentity.NewDefaultAzureCredential(&azidentity.DefaultAzureCredentialOptions{ClientOptions: co,
		DisableInstanceDiscovery: o.noInstanceDiscovery})
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "Azure credentials (DefaultAzureCredential): %v", err)
	}
	return newBackend(o, cred, co, opts)
}

// newBackend opens the backend with a given token credential.
func newBackend(o uriOptions, cred azcore.TokenCredential, co azcore.ClientOptions, opts backends.OpenOptions) (*Backend, error) {
	client, err := azkeys.NewClient(o.vault, credential{cred}, &azkeys.ClientOptions{ClientOptions: co})
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "Key Vault client for %s: %v", o.vault, err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Backend{client: client, vault: o.vault, prefix: o.prefix, hsm: o.hsm, managedHSM: o.managedHSM, opts: opts, now: opts.Clock(),
		pubs: map[string]crypto.PublicKey{}}, nil
}

// Algorithms reports every JWS algorithm but EdDSA.
func (b *Backend) Algorithms() []backends.Algorithm { return supported }

// keyName is the ring's Key Vault key.
func (b *Backend) keyName(ring backends.KeyRing) (string, error) {
	name := b.prefix + ring.Name
	if !namePattern.MatchString(name) {
		return "", errorf(backends.KindInvalidArgument, "key ring %q: Key Vault key name %q is not 1-127 of 0-9 a-z A-Z -", ring.Name, name)
	}
	return name, nil
}

// item is one version of the ring's key as the version list shows it.
type item struct {
	kid, version string
	created      time.Time
	enabled      bool
	seq          int       // the signet-seq tag; 0 on versions made outside Signet
	state        string    // the signet-state tag
	published    time.Time // the signet-published tag; zero if none
	tags         map[string]*string
}

func (it item) before(o item) bool {
	if !it.created.Equal(o.created) {
		return it.created.Before(o.created)
	}
	if it.seq != o.seq {
		return it.seq < o.seq
	}
	return it.version < o.version
}

// lost is a version that never signs and is never listed again: a loser
// of a rotation race, or one its creating replica gave up or left.
func (it item) lost() bool { return it.seq > 0 && !it.enabled && it.state == stateLost }

// creating is a version created disabled whose race is not decided (or
// whose replica stopped before deciding it).
func (it item) creating() bool { return it.seq > 0 && !it.enabled && it.state == stateCreating }

// listing is a ring's key's versions: the published ones, oldest first,
// the ones still being created, and the published losers of rotation races
// left by Signet releases that created versions enabled.
type listing struct {
	all                        []item // every version, in the order of before
	versions, creating, losers []item
	exists                     bool
}

func (l listing) newest() (item, bool) {
	if len(l.versions) == 0 {
		return item{}, false
	}
	return l.versions[len(l.versions)-1], true
}

// winner is the version a rotation race over signet-seq seq settles on:
// of the versions with that seq not lost, the one created first, ties
// broken by version id.
func (l listing) winner(seq int) (item, bool) {
	for _, it := range l.all {
		if it.seq == seq && !it.lost() {
			return it, true
		}
	}
	return item{}, false
}

// list reads the key's versions and sorts them out. Of the published
// versions that carry the same signet-seq only the first created counts;
// since versions are created disabled and enabled only by the replica that
// won the race, there is at most one, except for versions made by releases
// that created them enabled.
func (b *Backend) list(ctx context.Context, name string) (listing, error) {
	var all []item
	p := b.client.NewListKeyPropertiesVersionsPager(name, nil)
	for p.More() {
		page, err := p.NextPage(ctx)
		if isNotFound(err) && ctx.Err() == nil {
			return listing{}, nil
		}
		if err != nil {
			return listing{}, b.classify(err, "listing the versions of "+name, opRead)
		}
		for _, kp := range page.Value {
			if kp == nil || kp.KID == nil || kp.Attributes == nil {
				continue
			}
			it := item{kid: string(*kp.KID), version: kp.KID.Version(), tags: kp.Tags, state: tag(kp.Tags, tagState),
				enabled: kp.Attributes.Enabled != nil && *kp.Attributes.Enabled}
			if kp.Attributes.Created != nil {
				it.created = *kp.Attributes.Created
			}
			if s := tag(kp.Tags, tagSeq); s != "" {
				if n, err := strconv.Atoi(s); err == nil && n > 0 {
					it.seq = n
				}
			}
			if n, err := strconv.ParseInt(tag(kp.Tags, tagPublished), 10, 64); err == nil && n > 0 {
				it.published = time.Unix(n, 0)
			}
			all = append(all, it)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].before(all[j]) })
	l := listing{all: all, exists: true}
	winners := map[int]string{}
	for _, it := range all {
		switch {
		case it.lost():
		case it.creating():
			l.creating = append(l.creating, it)
		case it.seq == 0:
			l.versions = append(l.versions, it)
		case winners[it.seq] != "":
			l.losers = append(l.losers, it)
		default:
			winners[it.seq] = it.version
			l.versions = append(l.versions, it)
		}
	}
	return l, nil
}

func tag(tags map[string]*string, k string) string {
	if v := tags[k]; v != nil {
		return *v
	}
	return ""
}

// Versions lists the ring's published versions, oldest first. It cleans up
// after replicas that stopped (see doc.go): a version still tagged
// creating, or an enabled loser of a race, seen by this process for longer
// than the recovery grace is tagged lost or disabled.
func (b *Backend) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	if _, ok := specs[ring.Algorithm]; !ok {
		return nil, unsupported(ring.Algorithm)
	}
	name, err := b.keyName(ring)
	if err != nil {
		return nil, err
	}
	l, err := b.list(ctx, name)
	if err != nil {
		return nil, err
	}
	b.recover(ctx, ring, name, l)
	out := make([]backends.Version, 0, len(l.versions))
	for _, it := range l.versions {
		pub, err := b.publicKey(ctx, ring, name, it)
		if err != nil && it.enabled && backends.KindOf(err) == backends.KindFailedPrecondition {
			// Revoked since the list (another replica's rotate
			// --revoke-previous disables it and records its key in its
			// tags): Key Vault then refuses get (403 KeyDisabled), and a
			// revoked version must not fail the read.
			if now, ok := b.disabledSince(ctx, name, it.kid); ok {
				it = now
				pub, err = b.publicKey(ctx, ring, name, it)
			}
		}
		if err != nil {
			return nil, err
		}
		// pub is nil for a disabled version without a readable
		// signet-pub tag (disabled outside Signet): Key Vault refuses to
		// get a disabled version's key, and a revoked version is listed
		// without it (never published).
		created := it.created
		if !it.published.IsZero() {
			created = it.published // it was created disabled, and was published when enabled
		}
		out = append(out, backends.Version{ID: it.kid, Algorithm: ring.Algorithm, PublicKey: pub, Created: created, Disabled: !it.enabled})
	}
	return out, nil
}

// disabledSince lists the key's versions again and returns version kid if
// it is now disabled: it was enabled when Versions listed it, and its key
// was refused since.
func (b *Backend) disabledSince(ctx context.Context, name, kid string) (item, bool) {
	l, err := b.list(ctx, name)
	if err != nil {
		return item{}, false
	}
	for _, it := range l.versions {
		if it.kid == kid && !it.enabled {
			return it, true
		}
	}
	return item{}, false
}

// recover tags lost the versions left creating, and disables the enabled
// losers of races, that this process has seen for longer than the grace:
// the replica that made them has stopped (its CreateVersion is bounded by
// backend_timeout, half the grace).
func (b *Backend) recover(ctx context.Context, ring backends.KeyRing, name string, l listing) {
	for _, it := range l.creating {
		_, err := b.opts.Reap(&b.seen, it.kid, func() error { return b.markLost(ctx, name, it.version, it.tags) }, Scheme, backends.RecoveredDisabled, it.kid,
			fmt.Sprintf("version of ring %s created disabled by a rotation (signet-seq %d) whose replica stopped before deciding it; it stays disabled, tagged lost", ring.Name, it.seq))
		if err != nil && ctx.Err() == nil {
			b.opts.Logger.Warn("azurekv: tagging a version left by an interrupted rotation lost failed; the next refresh tries again", "version", it.kid, "err", err)
		}
	}
	for _, it := range l.losers {
		if !it.enabled {
			b.seen.Forget(it.kid)
			continue
		}
		_, err := b.opts.Reap(&b.seen, it.kid, func() error { return b.disable(ctx, ring, name, it.version, nil) }, Scheme, backends.RecoveredDisabled, it.kid,
			fmt.Sprintf("version of ring %s made enabled by a rotation that lost a race (signet-seq %d)", ring.Name, it.seq))
		if err != nil && ctx.Err() == nil {
			b.opts.Logger.Warn("azurekv: disabling the loser of a rotation race failed; the next refresh tries again", "version", it.kid, "err", err)
		}
	}
}

// markLost tags a disabled version lost, keeping its other tags. It sets
// no attribute: should the version have been enabled meanwhile, it stays a
// published version.
func (b *Backend) markLost(ctx context.Context, name, ver string, old map[string]*string) error {
	tags := map[string]*string{}
	for k, v := range old {
		tags[k] = v
	}
	tags[tagState] = to(stateLost)
	_, err := b.client.UpdateKey(ctx, name, ver, azkeys.UpdateKeyParameters{Tags: tags}, nil)
	return b.classify(err, "tagging "+name+"/"+ver+" lost", opUpdate)
}

// publicKey returns a version's public key: from the cache, from GetKey
// for an enabled version (checking its type, size and operations), or from
// the tags DisableVersion wrote for a disabled one; nil if a disabled
// version has none.
func (b *Backend) publicKey(ctx context.Context, ring backends.KeyRing, name string, it item) (crypto.PublicKey, error) {
	b.mu.Lock()
	pub := b.pubs[it.kid]
	b.mu.Unlock()
	if pub != nil {
		return pub, nil
	}
	if it.enabled {
		kb, err := b.client.GetKey(ctx, name, it.version, nil)
		if err != nil {
			return nil, b.classify(err, "reading "+it.kid, opRead)
		}
		if pub, err = checkBundle(ring, it.kid, kb.KeyBundle); err != nil {
			return nil, err
		}
	} else {
		// A disabled (revoked) version is listed whatever its tags say:
		// without a key when they hold none, or one unfit for the ring.
		der, ok := pubFromTags(it.tags)
		if !ok {
			return nil, nil
		}
		p, err := x509.ParsePKIXPublicKey(der)
		if err == nil {
			err = ring.Algorithm.CheckPublicKey(p)
		}
		if err != nil {
			b.opts.Logger.Warn("azurekv: the public key in the tags of a disabled version is unusable; it is listed as revoked without a kid",
				"key_ring", ring.Name, "version", it.kid, "err", err)
			return nil, nil
		}
		pub = p
	}
	b.mu.Lock()
	b.pubs[it.kid] = pub
	b.mu.Unlock()
	return pub, nil
}

// checkBundle reads the public key of a key version and refuses one that is
// not of the ring's type or cannot sign.
func checkBundle(ring backends.KeyRing, kid string, kb azkeys.KeyBundle) (crypto.PublicKey, error) {
	if kb.Key == nil {
		return nil, errorf(backends.KindUnknown, "%s: Key Vault returned no key", kid)
	}
	pub, err := PublicKeyFromJWK(kb.Key)
	if err == nil {
		err = ring.Algorithm.CheckPublicKey(pub)
	}
	if err != nil {
		return nil, errorf(backends.KindFailedPrecondition, "%s cannot sign %s for key ring %q: %v", kid, ring.Algorithm, ring.Name, err)
	}
	if !hasOp(kb.Key.KeyOps, azkeys.KeyOperationSign) {
		return nil, errorf(backends.KindFailedPrecondition, "%s has key_ops %v, without sign", kid, ops(kb.Key.KeyOps))
	}
	return pub, nil
}

func hasOp(list []*azkeys.KeyOperation, op azkeys.KeyOperation) bool {
	return slices.ContainsFunc(list, func(o *azkeys.KeyOperation) bool { return o != nil && *o == op })
}

func ops(list []*azkeys.KeyOperation) []string {
	var out []string
	for _, o := range list {
		if o != nil {
			out = append(out, string(*o))
		}
	}
	return out
}

// PublicKeyFromJWK reads the public half of a Key Vault JSON web key (EC
// with crv, x, y; RSA with n, e).
func PublicKeyFromJWK(k *azkeys.JSONWebKey) (crypto.PublicKey, error) {
	if k.Kty == nil {
		return nil, errors.New("no kty")
	}
	switch *k.Kty {
	case azkeys.KeyTypeEC, azkeys.KeyTypeECHSM:
		var c elliptic.Curve
		switch {
		case k.Crv == nil:
		case *k.Crv == azkeys.CurveNameP256:
			c = elliptic.P256()
		case *k.Crv == azkeys.CurveNameP384:
			c = elliptic.P384()
		case *k.Crv == azkeys.CurveNameP521:
			c = elliptic.P521()
		}
		if c == nil {
			return nil, fmt.Errorf("EC key on an unsupported curve")
		}
		size := (c.Params().BitSize + 7) / 8
		if len(k.X) > size || len(k.Y) > size {
			return nil, errors.New("EC coordinates too long for the curve")
		}
		point := make([]byte, 1+2*size)
		point[0] = 4
		copy(point[1+size-len(k.X):1+size], k.X)
		copy(point[1+2*size-len(k.Y):], k.Y)
		return ecdsa.ParseUncompressedPublicKey(c, point)
	case azkeys.KeyTypeRSA, azkeys.KeyTypeRSAHSM:
		e := new(big.Int).SetBytes(k.E)
		if len(k.N) == 0 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
			return nil, errors.New("RSA key with a bad modulus or exponent")
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(k.N), E: int(e.Int64())}, nil
	}
	return nil, fmt.Errorf("key type %s cannot sign JWS", *k.Kty)
}

// pubTags are the tags that keep a public key readable once its version is
// disabled: base64 PKIX DER in chunks of at most 256 characters.
func pubTags(pub crypto.PublicKey) (map[string]string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	s := base64.StdEncoding.EncodeToString(der)
	out := map[string]string{}
	for i := 0; len(s) > 0; i++ {
		n := min(len(s), tagValueMax)
		out[tagPubPrefix+strconv.Itoa(i)] = s[:n]
		s = s[n:]
	}
	return out, nil
}

func pubFromTags(tags map[string]*string) ([]byte, bool) {
	var s strings.Builder
	for i := 0; ; i++ {
		v := tag(tags, tagPubPrefix+strconv.Itoa(i))
		if v == "" {
			break
		}
		s.WriteString(v)
	}
	if s.Len() == 0 {
		return nil, false
	}
	der, err := base64.StdEncoding.DecodeString(s.String())
	return der, err == nil
}

// CreateVersion creates a new version of the ring's key (the key itself
// for the first) through the rotation protocol (backends.Rotate) over
// rotation's primitives (see doc.go). A decision is final: nothing that
// appears later can win over a version once enabled.
func (b *Backend) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (backends.Version, error) {
	spec, ok := specs[ring.Algorithm]
	if !ok {
		return backends.Version{}, unsupported(ring.Algorithm)
	}
	name, err := b.keyName(ring)
	if err != nil {
		return backends.Version{}, err
	}
	return backends.Rotate(ctx, b.opts, Scheme, ring, latest, &rotation{b: b, ring: ring, spec: spec, name: name})
}

// rotation is Key Vault's primitives of the rotation protocol
// (backends.Protocol). The claim is the next signet-seq; the candidate a
// version created disabled and tagged creating with it (Versions lists
// only enabled or published ones); the settle waits until Key Vault's
// clock says any racing version that could win is listed; the pick is the
// first created of the seq's versions by Key Vault's created time, then
// version id (listing.winner); the commit enables it; a loser stays
// disabled, tagged lost.
type rotation struct {
	b    *Backend
	ring backends.KeyRing
	spec keySpec
	name string

	seq        int
	params     azkeys.CreateKeyParameters
	kid, ver   string
	pub        crypto.PublicKey
	at         time.Time // Key Vault's created time of the candidate
	date       time.Time // Key Vault's clock when it answered the create
	answered   time.Time // this process's clock then
	committing bool      // the enabling update was sent: the version is no longer this replica's to mark
}

// Newest lists the key's versions.
func (r *rotation) Newest(ctx context.Context) (string, error) {
	l, err := r.b.list(ctx, r.name)
	if err != nil {
		return "", err
	}
	backends.Step(ctx, "ListVersions")
	newest, _ := l.newest()
	r.seq = 1
	for _, it := range l.versions {
		r.seq = max(r.seq, it.seq+1)
	}
	for _, it := range l.creating {
		if it.seq == r.seq {
			return "", errorf(backends.KindConflict,
				"key ring %q: version %s is being created by another replica (or was left by one that stopped, and is tagged lost once seen for longer than the recovery grace)", r.ring.Name, it.kid)
		}
	}
	return newest.kid, nil
}

// Claim does nothing: the seq tag of the candidate is the claim, decided
// by Pick.
func (r *rotation) Claim(context.Context) error { return nil }

// Create creates the version, disabled and tagged creating, never retried
// (after a lost answer a retry would make a second version).
func (r *rotation) Create(ctx context.Context) error {
	r.params = r.b.createParams(r.ring, r.spec, r.seq)
	var resp *http.Response
	cctx := policy.WithCaptureResponse(policy.WithRetryOptions(ctx, policy.RetryOptions{MaxRetries: -1}), &resp)
	created, err := r.b.client.CreateKey(cctx, r.name, r.params, nil)
	r.answered = time.Now()
	if err != nil {
		return r.b.classify(err, "creating a version of "+r.name, opCreate)
	}
	backends.Step(ctx, "CreateKey")
	if created.Key == nil || created.Key.KID == nil || created.Attributes == nil || created.Attributes.Created == nil {
		return errorf(backends.KindUnknown, "Key Vault's answer to creating a version of %s lacks its id or creation time", r.name)
	}
	r.kid, r.ver, r.at = string(*created.Key.KID), created.Key.KID.Version(), *created.Attributes.Created
	if r.pub, err = checkBundle(r.ring, r.kid, created.KeyBundle); err != nil {
		return err
	}
	// Key Vault's clock when it answered: its Date header (whole seconds,
	// so the clock was at least that).
	if resp != nil {
		r.date, err = http.ParseTime(resp.Header.Get("Date"))
	}
	if resp == nil || err != nil {
		return errorf(backends.KindUnknown, "Key Vault's answer to creating %s has no valid Date header, which deciding a rotation race needs", r.kid)
	}
	if late := r.date.Sub(r.at); late > CreateWindow {
		return errorf(backends.KindUnavailable,
			"Key Vault answered the creation of %s %v after stamping it, more than the %v a rotation race can be decided in", r.kid, late, CreateWindow)
	}
	return nil
}

// Resolve cannot read a lost create back (the version's id is in the
// answer): the version stays tagged creating, and a live replica tags it
// lost once the grace has passed.
func (r *rotation) Resolve(_ context.Context, err error) error { return err }

// Settle waits until Key Vault's clock is past at + 1 s + CreateWindow: a
// racing version created no later than this one was then listed if its
// replica can ever enable it. The margin covers clock rates.
func (r *rotation) Settle(ctx context.Context) error {
	wait := r.at.Add(time.Second+CreateWindow).Sub(r.date) - time.Since(r.answered) + 50*time.Millisecond
	if wait <= 0 {
		return nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return errorf(backends.KindUnavailable,
			"creating a version of %s: the deadline passed while waiting %v for racing rotations to show (raise backend_timeout)", r.name, wait.Round(time.Millisecond))
	case <-timer.C:
		return nil
	}
}

// Pick lists the versions again: the candidate won if it is the seq's
// winner.
func (r *rotation) Pick(ctx context.Context) error {
	after, err := r.b.list(ctx, r.name)
	if err != nil {
		return err
	}
	backends.Step(ctx, "ListVersions after")
	if w, _ := after.winner(r.seq); w.kid != r.kid {
		return backends.Lost(w.kid)
	}
	return nil
}

// Commit enables the version and tags it published.
func (r *rotation) Commit(ctx context.Context) (backends.Version, error) {
	add, err := pubTags(r.pub)
	if err != nil {
		return backends.Version{}, errorf(backends.KindUnknown, "encoding the public key of %s: %v", r.kid, err)
	}
	tags := map[string]*string{}
	for k, v := range r.params.Tags {
		tags[k] = v
	}
	for k, v := range add {
		tags[k] = to(v)
	}
	tags[tagState] = to(statePublished)
	// The version is published from this update on, seconds after Key
	// Vault stamped created: that is its creation time for Signet, so that
	// publish_ahead counts from when verifiers can first see it. Key
	// Vault's clock now, rounded up.
	published := r.date.Add(time.Since(r.answered)).Truncate(time.Second).Add(time.Second)
	tags[tagPublished] = to(strconv.FormatInt(published.Unix(), 10))
	// From here on the version is not marked lost by this replica: should
	// the update be carried out with its answer lost, it is a published
	// version, and tagging it lost would drop its published tags.
	r.committing = true
	if _, err := r.b.client.UpdateKey(ctx, r.name, r.ver, azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to(true)}, Tags: tags}, nil); err != nil {
		return backends.Version{}, r.b.classify(err, "enabling "+r.kid+", which won its rotation", opUpdate)
	}
	backends.Step(ctx, "UpdateKey")
	r.b.mu.Lock()
	r.b.pubs[r.kid] = r.pub
	r.b.mu.Unlock()
	return backends.Version{ID: r.kid, Algorithm: r.ring.Algorithm, PublicKey: r.pub, Created: published}, nil
}

// Abandon tags the version made here lost (it stays disabled). If that
// fails it stays tagged creating, and a live replica tags it lost once the
// grace has passed.
func (r *rotation) Abandon(ctx context.Context, _ bool) (string, error) {
	if r.ver == "" || r.committing {
		return backends.NothingMade, nil
	}
	what := r.kid + " (made here)"
	if err := r.b.markLost(ctx, r.name, r.ver, r.params.Tags); err != nil {
		return what, err
	}
	backends.Step(ctx, "UpdateKey lost")
	return what + " stays disabled, tagged lost", nil
}

// Release does nothing: the claim is the candidate.
func (r *rotation) Release(context.Context) {}

// createParams describes a new version of the ring's key: sign and verify
// only, not exportable, disabled until it wins its race, tagged with the
// ring, its sequence number and signet-state=creating.
func (b *Backend) createParams(ring backends.KeyRing, spec keySpec, seq int) azkeys.CreateKeyParameters {
	params := azkeys.CreateKeyParameters{
		KeyOps:        []*azkeys.KeyOperation{to(azkeys.KeyOperationSign), to(azkeys.KeyOperationVerify)},
		KeyAttributes: &azkeys.KeyAttributes{Enabled: to(false), Exportable: to(false)},
		Tags:          map[string]*string{tagRing: to(ring.Name), tagSeq: to(strconv.Itoa(seq)), tagState: to(stateCreating)},
	}
	if spec.ec {
		params.Kty, params.Curve = to(azkeys.KeyTypeEC), to(spec.curve)
		if b.hsm {
			params.Kty = to(azkeys.KeyTypeECHSM)
		}
	} else {
		params.Kty, params.KeySize = to(azkeys.KeyTypeRSA), to(spec.bits)
		if b.hsm {
			params.Kty = to(azkeys.KeyTypeRSAHSM)
		}
	}
	return params
}

func to[T any](v T) *T { return &v }

// versionOf is the version id at the end of one of the ring's key ids, or
// "" if id is not one.
func (b *Backend) versionOf(ring backends.KeyRing, id string) (string, string, error) {
	name, err := b.keyName(ring)
	if err != nil {
		return "", "", err
	}
	// Key Vault's ids name the host in lower case, without the default
	// port (parseURI does the same), and key names are case-insensitive.
	prefix := strings.TrimSuffix(b.vault, "/") + "/keys/" + name + "/"
	rest := ""
	if len(id) > len(prefix) && strings.EqualFold(id[:len(prefix)], prefix) {
		rest = id[len(prefix):]
	}
	if len(rest) != 32 || strings.Trim(rest, "0123456789abcdef") != "" {
		return "", "", errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, id)
	}
	return name, rest, nil
}

// DisableVersion disables the version, keeping its public key in its tags
// (Key Vault refuses get on a disabled version).
func (b *Backend) DisableVersion(ctx context.Context, ring backends.KeyRing, versionID string) error {
	name, ver, err := b.versionOf(ring, versionID)
	if err != nil {
		return err
	}
	return b.disable(ctx, ring, name, ver, nil)
}

// disable reads the version (unless pub is known), then sets enabled=false
// with the public key added to its tags.
func (b *Backend) disable(ctx context.Context, ring backends.KeyRing, name, ver string, pub crypto.PublicKey) error {
	kb, err := b.client.GetKey(ctx, name, ver, nil)
	if isDisabled(err) {
		return nil // already disabled: an interrupted revocation, finished
	}
	if err != nil {
		return b.classify(err, "reading "+name+"/"+ver, opRead)
	}
	backends.Step(ctx, "GetKey")
	if pub == nil {
		if pub, err = checkBundle(ring, name+"/"+ver, kb.KeyBundle); err != nil {
			return err
		}
	}
	add, err := pubTags(pub)
	if err != nil {
		return errorf(backends.KindUnknown, "encoding the public key of %s/%s: %v", name, ver, err)
	}
	tags := map[string]*string{}
	for k, v := range kb.Tags {
		tags[k] = v
	}
	for k, v := range add {
		tags[k] = to(v)
	}
	_, err = b.client.UpdateKey(ctx, name, ver, azkeys.UpdateKeyParameters{KeyAttributes: &azkeys.KeyAttributes{Enabled: to(false)}, Tags: tags}, nil)
	if err != nil {
		return b.classify(err, "disabling "+name+"/"+ver, opUpdate)
	}
	backends.Step(ctx, "UpdateKey")
	return nil
}

// Sign asks Key Vault to sign the digest of the signing input with exactly
// the named version.
func (b *Backend) Sign(ctx context.Context, ring backends.KeyRing, versionID string, signingInput []byte) ([]byte, error) {
	alg := ring.Algorithm
	spec, ok := specs[alg]
	if !ok {
		return nil, unsupported(alg)
	}
	name, ver, err := b.versionOf(ring, versionID)
	if err != nil {
		return nil, err
	}
	var digest []byte
	switch alg.Hash() {
	case crypto.SHA256:
		d := sha256.Sum256(signingInput)
		digest = d[:]
	case crypto.SHA384:
		d := sha512.Sum384(signingInput)
		digest = d[:]
	default:
		d := sha512.Sum512(signingInput)
		digest = d[:]
	}
	resp, err := b.client.Sign(ctx, name, ver, azkeys.SignParameters{Algorithm: to(spec.sign), Value: digest}, nil)
	if err != nil {
		return nil, b.classify(err, "signing with "+versionID, opSign)
	}
	if resp.KID == nil || !strings.EqualFold(string(*resp.KID), versionID) {
		return nil, errorf(backends.KindUnknown, "Key Vault signed with %v, not the requested %s", resp.KID, versionID)
	}
	if n := alg.SignatureSize(); n != 0 && len(resp.Result) != n {
		return nil, errorf(backends.KindUnknown, "Key Vault returned a %d-byte %s signature, want %d", len(resp.Result), alg, n)
	}
	return resp.Result, nil
}

// CheckKeyUsage reports the ring's enabled versions that can do more than
// sign: key_ops beyond sign and verify (an RSA key made by hand may
// encrypt, decrypt, wrap and unwrap), or an exportable key.
func (b *Backend) CheckKeyUsage(ctx context.Context, ring backends.KeyRing) error {
	name, err := b.keyName(ring)
	if err != nil {
		return err
	}
	l, err := b.list(ctx, name)
	if err != nil {
		return err
	}
	var broad []string
	for _, it := range l.versions {
		if !it.enabled {
			continue
		}
		kb, err := b.client.GetKey(ctx, name, it.version, nil)
		if err != nil {
			return b.classify(err, "reading "+it.kid, opRead)
		}
		var extra []string
		for _, op := range ops(kb.Key.KeyOps) {
			if op != string(azkeys.KeyOperationSign) && op != string(azkeys.KeyOperationVerify) {
				extra = append(extra, op)
			}
		}
		if len(extra) > 0 {
			broad = append(broad, fmt.Sprintf("%s (key_ops also allow %s)", it.kid, strings.Join(extra, ", ")))
		}
		if a := kb.Attributes; a != nil && a.Exportable != nil && *a.Exportable {
			broad = append(broad, it.kid+" (exportable)")
		}
	}
	if len(broad) > 0 {
		return errorf(backends.KindFailedPrecondition, "key ring %q has versions that can do more than sign: %s", ring.Name, strings.Join(broad, "; "))
	}
	return nil
}

// Leftovers lists the versions awaiting clean-up: those still tagged
// creating (a rotation in flight, or left by a replica that stopped) and
// enabled losers of races. Versions tagged lost are disabled for good (Key
// Vault cannot delete a single version) and not listed.
func (b *Backend) Leftovers(ctx context.Context, ring backends.KeyRing) ([]backends.Leftover, error) {
	name, err := b.keyName(ring)
	if err != nil {
		return nil, err
	}
	l, err := b.list(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []backends.Leftover
	for _, it := range l.creating {
		out = append(out, backends.Leftover{ID: it.kid, Kind: fmt.Sprintf("disabled version of a rotation not decided yet (signet-seq %d): in flight, or left by a replica that stopped", it.seq),
			State: "awaiting clean-up", Created: it.created})
	}
	for _, it := range l.losers {
		if it.enabled {
			out = append(out, backends.Leftover{ID: it.kid, Kind: fmt.Sprintf("enabled version made by a rotation that lost a race (signet-seq %d)", it.seq),
				State: "awaiting clean-up", Created: it.created})
		}
	}
	return out, nil
}

// Close releases nothing: the SDK client holds no resources that need it.
func (b *Backend) Close() error { return nil }

// kvError is Key Vault's error body.
type kvError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

// details reads Key Vault's error code, inner code and message.
func details(re *azcore.ResponseError) (code, inner, msg string) {
	code = re.ErrorCode
	if re.RawResponse == nil {
		return code, "", ""
	}
	body, err := runtime.Payload(re.RawResponse)
	var e kvError
	if err != nil || json.Unmarshal(body, &e) != nil {
		return code, "", ""
	}
	if e.Error.InnerError != nil {
		inner = e.Error.InnerError.Code
	}
	return code, inner, e.Error.Message
}

func isNotFound(err error) bool {
	var re *azcore.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

func isDisabled(err error) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		return false
	}
	_, inner, _ := details(re)
	return inner == "KeyDisabled"
}

// The data-plane operations Signet performs, for naming the RBAC data
// action a refusal lacks.
type op int

const (
	opRead op = iota
	opCreate
	opUpdate
	opSign
)

// dataActions are the data actions of each operation: on a vault (Azure
// RBAC) and on a Managed HSM (its local RBAC).
var dataActions = map[op][2]string{
	opRead:   {"Microsoft.KeyVault/vaults/keys/read", "Microsoft.KeyVault/managedHsm/keys/read/action"},
	opCreate: {"Microsoft.KeyVault/vaults/keys/create/action", "Microsoft.KeyVault/managedHsm/keys/create"},
	opUpdate: {"Microsoft.KeyVault/vaults/keys/update/action", "Microsoft.KeyVault/managedHsm/keys/write/action"},
	opSign:   {"Microsoft.KeyVault/vaults/keys/sign/action", "Microsoft.KeyVault/managedHsm/keys/sign/action"},
}

// dataAction is the data action an operation needs on this backend's host.
func (b *Backend) dataAction(o op) string {
	if b.managedHSM {
		return dataActions[o][1]
	}
	return dataActions[o][0]
}

// tokenError is a failure to get a token from Signet's credential: no
// credential in the chain applies, or Microsoft Entra ID refused or could
// not be reached.
type tokenError struct{ err error }

func (e *tokenError) Error() string { return e.err.Error() }
func (e *tokenError) Unwrap() error { return e.err }

// credential marks the errors of the token credential so that classify
// tells them from Key Vault's.
type credential struct{ azcore.TokenCredential }

func (c credential) GetToken(ctx context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, err := c.TokenCredential.GetToken(ctx, o)
	if err != nil {
		return tok, &tokenError{err}
	}
	return tok, nil
}

// classify maps Key Vault's answers and transport failures to the shared
// kinds; a refusal names the data action Signet's identity needs.
func (b *Backend) classify(err error, what string, o op) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: what + ": Key Vault did not answer in time", Err: err}
	}
	var te *tokenError
	if errors.As(err, &te) {
		var ae *azidentity.AuthenticationFailedError
		var ne net.Error
		switch {
		case errors.As(err, &ae) && ae.RawResponse != nil:
			return &backends.Error{Kind: backends.KindPermissionDenied, Backend: Scheme, Msg: what + ": Microsoft Entra ID refused Signet's credential: " + oneLine(ae.Error()), Err: err}
		case errors.As(err, &ne):
			return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: what + ": cannot reach Microsoft Entra ID for a token: " + oneLine(te.Error()), Err: err}
		}
		return &backends.Error{Kind: backends.KindPermissionDenied, Backend: Scheme, Msg: what +
			": no credential: DefaultAzureCredential (environment, workload identity, managed identity, Azure CLI, Azure Developer CLI) got no token; configure one (docs/configuration.md): " + oneLine(te.Error()), Err: err}
	}
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: fmt.Sprintf("%s: cannot reach Key Vault: %v", what, err), Err: err}
	}
	code, inner, msg := details(re)
	text := fmt.Sprintf("%s: %d %s", what, re.StatusCode, code)
	if inner != "" {
		text += "/" + inner
	}
	if msg != "" {
		text += ": " + oneLine(msg)
	}
	kind := backends.KindUnknown
	switch {
	case re.StatusCode == http.StatusNotFound:
		kind = backends.KindNotFound
	case re.StatusCode == http.StatusForbidden && (inner == "KeyDisabled" || inner == "KeyOperationForbidden"):
		kind = backends.KindFailedPrecondition
	case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
		kind = backends.KindPermissionDenied
		text += " (Signet's identity needs the data action " + b.dataAction(o) + "; docs/configuration.md lists them all)"
	case re.StatusCode == http.StatusConflict && inner == "ObjectIsDeletedButRecoverable":
		kind = backends.KindFailedPrecondition
		text += " (the key is soft-deleted: recover it, e.g. az keyvault key recover, or purge it, e.g. az keyvault key purge, before Signet can use the name)"
	case re.StatusCode == http.StatusConflict:
		kind = backends.KindConflict
	case re.StatusCode == http.StatusBadRequest:
		kind = backends.KindInvalidArgument
	case re.StatusCode == http.StatusTooManyRequests || re.StatusCode == http.StatusRequestTimeout || re.StatusCode >= 500:
		kind = backends.KindUnavailable
	}
	return &backends.Error{Kind: kind, Backend: Scheme, Msg: text, Err: err}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
