package awskms

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"golang.org/x/time/rate"

	"github.com/signet-dev/signet/backends"
)

// Scheme is the URI scheme of this backend.
const Scheme = "awskms"

// MaxRawMessage is KMS's limit on a RAW Sign message (EdDSA).
const MaxRawMessage = 4096

func init() { backends.Register(Scheme, Open) }

func errorf(kind backends.Kind, format string, args ...any) error {
	return backends.Errorf(kind, Scheme, format, args...)
}

// Backend is the AWS KMS backend.
type Backend struct {
	client  *kms.Client
	prefix  string
	limiter *rate.Limiter
	opts    backends.OpenOptions
	now     func() time.Time
	seen    backends.Sightings // evidence of interrupted rotations, by when this process first saw it

	// scanLimiter paces the calls of a scan of the account's keys, which
	// only evidence of an interrupted rotation starts.
	scanLimiter *rate.Limiter

	// tagsDenied is set once ListResourceTags was refused (logged once).
	tagsDenied atomic.Bool

	mu        sync.Mutex
	pubs      map[string]crypto.PublicKey // by key ARN
	requests  map[string]string           // by key ARN: the signet:request-id tag ("" for none), read once
	described map[string]keyInfo          // by key id: what a scan learnt of a key
}

// Tags on every key Signet creates. A key is Signet's, for a ring, only if
// it carries all three: recovery never touches any other key.
const (
	tagRing        = "signet:ring"
	tagVersion     = "signet:version"
	tagAliasPrefix = "signet:alias-prefix"
	// tagRequestID records the Rotate request id a key was created for
	// (backends.RequestRecorder), set by CreateKey with the key itself.
	tagRequestID = "signet:request-id"
)

var keySpecs = map[backends.Algorithm]types.KeySpec{
	backends.ES256: types.KeySpecEccNistP256, backends.ES384: types.KeySpecEccNistP384, backends.ES512: types.KeySpecEccNistP521,
	backends.RS256: types.KeySpecRsa2048, backends.RS384: types.KeySpecRsa3072, backends.RS512: types.KeySpecRsa4096,
	backends.PS256: types.KeySpecRsa2048, backends.PS384: types.KeySpecRsa3072, backends.PS512: types.KeySpecRsa4096,
	backends.EdDSA: types.KeySpecEccNistEdwards25519,
}

var signingAlgorithms = map[backends.Algorithm]types.SigningAlgorithmSpec{
	backends.ES256: types.SigningAlgorithmSpecEcdsaSha256, backends.ES384: types.SigningAlgorithmSpecEcdsaSha384,
	backends.ES512: types.SigningAlgorithmSpecEcdsaSha512,
	backends.RS256: types.SigningAlgorithmSpecRsassaPkcs1V15Sha256, backends.RS384: types.SigningAlgorithmSpecRsassaPkcs1V15Sha384,
	backends.RS512: types.SigningAlgorithmSpecRsassaPkcs1V15Sha512,
	backends.PS256: types.SigningAlgorithmSpecRsassaPssSha256, backends.PS384: types.SigningAlgorithmSpecRsassaPssSha384,
	backends.PS512: types.SigningAlgorithmSpecRsassaPssSha512,
	backends.EdDSA: types.SigningAlgorithmSpecEd25519Sha512,
}

// uriOptions is what an awskms: URI says, read without opening anything.
type uriOptions struct {
	region, profile, endpoint, prefix string
	signRate, scanRate                float64
	signBurst                         int
}

// parseURI reads an awskms: URI's options and applies their defaults.
func parseURI(u *url.URL) (uriOptions, error) {
	q, err := backends.ParseOptions(Scheme, u, "region", "profile", "endpoint", "alias_prefix", "sign_rate", "sign_burst", "scan_rate")
	if err != nil {
		return uriOptions{}, err
	}
	o := uriOptions{region: q.Get("region"), profile: q.Get("profile"), endpoint: q.Get("endpoint"), prefix: q.Get("alias_prefix")}
	if o.endpoint != "" {
		if eu, err := url.Parse(o.endpoint); err != nil || (eu.Scheme != "https" && eu.Scheme != "http") || eu.Host == "" {
			return uriOptions{}, errorf(backends.KindInvalidArgument, "endpoint=%q is not an http(s) URL", o.endpoint)
		}
	}
	if o.signRate, err = q.Rate("sign_rate", 100, 1e6); err != nil {
		return uriOptions{}, err
	}
	if o.signBurst, err = q.Int("sign_burst", 20, 1, 1e6); err != nil {
		return uriOptions{}, err
	}
	if o.scanRate, err = q.Rate("scan_rate", 50, 1e6); err != nil {
		return uriOptions{}, err
	}
	if o.prefix == "" {
		o.prefix = "signet"
	}
	if strings.Contains(o.prefix, "//") || strings.HasPrefix(o.prefix, "aws") || strings.Trim(o.prefix, "/") != o.prefix {
		return uriOptions{}, errorf(backends.KindInvalidArgument, "alias_prefix=%q: no leading or trailing '/', and not aws", o.prefix)
	}
	return o, nil
}

