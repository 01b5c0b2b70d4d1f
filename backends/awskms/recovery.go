package awskms

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/signet-dev/signet/backends"
)

// Recovery after an interrupted rotation (backends/recovery.go states the
// contract). A rotation to version n of a ring with versions is
//
//	CreateAlias  alias/<prefix>/<ring>/rotating -> the newest version's key
//	CreateKey    tagged signet:ring, signet:version=n, signet:alias-prefix
//	UpdateAlias  alias/<prefix>/<ring>/rotating -> the new key
//	GetPublicKey, UpdateKeyDescription
//	CreateAlias  alias/<prefix>/<ring>/<n> -> the new key      (the commit)
//	DeleteAlias  alias/<prefix>/<ring>/rotating
//
// The intent alias ("rotating") is the lock between rotating replicas and
// the evidence of a rotation in progress; every replica sees it at no extra
// cost in the ListAliases that listing the versions already does. Once a
// replica has seen the same intent alias for longer than the grace, the
// rotation that made it is over (its calls are bounded by backend_timeout,
// and the clean-up of its own failure by as much again), and the replica
// rolls it back:
//
//   - the intent targets a key created after it that is not a version (the
//     rotation died after UpdateAlias): that key's deletion is scheduled;
//   - it targets a version's key created after it: the rotation committed
//     and only the DeleteAlias was lost;
//   - it targets the previous version's key (the rotation died between
//     CreateAlias and UpdateAlias, perhaps after CreateKey): only then is the
//     account's key list scanned, for keys tagged with the ring, the alias
//     prefix and version n, created no earlier than the intent alias, that
//     no version alias reaches; their deletion is scheduled;
//
// and then deletes the intent alias. Roll back, never forward: a key whose
// rotation died never becomes a version, whichever replica finds it, so a
// crash-looping rotation cannot publish a key that was never published ahead
// of signing. Its deletion is scheduled with KMS's shortest waiting period, 7
// days, during which an operator can cancel it.
//
// A ring's first version has no earlier key to put the intent alias on.
// Creating it, and listing a ring that has no versions, scan the account's
// keys for keys tagged with the ring and the alias prefix; each is a key an
// earlier attempt created and died before aliasing. Keys this replica has
// seen for longer than the grace are scheduled for deletion; while one is
// younger (perhaps another replica's creation in flight), creating the first
// version answers Conflict and the caller retries. So a scan costs once per
// ring creation, plus once per interrupted rotation that died before
// UpdateAlias, never on an ordinary refresh.
//
// Scans are bounded and rate-limited: ListKeys pages, then one DescribeKey
// per key this process has not described before (a key whose description is
// not the ring's is passed over), and ListResourceTags for those whose
// description is, paced by scan_rate calls per second; a scan that cannot
// finish within its context is taken up again at the next refresh, from the
// keys already described. A key is the ring's only if it carries all three
// tags, so keys made by anything else, by another deployment (another alias
// prefix) or by Signet before these tags existed are never touched.

// keyInfo is what a scan learnt of a key.
type keyInfo struct {
	arn     string
	ours    bool // tagged for some ring under this alias prefix
	ring    string
	version int
	created time.Time
	state   types.KeyState
}

// recover cleans up after an interrupted rotation of the ring, if the
// aliases hold evidence of one. Failures are logged: the next refresh tries
// again.
func (b *Backend) recover(ctx context.Context, ring backends.KeyRing, ra ringAliases) {
	var err error
	switch {
	case ra.intent != nil:
		err = b.recoverIntent(ctx, ring, ra)
	case len(ra.versions) == 0:
		err = b.recoverFirst(ctx, ring, false)
	}
	if err != nil && ctx.Err() == nil {
		b.opts.Logger.Warn("awskms: cleaning up after an interrupted rotation failed; the next refresh tries again",
			"key_ring", ring.Name, "err", err)
	}
}

func intentSighting(in *alias) string {
	if in.created.IsZero() {
		return "intent " + in.name + " -> " + in.keyID
	}
	return "intent " + in.name + " @" + in.created.UTC().Format(time.RFC3339Nano)
}

