package gcpkms

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/googleapis/gax-go/v2"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/signet-dev/signet/backends"
)

// Scheme is the URI scheme of this backend.
const Scheme = "gcpkms"

// MaxData is Cloud KMS's limit on the data an EC_SIGN_ED25519 version
// signs (AsymmetricSign's data field).
const MaxData = 64 * 1024

// integrityAttempts is how many times Sign and GetPublicKey ask again when
// an answer's CRC32C does not match, as Google advises ("perform a limited
// number of retries"), before the call fails as unavailable.
const integrityAttempts = 3

func init() { backends.Register(Scheme, Open) }

func errorf(kind backends.Kind, format string, args ...any) error {
	return backends.Errorf(kind, Scheme, format, args...)
}

// algorithms maps each JWS algorithm to the version algorithm Signet
// creates (first) and the others whose versions it accepts in a ring made
// by hand (same hash and padding, a larger key).
var algorithms = map[backends.Algorithm][]kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm{
	backends.ES256: {kmspb.CryptoKeyVersion_EC_SIGN_P256_SHA256},
	backends.ES384: {kmspb.CryptoKeyVersion_EC_SIGN_P384_SHA384},
	backends.RS256: {kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_2048_SHA256, kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_3072_SHA256,
		kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_4096_SHA256},
	backends.RS512: {kmspb.CryptoKeyVersion_RSA_SIGN_PKCS1_4096_SHA512},
	backends.PS256: {kmspb.CryptoKeyVersion_RSA_SIGN_PSS_2048_SHA256, kmspb.CryptoKeyVersion_RSA_SIGN_PSS_3072_SHA256,
		kmspb.CryptoKeyVersion_RSA_SIGN_PSS_4096_SHA256},
	backends.PS512: {kmspb.CryptoKeyVersion_RSA_SIGN_PSS_4096_SHA512},
	backends.EdDSA: {kmspb.CryptoKeyVersion_EC_SIGN_ED25519},
}

// supported lists the algorithms Cloud KMS has a version algorithm for, in
// backends.AllAlgorithms order: no P-521 curve, no RSA with SHA-384.
var supported = func() []backends.Algorithm {
	var out []backends.Algorithm
	for _, a := range backends.AllAlgorithms {
		if _, ok := algorithms[a]; ok {
			out = append(out, a)
		}
	}
	return out
}()

// Backend is the Google Cloud KMS backend.
type Backend struct {
	client  *kms.KeyManagementClient
	keyRing string // projects/P/locations/L/keyRings/R
	prefix  string
	level   kmspb.ProtectionLevel
	destroy bool // destroy_on_revoke
	opts    backends.OpenOptions

	mu   sync.Mutex
	pubs map[string]crypto.PublicKey // by version name; a version's key never changes

	closeOnce sync.Once
	closeErr  error
}

// uriOptions is what a gcpkms: URI says, read without opening anything.
type uriOptions struct {
	keyRing, prefix, endpoint string
	level                     kmspb.ProtectionLevel
	destroyOnRevoke           bool
}