// Open opens the backend an awskms: URI describes.
func Open(ctx context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
	o, err := parseURI(u)
	if err != nil {
		return nil, err
	}
	var loadOpts []func(*config.LoadOptions) error
	if o.region != "" {
		loadOpts = append(loadOpts, config.WithRegion(o.region))
	}
	if o.profile != "" {
		loadOpts = append(loadOpts, config.WithSharedConfigProfile(o.profile))
	}
	if opts.TracerProvider != nil {
		loadOpts = append(loadOpts, config.WithHTTPClient(&http.Client{Transport: otelhttp.NewTransport(
			awshttp.NewBuildableClient().GetTransport(), otelhttp.WithTracerProvider(opts.TracerProvider))}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, errorf(backends.KindInvalidArgument, "AWS configuration: %v", err)
	}
	if cfg.Region == "" {
		return nil, errorf(backends.KindInvalidArgument, "no AWS region: set region= in the URI or AWS_REGION")
	}
	client := kms.NewFromConfig(cfg, func(ko *kms.Options) {
		if o.endpoint != "" {
			ko.BaseEndpoint = aws.String(o.endpoint)
		}
	})
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Backend{client: client, prefix: o.prefix, limiter: rate.NewLimiter(rate.Limit(o.signRate), o.signBurst),
		opts: opts, now: opts.Clock(), scanLimiter: rate.NewLimiter(rate.Limit(o.scanRate), max(1, int(o.scanRate))),
		pubs: map[string]crypto.PublicKey{}, requests: map[string]string{}, described: map[string]keyInfo{}}, nil
}

// Algorithms reports every JWS algorithm: KMS has a key spec for each.
func (b *Backend) Algorithms() []backends.Algorithm { return backends.AllAlgorithms }

func (b *Backend) aliasPrefix(ring backends.KeyRing) string {
	return "alias/" + b.prefix + "/" + ring.Name + "/"
}

// intentName is the ring's rotation intent alias: see rotate.go.
func (b *Backend) intentName(ring backends.KeyRing) string {
	return b.aliasPrefix(ring) + intentSuffix
}

const intentSuffix = "rotating"

// alias is one version's alias, or the ring's intent alias (n = 0).
type alias struct {
	n       int
	name    string
	keyID   string
	created time.Time // zero if the KMS implementation does not say
}

// ringAliases are a ring's version aliases, oldest version first, and its
// intent alias, if a rotation is under way or was interrupted.
type ringAliases struct {
	versions []alias
	intent   *alias
}

func (ra ringAliases) isVersion(keyID string) bool {
	for _, a := range ra.versions {
		if a.keyID == keyID {
			return true
		}
	}
	return false
}

func (ra ringAliases) newest() int {
	if len(ra.versions) == 0 {
		return 0
	}
	return ra.versions[len(ra.versions)-1].n
}

// aliases lists the ring's aliases, following pages.
func (b *Backend) aliases(ctx context.Context, ring backends.KeyRing) (ringAliases, error) {
	prefix := b.aliasPrefix(ring)
	var out ringAliases
	p := kms.NewListAliasesPaginator(b.client, &kms.ListAliasesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return ringAliases{}, classify(err, "listing aliases")
		}
		for _, a := range page.Aliases {
			rest, ok := strings.CutPrefix(aws.ToString(a.AliasName), prefix)
			if !ok || a.TargetKeyId == nil {
				continue
			}
			al := alias{name: aws.ToString(a.AliasName), keyID: aws.ToString(a.TargetKeyId), created: aws.ToTime(a.CreationDate)}
			if rest == intentSuffix {
				out.intent = &al
				continue
			}
			n, err := strconv.Atoi(rest)
			if err != nil || n < 1 {
				continue
			}
			al.n = n
			out.versions = append(out.versions, al)
		}
	}
	sort.Slice(out.versions, func(i, j int) bool { return out.versions[i].n < out.versions[j].n })
	return out, nil
}

// Versions describes the ring's keys; public keys come from the cache or,
// once per key, from GetPublicKey. It also cleans up after an interrupted
// rotation of the ring when there is evidence of one (recovery.go).
func (b *Backend) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	if _, ok := keySpecs[ring.Algorithm]; !ok {
		return nil, errorf(backends.KindUnimplemented, "algorithm %q is not supported", ring.Algorithm)
	}
	ra, err := b.aliases(ctx, ring)
	if err != nil {
		return nil, err
	}
	b.recover(ctx, ring, ra)
	out := make([]backends.Version, 0, len(ra.versions))
	for _, a := range ra.versions {
		v, err := b.version(ctx, ring, a)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (b *Backend) version(ctx context.Context, ring backends.KeyRing, a alias) (backends.Version, error) {
	d, err := b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(a.keyID)})
	if err != nil {
		return backends.Version{}, classify(err, "describing "+a.name)
	}
	md := d.KeyMetadata
	arn := aws.ToString(md.Arn)
	// A key's usage is fixed when it is made: one that is not SIGN_VERIFY
	// cannot sign, so it is refused here, at every read, with no opt-out.
	if md.KeySpec != keySpecs[ring.Algorithm] || md.KeyUsage != types.KeyUsageTypeSignVerify {
		return backends.Version{}, errorf(backends.KindFailedPrecondition,
			"%s points to a key with KeySpec=%s and KeyUsage=%s, but key ring %q needs KeySpec=%s and KeyUsage=SIGN_VERIFY for %s",
			a.name, md.KeySpec, md.KeyUsage, ring.Name, keySpecs[ring.Algorithm], ring.Algorithm)
	}
	disabled := md.KeyState != types.KeyStateEnabled
	b.mu.Lock()
	pub := b.pubs[arn]
	requestID, knowRequest := b.requests[arn]
	b.mu.Unlock()
	if !knowRequest {
		var err error
		if requestID, err = b.requestTag(ctx, arn, a.name); err != nil {
			return backends.Version{}, err
		}
	}
	if pub == nil {
		// KMS refuses GetPublicKey on a disabled key, so the public key is
		// also kept in the key's description, which DescribeKey always shows.
		der, fromDescription := publicKeyFromDescription(aws.ToString(md.Description))
		var err error
		if !fromDescription && !disabled {
			out, gerr := b.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(arn)})
			if gerr != nil {
				return backends.Version{}, classify(gerr, "reading the public key of "+a.name)
			}
			der = out.PublicKey
		}
		switch {
		case disabled && der == nil:
			// A revoked key without a record of its public key (disabled
			// outside Signet): KMS would refuse GetPublicKey, and a revoked
			// version is listed without its key, never published.
		case disabled:
			if pub, err = parsePublicKey(ring.Algorithm, der, a.name); err != nil {
				b.opts.Logger.Warn("awskms: the public key recorded for a disabled key is unusable; it is listed as revoked without a kid",
					"key_ring", ring.Name, "alias", a.name, "err", err)
				pub = nil
			}
		default:
			if pub, err = parsePublicKey(ring.Algorithm, der, a.name); err != nil {
				return backends.Version{}, err
			}
		}
		if pub != nil {
			b.mu.Lock()
			b.pubs[arn] = pub
			b.mu.Unlock()
		}
	}
	return backends.Version{ID: arn, Algorithm: ring.Algorithm, PublicKey: pub, Created: aws.ToTime(md.CreationDate), Disabled: disabled,
		Certificates: chainFromDescription(aws.ToString(md.Description)),
		RequestID:    requestID}, nil
}

