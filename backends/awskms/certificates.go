package awskms

import (
	"context"
	"encoding/base64"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/signet-dev/signet/backends"
)

// Certificate chains live in the KMS key's description, after the public
// key that describe already keeps there: "...; x5c: " and the chain's
// certificates as standard base64 DER, comma-separated. Tags were the other
// place: but a tag value holds 256 characters and a certificate is 500 to
// 1,500 bytes of DER, while a description holds 8,192 characters, which
// fits a leaf and its CA certificate even for RSA-4096 (about 4,500
// characters with the public key). A chain that does not fit (a long Vault
// PKI chain of RSA certificates) is refused with KindFailedPrecondition,
// and the version has no chain (x5c.required decides what that means).
//
// UpdateKeyDescription has no compare-and-set: PutCertificates reads the
// description first and writes only if the chain is still the one the
// caller knew, but replicas racing in the same moment may both write; the
// last write is the one KMS keeps, and every replica publishes what it
// reads back by its next refresh.

const (
	chainMarker    = "; x5c: "
	descriptionMax = 8192
)

var _ backends.CertificateStore = (*Backend)(nil)

// chainFromDescription reads the chain a description holds; nil if none.
func chainFromDescription(d string) [][]byte {
	_, s, ok := strings.Cut(d, chainMarker)
	if !ok || s == "" {
		return nil
	}
	var chain [][]byte
	for _, c := range strings.Split(s, ",") {
		der, err := base64.StdEncoding.DecodeString(c)
		if err != nil {
			return nil // not a chain Signet wrote: none
		}
		chain = append(chain, der)
	}
	return chain
}

// PutCertificates stores chain in the description of the version's key if
// the chain there is old, and returns the chain the description holds
// afterwards.
func (b *Backend) PutCertificates(ctx context.Context, ring backends.KeyRing, versionID string, old, chain [][]byte) ([][]byte, error) {
	if len(chain) == 0 {
		return nil, errorf(backends.KindInvalidArgument, "an empty certificate chain")
	}
	d, err := b.description(ctx, ring, versionID)
	if err != nil {
		return nil, err
	}
	if cur := chainFromDescription(d); !backends.SameChain(cur, old) {
		return cur, nil
	}
	parts := make([]string, len(chain))
	for i, der := range chain {
		parts[i] = base64.StdEncoding.EncodeToString(der)
	}
	base, _, _ := strings.Cut(d, chainMarker)
	nd := base + chainMarker + strings.Join(parts, ",")
	if len(nd) > descriptionMax {
		return nil, errorf(backends.KindFailedPrecondition, "the certificate chain of %s does not fit in the key's description "+
			"(%d characters with the public key; KMS allows %d): use a shorter chain (fewer or smaller certificates)", versionID, len(nd), descriptionMax)
	}
	if _, err := b.client.UpdateKeyDescription(ctx, &kms.UpdateKeyDescriptionInput{KeyId: aws.String(versionID), Description: aws.String(nd)}); err != nil {
		return nil, classify(err, "storing the certificate chain of "+versionID)
	}
	if d, err = b.description(ctx, ring, versionID); err != nil {
		return nil, err
	}
	return chainFromDescription(d), nil
}

// description reads the description of a version's key, which must be
// Signet's for the ring.
func (b *Backend) description(ctx context.Context, ring backends.KeyRing, arn string) (string, error) {
	out, err := b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(arn)})
	if err != nil {
		return "", classify(err, "describing "+arn)
	}
	d := aws.ToString(out.KeyMetadata.Description)
	if !strings.HasPrefix(d, b.descriptionPrefix(ring)) {
		return "", errorf(backends.KindNotFound, "%s is not a version of key ring %q", arn, ring.Name)
	}
	return d, nil
}