var (
	keyRingPattern = regexp.MustCompile(`^projects/[a-z0-9-]{1,63}/locations/[a-zA-Z0-9_-]{1,63}/keyRings/[a-zA-Z0-9_-]{1,63}$`)
	keyIDPattern   = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,63}$`)
	prefixPattern  = regexp.MustCompile(`^[a-zA-Z0-9_-]{0,40}$`)
	hostPort       = regexp.MustCompile(`^[a-zA-Z0-9.-]+:[0-9]{1,5}$`)
)

// parseURI reads a gcpkms: URI's key ring and options and applies their
// defaults.
func parseURI(u *url.URL) (uriOptions, error) {
	if u.Opaque == "" || u.Host != "" || u.User != nil || u.Fragment != "" {
		return uriOptions{}, errorf(backends.KindInvalidArgument,
			"want gcpkms:projects/PROJECT/locations/LOCATION/keyRings/KEY_RING[?options], not %q", u.Redacted())
	}
	o := uriOptions{keyRing: u.Opaque, prefix: "signet-", level: kmspb.ProtectionLevel_HSM}
	if !keyRingPattern.MatchString(o.keyRing) {
		return uriOptions{}, errorf(backends.KindInvalidArgument, "%q is not a key ring name projects/PROJECT/locations/LOCATION/keyRings/KEY_RING", o.keyRing)
	}
	q, err := backends.ParseOptions(Scheme, u, "key_prefix", "protection_level", "destroy_on_revoke", "endpoint")
	if err != nil {
		return uriOptions{}, err
	}
	if p, ok := q.Lookup("key_prefix"); ok {
		if o.prefix = p; !prefixPattern.MatchString(o.prefix) {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "key_prefix=%q: at most 40 of a-z A-Z 0-9 _ -", o.prefix)
		}
	}
	switch l := q.Get("protection_level"); strings.ToLower(l) {
	case "", "hsm":
	case "software":
		o.level = kmspb.ProtectionLevel_SOFTWARE
	default:
		return uriOptions{}, errorf(backends.KindInvalidArgument, "protection_level=%q: want hsm or software", l)
	}
	if o.destroyOnRevoke, err = q.Bool("destroy_on_revoke", false); err != nil {
		return uriOptions{}, err
	}
	if e, ok := q.Lookup("endpoint"); ok {
		if o.endpoint = e; !hostPort.MatchString(o.endpoint) {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "endpoint=%q: want host:port (a private or regional endpoint)", o.endpoint)
		}
	}
	return o, nil
}

// Open opens the backend a gcpkms: URI describes. Credentials come from
// Application Default Credentials.
func Open(ctx context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
	o, err := parseURI(u)
	if err != nil {
		return nil, err
	}
	var copts []option.ClientOption
	if o.endpoint != "" {
		copts = append(copts, option.WithEndpoint(o.endpoint))
	}
	if opts.TracerProvider != nil {
		copts = append(copts, option.WithGRPCDialOption(grpc.WithStatsHandler(
			otelgrpc.NewClientHandler(otelgrpc.WithTracerProvider(opts.TracerProvider)))))
	}
	client, err := kms.NewKeyManagementClient(ctx, copts...)
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "Cloud KMS client (Application Default Credentials): %v", err)
	}
	setRetries(client.CallOptions)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Backend{client: client, keyRing: o.keyRing, prefix: o.prefix, level: o.level, destroy: o.destroyOnRevoke, opts: opts,
		pubs: map[string]crypto.PublicKey{}}, nil
}

// setRetries makes the client retry throttling (RESOURCE_EXHAUSTED) as well
// as UNAVAILABLE on the calls that are safe to repeat, with a backoff short
// enough to fit a request's deadline; the caller's deadline bounds them all.
// The creating calls are never retried: after a lost answer a retry would
// make a second version.
func setRetries(co *kms.KeyManagementCallOptions) {
	retry := []gax.CallOption{gax.WithRetry(func() gax.Retryer {
		return gax.OnCodes([]codes.Code{codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded},
			gax.Backoff{Initial: 50 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2})
	})}
	co.AsymmetricSign, co.GetPublicKey, co.ListCryptoKeyVersions = retry, retry, retry
	co.GetCryptoKeyVersion, co.GetCryptoKey, co.UpdateCryptoKeyVersion, co.DestroyCryptoKeyVersion = retry, retry, retry, retry
	co.CreateCryptoKey, co.CreateCryptoKeyVersion = nil, nil
}

// Algorithms reports the JWS algorithms Cloud KMS has version algorithms for.
func (b *Backend) Algorithms() []backends.Algorithm { return supported }

// keyName is the ring's CryptoKey.
func (b *Backend) keyName(ring backends.KeyRing) (string, error) {
	id := b.prefix + ring.Name
	if !keyIDPattern.MatchString(id) {
		return "", errorf(backends.KindInvalidArgument, "key ring %q: CryptoKey id %q is not 1-63 of a-z A-Z 0-9 _ -", ring.Name, id)
	}
	return b.keyRing + "/cryptoKeys/" + id, nil
}

// versionNumber is the number at the end of a version of key, or 0 if name
// is not one.
func versionNumber(key, name string) int {
	rest, ok := strings.CutPrefix(name, key+"/cryptoKeyVersions/")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 1 || strconv.Itoa(n) != rest {
		return 0
	}
	return n
}

// live versions still hold key material Signet may use or publish.
func live(v *kmspb.CryptoKeyVersion) bool {
	switch v.GetState() {
	case kmspb.CryptoKeyVersion_PENDING_GENERATION, kmspb.CryptoKeyVersion_ENABLED, kmspb.CryptoKeyVersion_DISABLED:
		return true
	}
	return false
}

// list returns every version of key in any state, by number, and whether
// the key exists.
func (b *Backend) list(ctx context.Context, key string) ([]*kmspb.CryptoKeyVersion, bool, error) {
	var out []*kmspb.CryptoKeyVersion
	it := b.client.ListCryptoKeyVersions(ctx, &kmspb.ListCryptoKeyVersionsRequest{Parent: key})
	for {
		v, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if status.Code(err) == codes.NotFound && ctx.Err() == nil {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, classify(err, "listing the versions of "+key, "cloudkms.cryptoKeyVersions.list")
		}
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool {
		return versionNumber(key, out[i].GetName()) < versionNumber(key, out[j].GetName())
	})
	return out, true, nil
}

// Versions lists the ring's ENABLED and DISABLED versions, oldest first. A
// version still PENDING_GENERATION is not listed until Cloud KMS enables
// it; one scheduled for destruction or destroyed can never sign again and
// has left the ring (Removed says so). Cloud KMS refuses GetPublicKey on a
// version that is not ENABLED (FAILED_PRECONDITION "is not enabled") and a
// version has no labels to keep its key in, so a DISABLED version is
// listed with the key this process cached while it was enabled, or with
// none: it is revoked, never published, and shown by its resource name
// without a kid.
func (b *Backend) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	accepted, ok := algorithms[ring.Algorithm]
	if !ok {
		return nil, errorf(backends.KindUnimplemented, "algorithm %q is not offered by Cloud KMS", ring.Algorithm)
	}
	key, err := b.keyName(ring)
	if err != nil {
		return nil, err
	}
	all, _, err := b.list(ctx, key)
	if err != nil {
		return nil, err
	}
	var out []backends.Version
	for _, v := range all {
		st := v.GetState()
		if st != kmspb.CryptoKeyVersion_ENABLED && st != kmspb.CryptoKeyVersion_DISABLED {
			continue
		}
		if !slices.Contains(accepted, v.GetAlgorithm()) {
			return nil, errorf(backends.KindFailedPrecondition, "%s is %s, which cannot sign %s for key ring %q", v.GetName(), v.GetAlgorithm(), ring.Algorithm, ring.Name)
		}
		var pub crypto.PublicKey
		if st == kmspb.CryptoKeyVersion_ENABLED {
			if pub, err = b.publicKey(ctx, ring.Algorithm, v.GetName()); err != nil {
				// Revoked since the list (another replica's rotate
				// --revoke-previous): GetPublicKey then refuses it, and a
				// revoked version must not fail the read.
				if st = b.stateAfterRefusal(ctx, v.GetName(), err); st == kmspb.CryptoKeyVersion_ENABLED {
					return nil, err
				}
			}
		}
		switch st {
		case kmspb.CryptoKeyVersion_ENABLED:
		case kmspb.CryptoKeyVersion_DISABLED:
			b.mu.Lock()
			pub = b.pubs[v.GetName()] // nil unless this process read it while it was enabled
			b.mu.Unlock()
		default:
			continue // scheduled for destruction since the list: it has left the ring
		}
		out = append(out, backends.Version{ID: v.GetName(), Algorithm: ring.Algorithm, PublicKey: pub,
			Created: v.GetCreateTime().AsTime(), Disabled: st == kmspb.CryptoKeyVersion_DISABLED})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// stateAfterRefusal is the state of a version listed ENABLED whose public
// key could not be read (err): DISABLED, DESTROY_SCHEDULED or DESTROYED when
// Cloud KMS refused the key because the version left ENABLED since the list,
// else ENABLED, and the caller returns err. Only an answer from Cloud KMS
// that the version is no longer enabled counts.
func (b *Backend) stateAfterRefusal(ctx context.Context, name string, err error) kmspb.CryptoKeyVersion_CryptoKeyVersionState {
	if backends.KindOf(err) != backends.KindFailedPrecondition {
		return kmspb.CryptoKeyVersion_ENABLED
	}
	v, gerr := b.client.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: name})
	if gerr != nil || v.GetName() != name {
		return kmspb.CryptoKeyVersion_ENABLED
	}
	switch st := v.GetState(); st {
	case kmspb.CryptoKeyVersion_DISABLED, kmspb.CryptoKeyVersion_DESTROY_SCHEDULED, kmspb.CryptoKeyVersion_DESTROYED:
		return st
	}
	return kmspb.CryptoKeyVersion_ENABLED
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) int64 { return int64(crc32.Checksum(b, castagnoli)) }

// publicKey returns a version's public key from the cache or GetPublicKey,
// checking the answer's name and pem_crc32c.
func (b *Backend) publicKey(ctx context.Context, alg backends.Algorithm, name string) (crypto.PublicKey, error) {
	b.mu.Lock()
	pub := b.pubs[name]
	b.mu.Unlock()
	if pub != nil {
		return pub, nil
	}
	var resp *kmspb.PublicKey
	for attempt := 1; ; attempt++ {
		var err error
		resp, err = b.client.GetPublicKey(ctx, &kmspb.GetPublicKeyRequest{Name: name})
		if err != nil {
			return nil, classify(err, "reading the public key of "+name, "cloudkms.cryptoKeyVersions.viewPublicKey")
		}
		if resp.GetName() == name && resp.GetPemCrc32C() != nil && resp.GetPemCrc32C().GetValue() == crc([]byte(resp.GetPem())) {
			break
		}
		if attempt == integrityAttempts || ctx.Err() != nil {
			return nil, errorf(backends.KindUnavailable, "the public key of %s failed its integrity check (name or pem_crc32c) %d times", name, attempt)
		}
	}
	pub, err := ParsePublicKey(alg, resp.GetPem())
	if err != nil {
		return nil, errorf(backends.KindFailedPrecondition, "public key of %s: %v", name, err)
	}
	b.mu.Lock()
	b.pubs[name] = pub
	b.mu.Unlock()
	return pub, nil
}

// ParsePublicKey reads a PEM public key as GetPublicKey returns it, which
// must be a key alg signs with.
func ParsePublicKey(alg backends.Algorithm, p string) (crypto.PublicKey, error) {
	block, rest := pem.Decode([]byte(p))
	if block == nil || block.Type != "PUBLIC KEY" || strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("not one PEM PUBLIC KEY block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := alg.CheckPublicKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// Deviations are the rules of the rotation protocol that Cloud KMS does
// not let this backend keep: it cannot create a version that is not
// listed (no disabled creation, no labels on versions), so a candidate is
// a version from the moment it is enabled. TestLoserThatDiesLeavesItsVersion
// checks that this is all that happens.
var Deviations = []backends.Deviation{{
	Rule: "each CreateVersion yields at most one version, and a candidate is never listed before it wins",
	Instead: "a loser of a race is listed from its creation until it schedules its own destruction; " +
		"one that dies in between leaves its version enabled: an ordinary newer version, published and later signing",
}}

// CreateVersion creates a CryptoKey (whose first version Cloud KMS makes)
// or a CryptoKeyVersion through the rotation protocol (backends.Rotate)
// over rotation's primitives (see doc.go).
func (b *Backend) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (backends.Version, error) {
	accepted, ok := algorithms[ring.Algorithm]
	if !ok {
		return backends.Version{}, errorf(backends.KindUnimplemented, "algorithm %q is not offered by Cloud KMS", ring.Algorithm)
	}
	key, err := b.keyName(ring)
	if err != nil {
		return backends.Version{}, err
	}
	return backends.Rotate(ctx, b.opts, Scheme, ring, latest, &rotation{b: b, ring: ring, accepted: accepted, key: key, latestN: versionNumber(key, latest)})
}

// rotation is Cloud KMS's primitives of the rotation protocol
// (backends.Protocol). Cloud KMS has no conditional create: the claim is
// nothing, the candidate a new CryptoKeyVersion (or the CryptoKey, whose
// creation is create-if-absent, with its first version), which Cloud KMS
// lists at once (the declared deviation, Deviations); the settle waits
// until Cloud KMS has generated it; the pick is the lowest-numbered live
// version after latest, which every replica reads alike; the commit is
// nothing more (the winner is listed once enabled); a loser schedules the
// destruction of its own version.
type rotation struct {
	b        *Backend
	ring     backends.KeyRing
	accepted []kmspb.CryptoKeyVersion_CryptoKeyVersionAlgorithm
	key      string
	latestN  int

	exists bool
	name   string // the candidate version
}

// Newest lists the key's versions.
func (r *rotation) Newest(ctx context.Context) (string, error) {
	all, exists, err := r.b.list(ctx, r.key)
	if err != nil {
		return "", err
	}
	backends.Step(ctx, "ListCryptoKeyVersions")
	r.exists = exists
	newest := ""
	for _, v := range all {
		if live(v) {
			newest = v.GetName()
		}
	}
	return newest, nil
}

// Claim does nothing: Cloud KMS has no claim; Pick decides.
func (r *rotation) Claim(context.Context) error { return nil }

// Create creates the CryptoKey (its version 1) or a CryptoKeyVersion,
// once (setRetries).
func (r *rotation) Create(ctx context.Context) error {
	if !r.exists {
		_, err := r.b.client.CreateCryptoKey(ctx, &kmspb.CreateCryptoKeyRequest{Parent: r.b.keyRing, CryptoKeyId: r.key[strings.LastIndex(r.key, "/")+1:],
			CryptoKey: &kmspb.CryptoKey{Purpose: kmspb.CryptoKey_ASYMMETRIC_SIGN,
				VersionTemplate: &kmspb.CryptoKeyVersionTemplate{Algorithm: r.accepted[0], ProtectionLevel: r.b.level},
				Labels:          map[string]string{"managed-by": "signet"}}})
		if status.Code(err) == codes.AlreadyExists {
			return backends.Lost(r.key) // its first version is that key's
		}
		if err != nil {
			return classify(err, "creating "+r.key, "cloudkms.cryptoKeys.create")
		}
		backends.Step(ctx, "CreateCryptoKey")
		r.name = r.key + "/cryptoKeyVersions/1"
		return nil
	}
	ck, err := r.b.client.GetCryptoKey(ctx, &kmspb.GetCryptoKeyRequest{Name: r.key})
	if err != nil {
		return classify(err, "reading "+r.key, "cloudkms.cryptoKeys.get")
	}
	backends.Step(ctx, "GetCryptoKey")
	if ck.GetPurpose() != kmspb.CryptoKey_ASYMMETRIC_SIGN || !slices.Contains(r.accepted, ck.GetVersionTemplate().GetAlgorithm()) {
		return errorf(backends.KindFailedPrecondition, "%s has purpose %s and version template %s; key ring %q needs ASYMMETRIC_SIGN with %s",
			r.key, ck.GetPurpose(), ck.GetVersionTemplate().GetAlgorithm(), r.ring.Name, r.accepted[0])
	}
	v, err := r.b.client.CreateCryptoKeyVersion(ctx, &kmspb.CreateCryptoKeyVersionRequest{Parent: r.key, CryptoKeyVersion: &kmspb.CryptoKeyVersion{}})
	if err != nil {
		return classify(err, "creating a version of "+r.key, "cloudkms.cryptoKeyVersions.create")
	}
	backends.Step(ctx, "CreateCryptoKeyVersion")
	r.name = v.GetName()
	return nil
}

// Resolve cannot read a lost create back: a version it made is listed
// (the deviation) as an ordinary newer version.
func (r *rotation) Resolve(_ context.Context, err error) error { return err }

// Settle waits until Cloud KMS has generated the version.
func (r *rotation) Settle(ctx context.Context) error {
	if err := r.b.waitEnabled(ctx, r.name); err != nil {
		return err
	}
	backends.Step(ctx, "GetCryptoKeyVersion")
	return nil
}

// Pick: replicas that all saw latest as the newest may each have made a
// version; every one of them agrees that the lowest-numbered live version
// after latest won.
func (r *rotation) Pick(ctx context.Context) error {
	after, _, err := r.b.list(ctx, r.key)
	if err != nil {
		return err
	}
	backends.Step(ctx, "ListCryptoKeyVersions after")
	winner := ""
	for _, v := range after {
		if n := versionNumber(r.key, v.GetName()); n > r.latestN && live(v) {
			winner = v.GetName()
			break
		}
	}
	if winner != r.name {
		return backends.Lost(winner)
	}
	return nil
}

// Commit reads the version: it is listed already.
func (r *rotation) Commit(ctx context.Context) (backends.Version, error) {
	pub, err := r.b.publicKey(ctx, r.ring.Algorithm, r.name)
	if err != nil {
		return backends.Version{}, err
	}
	backends.Step(ctx, "GetPublicKey")
	v, err := r.b.client.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: r.name})
	if err != nil {
		return backends.Version{}, classify(err, "reading "+r.name, "cloudkms.cryptoKeyVersions.get")
	}
	return backends.Version{ID: r.name, Algorithm: r.ring.Algorithm, PublicKey: pub, Created: v.GetCreateTime().AsTime(),
		Disabled: v.GetState() != kmspb.CryptoKeyVersion_ENABLED}, nil
}

// Abandon schedules the destruction of a version that lost. A version
// whose rotation failed otherwise is left: Cloud KMS enables it, and it is
// an ordinary newer version (the deviation).
func (r *rotation) Abandon(ctx context.Context, lost bool) (string, error) {
	if !lost || r.name == "" {
		return backends.NothingMade, nil
	}
	what := r.name + " (made here)"
	if err := r.b.destroyLoser(ctx, r.name); err != nil {
		return what, err
	}
	backends.Step(ctx, "DestroyCryptoKeyVersion")
	r.b.opts.Logger.Warn("gcpkms: another replica rotated the key ring at the same time; the version made here is scheduled for destruction",
		"key_ring", r.ring.Name, "destroyed", r.name)
	return what + " is scheduled for destruction", nil
}

// Release does nothing: there is no claim.
func (r *rotation) Release(context.Context) {}

// waitEnabled polls a new version until Cloud KMS has generated it (HSM
// keys take seconds), within the caller's deadline.
func (b *Backend) waitEnabled(ctx context.Context, name string) error {
	wait := 20 * time.Millisecond
	for {
		v, err := b.client.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: name})
		if err != nil {
			return classify(err, "reading "+name, "cloudkms.cryptoKeyVersions.get")
		}
		switch v.GetState() {
		case kmspb.CryptoKeyVersion_ENABLED:
			return nil
		case kmspb.CryptoKeyVersion_PENDING_GENERATION:
		default:
			return errorf(backends.KindFailedPrecondition, "%s is %s, not ENABLED, after its creation %s", name, v.GetState(), v.GetGenerationFailureReason())
		}
		select {
		case <-ctx.Done():
			return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme,
				Msg: name + " was still PENDING_GENERATION when the deadline passed; Cloud KMS enables it when ready, and it is then a version", Err: ctx.Err()}
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// destroyLoser schedules the destruction of a version that lost a race;
// ctx is the detached clean-up context.
func (b *Backend) destroyLoser(cctx context.Context, name string) error {
	_, err := b.client.DestroyCryptoKeyVersion(cctx, &kmspb.DestroyCryptoKeyVersionRequest{Name: name})
	if status.Code(err) == codes.FailedPrecondition && b.gone(cctx, name) {
		return nil // already scheduled: an earlier answer was lost
	}
	if err != nil {
		return classify(err, "scheduling the destruction of "+name, "cloudkms.cryptoKeyVersions.destroy")
	}
	b.opts.Recovered(Scheme, backends.RecoveredScheduledDeletion, name, "version made by a rotation that lost a race with another replica")
	return nil
}

// gone reports whether a version is scheduled for destruction or destroyed.
func (b *Backend) gone(ctx context.Context, name string) bool {
	v, err := b.client.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: name})
	return err == nil && (v.GetState() == kmspb.CryptoKeyVersion_DESTROY_SCHEDULED || v.GetState() == kmspb.CryptoKeyVersion_DESTROYED)
}

// Removed reports whether a version of the ring is scheduled for
// destruction or destroyed: Versions no longer lists it, and it can never
// sign again (restoring one makes it DISABLED). Cloud KMS never deletes a
// version, so any other answer means it may still sign.
func (b *Backend) Removed(ctx context.Context, ring backends.KeyRing, versionID string) (bool, error) {
	if err := b.checkID(ring, versionID); err != nil {
		return false, nil
	}
	v, err := b.client.GetCryptoKeyVersion(ctx, &kmspb.GetCryptoKeyVersionRequest{Name: versionID})
	if status.Code(err) == codes.NotFound && ctx.Err() == nil {
		return false, nil
	}
	if err != nil {
		return false, classify(err, "reading "+versionID, "cloudkms.cryptoKeyVersions.get")
	}
	st := v.GetState()
	return st == kmspb.CryptoKeyVersion_DESTROY_SCHEDULED || st == kmspb.CryptoKeyVersion_DESTROYED, nil
}

// checkID reports a version id that is not a version of the ring's key as
// not found.
func (b *Backend) checkID(ring backends.KeyRing, versionID string) error {
	key, err := b.keyName(ring)
	if err != nil {
		return err
	}
	if versionNumber(key, versionID) == 0 {
		return errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
	}
	return nil
}

// DisableVersion sets the version's state to DISABLED and, with
// destroy_on_revoke, then schedules its destruction (it then leaves the
// list). A version scheduled for destruction or destroyed already cannot
// sign.
func (b *Backend) DisableVersion(ctx context.Context, ring backends.KeyRing, versionID string) error {
	if err := b.checkID(ring, versionID); err != nil {
		return err
	}
	_, err := b.client.UpdateCryptoKeyVersion(ctx, &kmspb.UpdateCryptoKeyVersionRequest{
		CryptoKeyVersion: &kmspb.CryptoKeyVersion{Name: versionID, State: kmspb.CryptoKeyVersion_DISABLED},
		UpdateMask:       &fieldmaskpb.FieldMask{Paths: []string{"state"}}})
	if status.Code(err) == codes.FailedPrecondition && b.gone(ctx, versionID) {
		return nil
	}
	if err != nil {
		return classify(err, "disabling "+versionID, "cloudkms.cryptoKeyVersions.update")
	}
	backends.Step(ctx, "UpdateCryptoKeyVersion")
	if !b.destroy {
		return nil
	}
	_, err = b.client.DestroyCryptoKeyVersion(ctx, &kmspb.DestroyCryptoKeyVersionRequest{Name: versionID})
	if status.Code(err) == codes.FailedPrecondition && b.gone(ctx, versionID) {
		return nil
	}
	if err != nil {
		return classify(err, "scheduling the destruction of revoked "+versionID+" (it is disabled; revoking again retries)", "cloudkms.cryptoKeyVersions.destroy")
	}
	backends.Step(ctx, "DestroyCryptoKeyVersion")
	return nil
}

// Sign asks Cloud KMS to sign the digest of the signing input (the input
// itself for EdDSA) with exactly the named version, sending its CRC32C and
// checking the answer's as Google documents.
func (b *Backend) Sign(ctx context.Context, ring backends.KeyRing, versionID string, signingInput []byte) ([]byte, error) {
	alg := ring.Algorithm
	if _, ok := algorithms[alg]; !ok {
		return nil, errorf(backends.KindUnimplemented, "algorithm %q is not offered by Cloud KMS", alg)
	}
	if err := b.checkID(ring, versionID); err != nil {
		return nil, err
	}
	req := &kmspb.AsymmetricSignRequest{Name: versionID}
	if alg.IsEdDSA() {
		if len(signingInput) > MaxData {
			return nil, errorf(backends.KindInvalidArgument, "EdDSA signing input is %d bytes; Cloud KMS signs at most %d", len(signingInput), MaxData)
		}
		req.Data, req.DataCrc32C = signingInput, wrapperspb.Int64(crc(signingInput))
	} else {
		req.Digest = digest(alg, signingInput)
		req.DigestCrc32C = wrapperspb.Int64(crc(digestBytes(req.Digest)))
	}
	var resp *kmspb.AsymmetricSignResponse
	for attempt := 1; ; attempt++ {
		var err error
		resp, err = b.client.AsymmetricSign(ctx, req)
		if err != nil {
			return nil, classify(err, "signing with "+versionID, "cloudkms.cryptoKeyVersions.useToSign")
		}
		why := checkSignResponse(req, resp)
		if why == "" {
			break
		}
		if attempt == integrityAttempts || ctx.Err() != nil {
			return nil, errorf(backends.KindUnavailable, "Cloud KMS's answer to signing with %s failed its integrity check %d times (%s)", versionID, attempt, why)
		}
		b.opts.Logger.Warn("gcpkms: a signature failed its integrity check; asking again", "version", versionID, "why", why)
	}
	if alg.IsECDSA() {
		sig, err := backends.ECDSASignatureFromDER(alg, resp.GetSignature())
		if err != nil {
			return nil, errorf(backends.KindUnknown, "Cloud KMS returned a bad ECDSA signature: %v", err)
		}
		return sig, nil
	}
	return resp.GetSignature(), nil
}

// checkSignResponse says what is wrong with an AsymmetricSign answer, "" if
// nothing: the request's checksum was verified, the signature's matches,
// and the version named is the one asked for.
func checkSignResponse(req *kmspb.AsymmetricSignRequest, resp *kmspb.AsymmetricSignResponse) string {
	switch {
	case req.GetDigest() != nil && !resp.GetVerifiedDigestCrc32C():
		return "verified_digest_crc32c is false"
	case req.GetData() != nil && !resp.GetVerifiedDataCrc32C():
		return "verified_data_crc32c is false"
	case resp.GetSignatureCrc32C() == nil || resp.GetSignatureCrc32C().GetValue() != crc(resp.GetSignature()):
		return "signature_crc32c does not match the signature"
	case resp.GetName() != req.GetName():
		return fmt.Sprintf("signed by %q", resp.GetName())
	}
	return ""
}

func digest(alg backends.Algorithm, in []byte) *kmspb.Digest {
	switch alg.Hash() {
	case crypto.SHA256:
		d := sha256.Sum256(in)
		return &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: d[:]}}
	case crypto.SHA384:
		d := sha512.Sum384(in)
		return &kmspb.Digest{Digest: &kmspb.Digest_Sha384{Sha384: d[:]}}
	default:
		d := sha512.Sum512(in)
		return &kmspb.Digest{Digest: &kmspb.Digest_Sha512{Sha512: d[:]}}
	}
}

func digestBytes(d *kmspb.Digest) []byte {
	switch x := d.GetDigest().(type) {
	case *kmspb.Digest_Sha256:
		return x.Sha256
	case *kmspb.Digest_Sha384:
		return x.Sha384
	case *kmspb.Digest_Sha512:
		return x.Sha512
	}
	return nil
}

// Leftovers lists the ring's versions scheduled for destruction: those of
// rotations that lost a race with another replica, and any an operator
// destroyed.
func (b *Backend) Leftovers(ctx context.Context, ring backends.KeyRing) ([]backends.Leftover, error) {
	key, err := b.keyName(ring)
	if err != nil {
		return nil, err
	}
	all, _, err := b.list(ctx, key)
	if err != nil {
		return nil, err
	}
	var out []backends.Leftover
	for _, v := range all {
		if v.GetState() == kmspb.CryptoKeyVersion_DESTROY_SCHEDULED {
			out = append(out, backends.Leftover{ID: v.GetName(), Kind: "version that can no longer sign (a rotation that lost a race, or destroyed by hand)",
				State: "scheduled for deletion", Created: v.GetCreateTime().AsTime()})
		}
	}
	return out, nil
}

// Close closes the client's connections. Calling it twice is safe.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() { b.closeErr = b.client.Close() })
	return b.closeErr
}

// classify maps gRPC status codes to the shared kinds; a refusal names the
// permission the call needs.
func classify(err error, what, permission string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: what + ": Cloud KMS did not answer in time", Err: err}
	}
	st, ok := status.FromError(err)
	if !ok {
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: fmt.Sprintf("%s: cannot reach Cloud KMS: %v", what, err), Err: err}
	}
	kind := backends.KindUnknown
	msg := fmt.Sprintf("%s: %s: %s", what, st.Code(), st.Message())
	switch st.Code() {
	case codes.NotFound:
		kind = backends.KindNotFound
	case codes.FailedPrecondition:
		kind = backends.KindFailedPrecondition
	case codes.Unavailable, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Aborted, codes.Internal, codes.Canceled:
		kind = backends.KindUnavailable
	case codes.PermissionDenied, codes.Unauthenticated:
		kind = backends.KindPermissionDenied
		msg += " (Signet's service account needs " + permission + ")"
	case codes.AlreadyExists:
		kind = backends.KindConflict
	case codes.InvalidArgument, codes.OutOfRange:
		kind = backends.KindInvalidArgument
	case codes.Unimplemented:
		kind = backends.KindUnimplemented
	}
	return &backends.Error{Kind: kind, Backend: Scheme, Msg: msg, Err: err}
}