// requestTag reads the key's signet:request-id tag, once per key: tags
// never change after CreateKey. The tag only serves Rotate's request ids,
// so a read refused for want of kms:ListResourceTags (a policy written
// before the tag existed) or throttled counts as "no id recorded" rather
// than failing the read of the ring: the ring still signs and rotates, and
// a retried Rotate is then recognised only by the replica that served it.
// Such a result is not kept, so the tag is read again once it can be; the
// denial is logged once per process.
func (b *Backend) requestTag(ctx context.Context, arn, name string) (string, error) {
	tags, err := b.client.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(arn)})
	if err != nil {
		err = classify(err, "reading the tags of "+name)
		var ae smithy.APIError
		switch {
		case !errors.As(err, &ae):
			return "", err
		case ae.ErrorCode() == "AccessDeniedException":
			if b.tagsDenied.CompareAndSwap(false, true) {
				b.opts.Logger.Warn("awskms: kms:ListResourceTags is denied: a retried Rotate is recognised only by the replica that served it; grant it (see the upgrade notes)",
					"key", name, "err", err)
			}
			return "", nil
		case ae.ErrorCode() == "ThrottlingException" || ae.ErrorCode() == "RequestLimitExceeded":
			return "", nil
		}
		return "", err
	}
	requestID := ""
	for _, tag := range tags.Tags {
		if aws.ToString(tag.TagKey) == tagRequestID {
			requestID = aws.ToString(tag.TagValue)
		}
	}
	b.mu.Lock()
	b.requests[arn] = requestID
	b.mu.Unlock()
	return requestID, nil
}