func (b *Backend) recoverIntent(ctx context.Context, ring backends.KeyRing, ra ringAliases) error {
	in := ra.intent
	sighting := intentSighting(in)
	if !b.seen.Stale(sighting, b.now(), b.opts.Grace()) {
		return nil // perhaps a rotation in flight
	}
	d, err := b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(in.keyID)})
	if err != nil {
		return classify(err, "describing the target of "+in.name)
	}
	md := d.KeyMetadata
	target := aws.ToString(md.Arn)
	createdAfter := !in.created.IsZero() && !aws.ToTime(md.CreationDate).Before(in.created)
	switch {
	case ra.isVersion(aws.ToString(md.KeyId)) && createdAfter:
		// Committed; only the DeleteAlias was lost.
	case !ra.isVersion(aws.ToString(md.KeyId)):
		info, err := b.describe(ctx, ring, aws.ToString(md.KeyId), true)
		if err != nil {
			return err
		}
		if info.ours && info.ring == ring.Name && info.state != types.KeyStatePendingDeletion {
			if err := b.scheduleDeletion(ctx, target); err != nil {
				return classify(err, "scheduling the deletion of "+target)
			}
			b.opts.Recovered(Scheme, backends.RecoveredScheduledDeletion, target,
				fmt.Sprintf("key of an interrupted rotation of ring %s (%s targets it, no version alias does)", ring.Name, in.name))
		}
	default:
		// Died before UpdateAlias: the only case that needs a scan.
		n := ra.newest() + 1
		cands, complete, err := b.scan(ctx, ring, func(k keyInfo) bool {
			return k.version == n && (in.created.IsZero() || !k.created.Before(in.created))
		})
		if err != nil {
			return err
		}
		for _, k := range cands {
			if ra.isVersion(keyIDOf(k.arn)) || k.state == types.KeyStatePendingDeletion {
				continue
			}
			if err := b.scheduleDeletion(ctx, k.arn); err != nil {
				return classify(err, "scheduling the deletion of "+k.arn)
			}
			b.markPending(k.arn)
			b.opts.Recovered(Scheme, backends.RecoveredScheduledDeletion, k.arn,
				fmt.Sprintf("key of an interrupted rotation of ring %s to version %d, found by a scan after %s stayed", ring.Name, n, in.name))
		}
		if !complete {
			return nil // the next refresh scans on
		}
	}
	// Delete the intent only if it is still the one this clean-up is about:
	// while it worked, another replica may have deleted it and a new
	// rotation claimed it again, and deleting that new intent would lose the
	// only evidence of its key if that rotation died too (the crash-loop
	// end-to-end test found exactly that). KMS has no conditional
	// DeleteAlias; the check narrows the window to one round trip.
	now, err := b.aliases(ctx, ring)
	if err != nil {
		return err
	}
	if now.intent == nil || intentSighting(now.intent) != sighting {
		b.seen.Forget(sighting)
		return nil
	}
	if err := b.deleteAlias(ctx, in.name); err != nil {
		return classify(err, "deleting "+in.name)
	}
	b.seen.Forget(sighting)
	b.opts.Recovered(Scheme, backends.RecoveredRemoved, in.name, "intent alias of a rotation that is over")
	return nil
}

// recoverFirst schedules the deletion of the keys that attempts to create
// the ring's first version left, once seen for longer than the grace. With
// strict (before creating the first version), a key still too young, or a
// scan that could not finish, is a Conflict: the caller retries.
func (b *Backend) recoverFirst(ctx context.Context, ring backends.KeyRing, strict bool) error {
	cands, complete, err := b.scan(ctx, ring, func(keyInfo) bool { return true })
	if err != nil {
		return err
	}
	var young []string
	for _, k := range cands {
		if k.state == types.KeyStatePendingDeletion {
			continue
		}
		done, err := b.opts.Reap(&b.seen, "key "+k.arn, func() error {
			if err := b.scheduleDeletion(ctx, k.arn); err != nil {
				return classify(err, "scheduling the deletion of "+k.arn)
			}
			b.markPending(k.arn)
			return nil
		}, Scheme, backends.RecoveredScheduledDeletion, k.arn,
			fmt.Sprintf("key of an interrupted creation of ring %s's first version (ring has no version)", ring.Name))
		if err != nil {
			return err
		}
		if !done {
			young = append(young, k.arn)
		}
	}
	switch {
	case !strict:
		return nil
	case len(young) > 0:
		return errorf(backends.KindConflict, "key ring %q has no version yet but holds %s, which another replica may be making its first version; if its creation was interrupted it is cleaned up within 2 x backend_timeout: retry",
			ring.Name, strings.Join(young, ", "))
	case !complete:
		return errorf(backends.KindConflict, "key ring %q: the scan for keys of earlier attempts at its first version did not finish (scan_rate); retry", ring.Name)
	}
	return nil
}

func (b *Backend) markPending(arn string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, k := range b.described {
		if k.arn == arn {
			k.state = types.KeyStatePendingDeletion
			b.described[id] = k
		}
	}
}

