package awskms

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
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

	mu   sync.Mutex
	pubs map[string]crypto.PublicKey // by key ARN
}

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

// Open opens the backend an awskms: URI describes.
func Open(ctx context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
	q := u.Query()
	for k := range q {
		switch k {
		case "region", "profile", "endpoint", "alias_prefix", "sign_rate", "sign_burst":
		default:
			return nil, errorf(backends.KindInvalidArgument, "unknown URI option %q", k)
		}
	}
	var loadOpts []func(*config.LoadOptions) error
	if r := q.Get("region"); r != "" {
		loadOpts = append(loadOpts, config.WithRegion(r))
	}
	if p := q.Get("profile"); p != "" {
		loadOpts = append(loadOpts, config.WithSharedConfigProfile(p))
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
	endpoint := q.Get("endpoint")
	if endpoint != "" {
		if eu, err := url.Parse(endpoint); err != nil || (eu.Scheme != "https" && eu.Scheme != "http") || eu.Host == "" {
			return nil, errorf(backends.KindInvalidArgument, "endpoint=%q is not an http(s) URL", endpoint)
		}
	}
	client := kms.NewFromConfig(cfg, func(o *kms.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	ratePerSec, burst := 100.0, 20
	if s := q.Get("sign_rate"); s != "" {
		if ratePerSec, err = strconv.ParseFloat(s, 64); err != nil || ratePerSec <= 0 {
			return nil, errorf(backends.KindInvalidArgument, "sign_rate=%q: want a positive number of calls per second", s)
		}
	}
	if s := q.Get("sign_burst"); s != "" {
		if burst, err = strconv.Atoi(s); err != nil || burst < 1 {
			return nil, errorf(backends.KindInvalidArgument, "sign_burst=%q: want a positive number", s)
		}
	}
	prefix := q.Get("alias_prefix")
	if prefix == "" {
		prefix = "signet"
	}
	if strings.Contains(prefix, "//") || strings.HasPrefix(prefix, "aws") || strings.Trim(prefix, "/") != prefix {
		return nil, errorf(backends.KindInvalidArgument, "alias_prefix=%q: no leading or trailing '/', and not aws", prefix)
	}
	return &Backend{client: client, prefix: prefix, limiter: rate.NewLimiter(rate.Limit(ratePerSec), burst),
		pubs: map[string]crypto.PublicKey{}}, nil
}

// Algorithms reports every JWS algorithm: KMS has a key spec for each.
func (b *Backend) Algorithms() []backends.Algorithm { return backends.AllAlgorithms }

func (b *Backend) aliasPrefix(ring backends.KeyRing) string {
	return "alias/" + b.prefix + "/" + ring.Name + "/"
}

// alias is one version's alias.
type alias struct {
	n     int
	name  string
	keyID string
}

// aliases lists the ring's aliases, oldest version first, following pages.
func (b *Backend) aliases(ctx context.Context, ring backends.KeyRing) ([]alias, error) {
	prefix := b.aliasPrefix(ring)
	var out []alias
	p := kms.NewListAliasesPaginator(b.client, &kms.ListAliasesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, classify(err, "listing aliases")
		}
		for _, a := range page.Aliases {
			rest, ok := strings.CutPrefix(aws.ToString(a.AliasName), prefix)
			if !ok {
				continue
			}
			n, err := strconv.Atoi(rest)
			if err != nil || n < 1 || a.TargetKeyId == nil {
				continue
			}
			out = append(out, alias{n: n, name: aws.ToString(a.AliasName), keyID: aws.ToString(a.TargetKeyId)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n < out[j].n })
	return out, nil
}

// Versions describes the ring's keys; public keys come from the cache or,
// once per key, from GetPublicKey.
func (b *Backend) Versions(ctx context.Context, ring backends.KeyRing) ([]backends.Version, error) {
	if _, ok := keySpecs[ring.Algorithm]; !ok {
		return nil, errorf(backends.KindUnimplemented, "algorithm %q is not supported", ring.Algorithm)
	}
	as, err := b.aliases(ctx, ring)
	if err != nil {
		return nil, err
	}
	out := make([]backends.Version, 0, len(as))
	for _, a := range as {
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
	if md.KeySpec != keySpecs[ring.Algorithm] || md.KeyUsage != types.KeyUsageTypeSignVerify {
		return backends.Version{}, errorf(backends.KindFailedPrecondition,
			"%s points to a %s key for %s, but key ring %q needs a %s SIGN_VERIFY key for %s",
			a.name, md.KeySpec, md.KeyUsage, ring.Name, keySpecs[ring.Algorithm], ring.Algorithm)
	}
	disabled := md.KeyState != types.KeyStateEnabled
	b.mu.Lock()
	pub := b.pubs[arn]
	b.mu.Unlock()
	if pub == nil {
		// KMS refuses GetPublicKey on a disabled key, so the public key is
		// also kept in the key's description, which DescribeKey always shows.
		der, fromDescription := publicKeyFromDescription(aws.ToString(md.Description))
		if !fromDescription {
			out, err := b.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(arn)})
			if err != nil {
				return backends.Version{}, classify(err, "reading the public key of "+a.name)
			}
			der = out.PublicKey
		}
		var err error
		if pub, err = x509.ParsePKIXPublicKey(der); err != nil {
			return backends.Version{}, errorf(backends.KindUnknown, "public key of %s: %v", a.name, err)
		}
		if err := ring.Algorithm.CheckPublicKey(pub); err != nil {
			return backends.Version{}, errorf(backends.KindFailedPrecondition, "public key of %s: %v", a.name, err)
		}
		b.mu.Lock()
		b.pubs[arn] = pub
		b.mu.Unlock()
	}
	return backends.Version{ID: arn, Algorithm: ring.Algorithm, PublicKey: pub, Created: aws.ToTime(md.CreationDate), Disabled: disabled}, nil
}

// CreateVersion creates a KMS key and claims the next alias for it; the
// alias is the lock between replicas.
func (b *Backend) CreateVersion(ctx context.Context, ring backends.KeyRing, latest string) (backends.Version, error) {
	spec, ok := keySpecs[ring.Algorithm]
	if !ok {
		return backends.Version{}, errorf(backends.KindUnimplemented, "algorithm %q is not supported", ring.Algorithm)
	}
	as, err := b.aliases(ctx, ring)
	if err != nil {
		return backends.Version{}, err
	}
	n := 1
	if len(as) > 0 {
		last := as[len(as)-1]
		n = last.n + 1
		d, err := b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(last.keyID)})
		if err != nil {
			return backends.Version{}, classify(err, "describing "+last.name)
		}
		if arn := aws.ToString(d.KeyMetadata.Arn); arn != latest {
			return backends.Version{}, errorf(backends.KindConflict, "key ring %q changed: its newest version is %s, not %q", ring.Name, arn, latest)
		}
	} else if latest != "" {
		return backends.Version{}, errorf(backends.KindConflict, "key ring %q has no versions, not %q", ring.Name, latest)
	}
	name := b.aliasPrefix(ring) + strconv.Itoa(n)
	created, err := b.client.CreateKey(ctx, &kms.CreateKeyInput{
		KeySpec:     spec,
		KeyUsage:    types.KeyUsageTypeSignVerify,
		Description: aws.String(fmt.Sprintf("Signet key ring %s, version %d (%s)", ring.Name, n, ring.Algorithm)),
		Tags: []types.Tag{{TagKey: aws.String("signet:ring"), TagValue: aws.String(ring.Name)},
			{TagKey: aws.String("signet:version"), TagValue: aws.String(strconv.Itoa(n))}},
	})
	if err != nil {
		return backends.Version{}, classify(err, "creating a key for "+name)
	}
	arn := aws.ToString(created.KeyMetadata.Arn)
	pub, err := b.client.GetPublicKey(ctx, &kms.GetPublicKeyInput{KeyId: aws.String(arn)})
	if err == nil {
		_, err = b.client.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(arn),
			Description: aws.String(describe(ring, n, pub.PublicKey))})
	}
	if err == nil {
		_, err = b.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String(name), TargetKeyId: aws.String(arn)})
	}
	if err != nil {
		// Do not leave a key no alias reaches: schedule its deletion, with a
		// context of its own so that a caller's deadline does not leak it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		_, derr := b.client.ScheduleKeyDeletion(cctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(arn), PendingWindowInDays: aws.Int32(7)})
		cancel()
		var exists *types.AlreadyExistsException
		switch {
		case derr != nil:
			return backends.Version{}, errorf(backends.KindUnavailable,
				"created %s but could not claim %s (%v) nor schedule the key's deletion (%v): delete it by hand (tagged signet:ring=%s)",
				arn, name, err, derr, ring.Name)
		case errors.As(err, &exists):
			return backends.Version{}, errorf(backends.KindConflict, "key ring %q: %s was claimed concurrently; the key created here is scheduled for deletion", ring.Name, name)
		default:
			return backends.Version{}, classify(err, "claiming "+name+" (the key created for it is scheduled for deletion)")
		}
	}
	return b.version(ctx, ring, alias{n: n, name: name, keyID: arn})
}

const publicKeyMarker = " public key (PKIX, base64): "

// describe is a key's description: what owns it, and its public key, which
// must stay readable after the key is disabled.
func describe(ring backends.KeyRing, n int, pubDER []byte) string {
	return fmt.Sprintf("Signet key ring %s, version %d (%s);%s%s", ring.Name, n, ring.Algorithm, publicKeyMarker,
		base64.StdEncoding.EncodeToString(pubDER))
}

func publicKeyFromDescription(d string) ([]byte, bool) {
	_, b64, ok := strings.Cut(d, publicKeyMarker)
	if !ok {
		return nil, false
	}
	der, err := base64.StdEncoding.DecodeString(b64)
	return der, err == nil
}

// DisableVersion disables the version's KMS key.
func (b *Backend) DisableVersion(ctx context.Context, ring backends.KeyRing, versionID string) error {
	if !strings.HasPrefix(versionID, "arn:") {
		return errorf(backends.KindNotFound, "key ring %q has no version %q", ring.Name, versionID)
	}
	_, err := b.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(versionID)})
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