// CreateVersion creates a KMS key and claims the next alias for it,
// through the rotation protocol (backends.Rotate) over rotation's
// primitives. recovery.go documents the intent alias that makes an
// interrupted rotation's key findable.
func (b *Backend) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (backends.Version, error) {
	return b.createVersion(ctx, ring, latest, "")
}

// CreateVersionForRequest is CreateVersion that tags the new key with
// requestID (signet:request-id) in the CreateKey call itself.
func (b *Backend) CreateVersionForRequest(ctx context.Context, ring backends.KeyRing, latest, requestID string) (backends.Version, error) {
	return b.createVersion(ctx, ring, latest, requestID)
}

func (b *Backend) createVersion(ctx context.Context, ring backends.KeyRing, latest, requestID string) (backends.Version, error) {
	spec, ok := keySpecs[ring.Algorithm]
	if !ok {
		return backends.Version{}, errorf(backends.KindUnimplemented, "algorithm %q is not supported", ring.Algorithm)
	}
	return backends.Rotate(ctx, b.opts, Scheme, ring, latest, &rotation{b: b, ring: ring, spec: spec, requestID: requestID})
}

// rotation is AWS KMS's primitives of the rotation protocol
// (backends.Protocol). The claim is the ring's intent alias (CreateAlias is
// atomic: one replica makes it, the others are refused), put on the newest
// version's key; the candidate is a new key, which no version alias
// reaches, with the intent alias moved onto it so that a live replica finds
// it if this one dies; nothing to settle or pick (the intent alias holder
// is the only candidate); the commit is the version alias (CreateAlias
// again: atomic). A loser's key is scheduled for deletion. The ring's
// first version has no key to put the intent alias on: its claim is a scan
// that finds no key an earlier attempt left, and two replicas racing for
// it are decided by the version alias alone.
type rotation struct {
	b         *Backend
	ring      backends.KeyRing
	spec      types.KeySpec
	requestID string

	ra     ringAliases
	n      int    // the slot: the version number
	arn    string // the candidate key, once created
	intent bool   // this replica holds the intent alias
	// keepIntent: the intent alias stays after the rotation, as the
	// evidence that leads a live replica to a key it may have to delete
	// (a CreateKey without an answer, a deletion that failed).
	keepIntent bool
	committed  bool // the version alias targets the candidate
}

func (r *rotation) name() string { return r.b.aliasPrefix(r.ring) + strconv.Itoa(r.n) }

// Newest lists the ring's aliases and describes the newest version's key.
func (r *rotation) Newest(ctx context.Context) (string, error) {
	ra, err := r.b.aliases(ctx, r.ring)
	if err != nil {
		return "", err
	}
	backends.Step(ctx, "ListAliases")
	r.ra, r.n = ra, 1
	if len(ra.versions) == 0 {
		return "", nil
	}
	last := ra.versions[len(ra.versions)-1]
	r.n = last.n + 1
	d, err := r.b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(last.keyID)})
	if err != nil {
		return "", classify(err, "describing "+last.name)
	}
	backends.Step(ctx, "DescribeKey newest")
	return aws.ToString(d.KeyMetadata.Arn), nil
}