// scan lists the account's keys and returns those tagged for the ring
// under this alias prefix that match, oldest first, and whether every key
// was examined. It is paced by scanLimiter and stops, incomplete, when its
// context would end before the next call.
func (b *Backend) scan(ctx context.Context, ring backends.KeyRing, match func(keyInfo) bool) ([]keyInfo, bool, error) {
	var out []keyInfo
	p := kms.NewListKeysPaginator(b.client, &kms.ListKeysInput{Limit: aws.Int32(1000)})
	for p.HasMorePages() {
		if b.scanLimiter.Wait(ctx) != nil {
			return out, false, nil
		}
		page, err := p.NextPage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return out, false, nil
			}
			return nil, false, classify(err, "listing keys")
		}
		for _, k := range page.Keys {
			info, err := b.describe(ctx, ring, aws.ToString(k.KeyId), false)
			if errors.Is(err, errScanPaused) {
				return out, false, nil
			}
			if err != nil {
				return nil, false, err
			}
			if info.ours && info.ring == ring.Name && match(info) {
				out = append(out, info)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].created.Before(out[j].created) })
	return out, true, nil
}

var errScanPaused = errors.New("scan paused")

// keyIDOf is the key id at the end of a key ARN.
func keyIDOf(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

// signetDescription starts the description of every key Signet creates.
const signetDescription = "Signet key ring "

// describe learns what a key is, from the cache or from DescribeKey and,
// for a key whose description is Signet's, ListResourceTags. fresh ignores
// the cache.
func (b *Backend) describe(ctx context.Context, ring backends.KeyRing, keyID string, fresh bool) (keyInfo, error) {
	b.mu.Lock()
	info, ok := b.described[keyID]
	b.mu.Unlock()
	if ok && !fresh && (!info.ours || info.ring != ring.Name || info.state == types.KeyStatePendingDeletion) {
		return info, nil // not the ring's, or done with: neither changes
	}
	if b.scanLimiter.Wait(ctx) != nil {
		return keyInfo{}, errScanPaused
	}
	d, err := b.client.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	var nf *types.NotFoundException
	switch {
	case errors.As(err, &nf):
		return keyInfo{}, nil
	case err != nil && ctx.Err() != nil:
		return keyInfo{}, errScanPaused
	case err != nil:
		return keyInfo{}, classify(err, "describing "+keyID)
	}
	md := d.KeyMetadata
	info = keyInfo{arn: aws.ToString(md.Arn), created: aws.ToTime(md.CreationDate), state: md.KeyState}
	if md.KeyManager == types.KeyManagerTypeCustomer && strings.HasPrefix(aws.ToString(md.Description), signetDescription) {
		if b.scanLimiter.Wait(ctx) != nil {
			return keyInfo{}, errScanPaused
		}
		tags, err := b.client.ListResourceTags(ctx, &kms.ListResourceTagsInput{KeyId: aws.String(keyID)})
		if err != nil {
			if ctx.Err() != nil {
				return keyInfo{}, errScanPaused
			}
			return keyInfo{}, classify(err, "listing the tags of "+keyID)
		}
		t := map[string]string{}
		for _, tag := range tags.Tags {
			t[aws.ToString(tag.TagKey)] = aws.ToString(tag.TagValue)
		}
		n, err := strconv.Atoi(t[tagVersion])
		if err == nil && n >= 1 && t[tagRing] != "" && t[tagAliasPrefix] == b.prefix {
			info.ours, info.ring, info.version = true, t[tagRing], n
		}
	}
	b.mu.Lock()
	b.described[keyID] = info
	b.mu.Unlock()
	return info, nil
}

// Leftovers lists the ring's keys that no version alias reaches (awaiting
// clean-up, or scheduled for deletion) and its intent alias. It scans the
// account's keys, at scan_rate.
func (b *Backend) Leftovers(ctx context.Context, ring backends.KeyRing) ([]backends.Leftover, error) {
	ra, err := b.aliases(ctx, ring)
	if err != nil {
		return nil, err
	}
	var out []backends.Leftover
	if in := ra.intent; in != nil {
		out = append(out, backends.Leftover{ID: in.name, Kind: "intent alias of a rotation in progress or interrupted (targets " + in.keyID + ")",
			State: "deleted once stale", Created: in.created})
	}
	// Keys pending deletion stay listed: refresh what the cache says.
	b.mu.Lock()
	for id, k := range b.described {
		if k.ours && k.ring == ring.Name {
			delete(b.described, id)
		}
	}
	b.mu.Unlock()
	keys, complete, err := b.scan(ctx, ring, func(keyInfo) bool { return true })
	if err != nil {
		return nil, err
	}
	if !complete {
		return nil, errorf(backends.KindUnavailable, "the scan of the account's keys did not finish in time (scan_rate); retry with a longer --timeout")
	}
	for _, k := range keys {
		if ra.isVersion(keyIDOf(k.arn)) {
			continue
		}
		l := backends.Leftover{ID: k.arn, Kind: fmt.Sprintf("key created for version %d that no version alias reaches", k.version),
			State: "awaiting clean-up", Created: k.created}
		if k.state == types.KeyStatePendingDeletion {
			l.State = "scheduled for deletion"
		}
		out = append(out, l)
	}
	return out, nil
}