// Claim creates the intent alias on the newest version's key: the lock
// between rotating replicas, and the evidence that leads a live replica to
// this rotation's key if it dies. The first version: no key exists to
// record the intent on, so make sure no earlier attempt's key is left (a
// bounded scan, once per ring).
func (r *rotation) Claim(ctx context.Context) error {
	if r.n == 1 {
		if err := r.b.recoverFirst(ctx, r.ring, true); err != nil {
			return err
		}
		backends.Step(ctx, "scan")
		return nil
	}
	intent := r.b.intentName(r.ring)
	_, err := r.b.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(intent), TargetKeyId: aws.String(r.ra.versions[len(r.ra.versions)-1].keyID)},
		sendOnce)
	var exists *types.AlreadyExistsException
	if errors.As(err, &exists) {
		return errorf(backends.KindConflict,
			"key ring %q is being rotated by another replica (%s exists; if its rotation was interrupted, a live replica cleans up within 2 x backend_timeout)", r.ring.Name, intent)
	}
	if err != nil {
		return classify(err, "claiming "+intent)
	}
	r.intent = true
	backends.Step(ctx, "CreateAlias intent")
	return nil
}

// Create creates the key, moves the intent alias onto it, and records its
// public key in its description.
func (r *rotation) Create(ctx context.Context) error {
	tags := []types.Tag{{TagKey: aws.String(tagRing), TagValue: aws.String(r.ring.Name)},
		{TagKey: aws.String(tagVersion), TagValue: aws.String(strconv.Itoa(r.n))},
		{TagKey: aws.String(tagAliasPrefix), TagValue: aws.String(r.b.prefix)}}
	if r.requestID != "" {
		tags = append(tags, types.Tag{TagKey: aws.String(tagRequestID), TagValue: aws.String(r.requestID)})
	}
	created, err := r.b.client.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     r.spec,
		KeyUsage:    types.KeyUsageTypeSignVerify,
		Description: aws.String(fmt.Sprintf("%s%d (%s)", r.b.descriptionPrefix(r.ring), r.n, r.ring.Algorithm)),
		Tags:        tags,
	}, sendOnce) // after a lost answer the intent alias leads to the key, not a second key
	if err != nil {
		// The intent alias stays: KMS may have created the key and the
		// answer been lost. A live replica scans for it once it is stale.
		r.keepIntent = true
		return classify(err, "creating a key for "+r.name())
	}
	backends.Step(ctx, "CreateKey")
	r.arn = aws.ToString(created.KeyMetadata.Arn)
	if r.intent {
		if _, err := r.b.client.UpdateAlias(ctx, &kms.UpdateAliasInput{AliasName: aws.String(r.b.intentName(r.ring)), TargetKeyId: aws.String(r.arn)}); err != nil {
			return classify(err, "moving "+r.b.intentName(r.ring)+" to "+r.arn)
		}
		backends.Step(ctx, "UpdateAlias intent")
	}
	pub, err := r.b.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(r.arn)})
	if err != nil {
		return classify(err, "reading the public key of "+r.arn)
	}
	backends.Step(ctx, "GetPublicKey")
	if _, err := r.b.client.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(r.arn),
		Description: aws.String(describe(r.b.descriptionPrefix(r.ring), r.n, r.ring.Algorithm, pub.PublicKey))}); err != nil {
		return classify(err, "describing "+r.arn)
	}
	backends.Step(ctx, "UpdateKeyDescription")
	return nil
}

// Resolve cannot read a lost CreateKey back (KMS lists keys by no name):
// the intent alias leads a live replica's scan to it (recovery.go).
func (r *rotation) Resolve(_ context.Context, err error) error { return err }

// Settle does nothing: the intent alias is atomic.
func (r *rotation) Settle(context.Context) error { return nil }

// Pick does nothing: the intent alias holder is the only candidate, and
// the version alias (Commit) decides between first versions.
func (r *rotation) Pick(context.Context) error { return nil }

// Commit creates the version alias, which fails if another replica's
// exists; a lost answer is read back (aliasTargets).
func (r *rotation) Commit(ctx context.Context) (backends.Version, error) {
	name := r.name()
	_, err := r.b.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(r.arn)}, sendOnce)
	if err != nil && r.b.aliasTargets(ctx, name, r.arn) {
		err = nil // the answer was lost, but the alias was created
	}
	var exists *types.AlreadyExistsException
	switch {
	case errors.As(err, &exists):
		return backends.Version{}, backends.Lost(name)
	case err != nil:
		return backends.Version{}, classify(err, "claiming "+name)
	}
	r.committed = true
	backends.Step(ctx, "CreateAlias version")
	r.b.mu.Lock()
	r.b.requests[r.arn] = r.requestID // as tagged: no need to read the tags back
	r.b.mu.Unlock()
	v, err := r.b.version(ctx, r.ring, alias{n: r.n, name: name, keyID: r.arn})
	if err == nil {
		backends.Step(ctx, "DescribeKey version")
	}
	return v, err
}

// Abandon schedules the deletion of the key created here: no alias will
// reach it. If that fails, the intent alias stays so that a live replica
// finds and deletes it.
func (r *rotation) Abandon(ctx context.Context, _ bool) (string, error) {
	if r.committed || r.arn == "" {
		return backends.NothingMade, nil
	}
	if err := r.b.scheduleDeletion(ctx, r.arn); err != nil {
		r.keepIntent = true
		return "the key created here (" + r.arn + ")", classify(err, "scheduling the deletion of "+r.arn)
	}
	return "the key created here is scheduled for deletion", nil
}

// Release deletes the intent alias, unless it stays as evidence. A
// failure leaves it on a version's key or a key scheduled for deletion,
// which a live replica deletes once it is stale.
func (r *rotation) Release(ctx context.Context) {
	if !r.intent || r.keepIntent {
		return
	}
	intent := r.b.intentName(r.ring)
	if err := r.b.deleteAlias(ctx, intent); err != nil {
		r.b.opts.Logger.Warn("awskms: could not delete the intent alias; a live replica deletes it once stale",
			"alias", intent, "key_ring", r.ring.Name, "err", err)
		return
	}
	if r.committed {
		backends.Step(ctx, "DeleteAlias intent")
	}
}

// aliasTargets reports whether the alias exists and targets the key.
func (b *Backend) aliasTargets(ctx context.Context, alias, arn string) bool {
	cctx, cancel := b.opts.Detached(ctx)
	defer cancel()
	d, err := b.client.DescribeKey(cctx, &kms.DescribeKeyInput{KeyId: aws.String(alias)})
	return err == nil && aws.ToString(d.KeyMetadata.Arn) == arn
}

// sendOnce keeps the SDK from sending a creating call again (CreateKey,
// CreateAlias): after a lost answer a copy makes a second key that nothing
// leads to, or answers AlreadyExists for the alias the first copy made,
// which reads as another replica's win. What the call did is read instead
// (the intent alias, aliasTargets).
func sendOnce(o *kms.Options) { o.Retryer = aws.NopRetryer{} }

// scheduleDeletion schedules a key's deletion after KMS's shortest waiting
// period; a key already pending deletion is not an error.
func (b *Backend) scheduleDeletion(ctx context.Context, keyID string) error {
	_, err := b.client.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(keyID), PendingWindowInDays: aws.Int32(7)})
	var invalid *types.KMSInvalidStateException
	if errors.As(err, &invalid) {
		return nil
	}
	return err
}

func (b *Backend) deleteAlias(ctx context.Context, name string) error {
	_, err := b.client.DeleteAlias(ctx, &kms.DeleteAliasInput{AliasName: aws.String(name)})
	var nf *types.NotFoundException
	if errors.As(err, &nf) {
		return nil
	}
	return err
}

// descriptionPrefix starts the description of every key of the ring; a
// scan passes over keys whose description is not Signet's with one
// DescribeKey.
func (b *Backend) descriptionPrefix(ring backends.KeyRing) string {
	return signetDescription + ring.Name + ", version "
}

const publicKeyMarker = " public key (PKIX, base64): "

// describe is a key's description: what owns it, and its public key, which
// must stay readable after the key is disabled.
func describe(prefix string, n int, alg backends.Algorithm, pubDER []byte) string {
	return fmt.Sprintf("%s%d (%s);%s%s", prefix, n, alg, publicKeyMarker, base64.StdEncoding.EncodeToString(pubDER))
}

// parsePublicKey reads the public key of the key an alias names, as KMS's
// GetPublicKey returns it (and a key's description keeps it): PKIX DER,
// which must be a key of alg.
func parsePublicKey(alg backends.Algorithm, der []byte, alias string) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, errorf(backends.KindUnknown, "public key of %s: %v", alias, err)
	}
	if err := alg.CheckPublicKey(pub); err != nil {
		return nil, errorf(backends.KindFailedPrecondition, "public key of %s: %v", alias, err)
	}
	return pub, nil
}

// publicKeyFromDescription finds the public key that describe put in a
// key's description; false if there is none.
func publicKeyFromDescription(d string) ([]byte, bool) {
	_, b64, ok := strings.Cut(d, publicKeyMarker)
	if !ok {
		return nil, false
	}
	b64, _, _ = strings.Cut(b64, chainMarker)
	der, err := base64.StdEncoding.DecodeString(b64)
	return der, err == nil
}

// DisableVersion disables the version's KMS key.
func (b *Backend) DisableVersion(ctx context.Context, ring backends.KeyRing, versionID string) error {
	if !strings.HasPrefix(versionID, "arn:") {
		return errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
	}
	_, err := b.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(versionID)})
	if err == nil {
		backends.Step(ctx, "DisableKey")
	}
	var invalid *types.KMSInvalidStateException
	if errors.As(err, &invalid) {
		return nil // pending deletion: already unable to sign
	}
	return classify(err, "disabling "+versionID)
}

// Sign signs the hash of the signing input with exactly the named key.
func (b *Backend) Sign(ctx context.Context, ring backends.KeyRing, versionID string, signingInput []byte) ([]byte, error) {
	alg := ring.Algorithm
	sa, ok := signingAlgorithms[alg]
	if !ok {
		return nil, errorf(backends.KindUnimplemented, "algorithm %q is not supported", alg)
	}
	if !strings.HasPrefix(versionID, "arn:") {
		return nil, errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
	}
	in := &kms.SignInput{KeyId: aws.String(versionID), SigningAlgorithm: sa}
	if alg.IsEdDSA() {
		if len(signingInput) > MaxRawMessage {
			return nil, errorf(backends.KindInvalidArgument, "EdDSA signing input is %d bytes; KMS signs at most %d raw bytes", len(signingInput), MaxRawMessage)
		}
		in.Message, in.MessageType = signingInput, types.MessageTypeRaw
	} else {
		h := alg.Hash().New()
		h.Write(signingInput)
		in.Message, in.MessageType = h.Sum(nil), types.MessageTypeDigest
	}
	if err := b.limiter.Wait(ctx); err != nil {
		return nil, &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: "client-side KMS rate limit: no slot before the deadline", Err: err}
	}
	out, err := b.client.Sign(ctx, in)
	if err != nil {
		return nil, classify(err, "signing with "+versionID)
	}
	if aws.ToString(out.KeyId) != versionID {
		return nil, errorf(backends.KindUnknown, "KMS signed with %s, not the requested %s", aws.ToString(out.KeyId), versionID)
	}
	if alg.IsECDSA() {
		sig, err := backends.ECDSASignatureFromDER(alg, out.Signature)
		if err != nil {
			return nil, errorf(backends.KindUnknown, "KMS returned a bad ECDSA signature: %v", err)
		}
		return sig, nil
	}
	return out.Signature, nil
}

// Close releases nothing: the SDK client holds no resources that need it.
func (b *Backend) Close() error { return nil }

// classify maps KMS exceptions and transport failures to the shared kinds.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: what + ": KMS did not answer in time", Err: err}
	}
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		return &backends.Error{Kind: backends.KindUnavailable, Backend: Scheme, Msg: fmt.Sprintf("%s: cannot reach KMS: %v", what, err), Err: err}
	}
	kind := backends.KindUnknown
	switch ae.ErrorCode() {
	case "NotFoundException":
		kind = backends.KindNotFound
	case "DisabledException", "KMSInvalidStateException":
		kind = backends.KindFailedPrecondition
	case "ThrottlingException", "DependencyTimeoutException", "KMSInternalException", "LimitExceededException",
		"KeyUnavailableException", "RequestLimitExceeded":
		kind = backends.KindUnavailable
	case "AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
		"MissingAuthenticationTokenException":
		kind = backends.KindPermissionDenied
	case "AlreadyExistsException":
		kind = backends.KindConflict
	case "ValidationException", "InvalidKeyUsageException", "InvalidArnException", "IncorrectKeyException":
		kind = backends.KindInvalidArgument
	}
	return &backends.Error{Kind: kind, Backend: Scheme, Msg: fmt.Sprintf("%s: %s: %s", what, ae.ErrorCode(), ae.ErrorMessage()), Err: err}
}
