package server

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/jose"
	"github.com/signet-dev/signet/server/lifecycle"
)

// ListKeys page sizes (AIP-158): page_size 0 means defaultPageSize, more
// than maxPageSize means maxPageSize.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// pageToken is where the previous page ended: after version ID of Ring.
// Should the ring no longer list that version, the page resumes at the
// first version created after Created or at the same time but not in Same
// (the ids of the versions created at Created up to ID: AWS KMS gives
// creation times to the second, so several versions may share one, and
// their ids are in no particular order). Query binds the token to the
// request it continues. Positions, not offsets: versions are only ever added
// at the end of a ring, so a rotation between pages moves nothing that a
// token points at.
//
// A token is not signed: it carries nothing a caller could not ask for
// outright (each page checks the rings it covers against the policy again,
// and Query holds the request to the same key_ring and states), so a forged
// one only chooses where a listing starts. What a forged token could cost
// is bounded instead (maxPageToken, maxSame), to what a real one costs: one
// pass over the ring's versions. Every replica reads every other's tokens,
// so paging through a load balancer works.
type pageToken struct {
	Query   string   `json:"q"`
	Ring    string   `json:"r"`
	ID      string   `json:"v"`
	Created int64    `json:"c"` // unix nanoseconds
	Same    []string `json:"s,omitempty"`
}

// maxSame bounds the ids a token carries of versions that share its
// version's creation time (the nearest ones, as many as fit maxPageToken: a
// ring with more versions created within the same second than that, whose
// token's version vanishes between two pages, may list a few of them
// twice); maxPageToken bounds a token's length before it is decoded.
const (
	maxSame      = 32
	maxPageToken = 8 << 10
)

// queryOf is what a page token must have been issued for: the same ring and
// state filter (leftovers come with the first page only).
func queryOf(req *signetv1.ListKeysRequest) string {
	states := make([]string, 0, len(req.GetStates()))
	for _, st := range req.GetStates() {
		states = append(states, st.String())
	}
	slices.Sort(states)
	sum := sha256.Sum256([]byte(req.GetKeyRing() + "\x00" + strings.Join(states, ",")))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

func (t pageToken) encode() string {
	b, _ := json.Marshal(t) // cannot fail: strings and an int
	return base64.RawURLEncoding.EncodeToString(b)
}

func badPageToken(msg string) error {
	return &requestError{code: codes.InvalidArgument, reason: signetv1.ErrorReason_FIELD_INVALID, field: "page_token",
		msg: "page_token " + msg + ": pass the next_page_token of the previous page, with the same key_ring and states, or start again without one"}
}

func decodePageToken(s, query string) (pageToken, error) {
	var t pageToken
	if len(s) > maxPageToken {
		return t, badPageToken("is not one this server issued")
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &t) != nil || t.Ring == "" || len(t.Same) > maxSame {
		return t, badPageToken("is not one this server issued")
	}
	if t.Query != query {
		return t, badPageToken("was issued for another key_ring or states")
	}
	return t, nil
}

// ListKeys lists versions with their derived states, a page at a time:
// rings in configuration order, oldest version first within each.
func (s *service) ListKeys(ctx context.Context, req *signetv1.ListKeysRequest) (*signetv1.ListKeysResponse, error) {
	const rpc = "ListKeys"
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, s.status(ctx, jose.Invalid("page_size", "page_size %d is negative", size))
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	for i, st := range req.GetStates() {
		if _, ok := signetv1.KeyState_name[int32(st)]; !ok || st == signetv1.KeyState_KEY_STATE_UNSPECIFIED {
			return nil, s.status(ctx, jose.Invalid(fmt.Sprintf("states[%d]", i), "states[%d]: %d is not a key state", i, st))
		}
	}
	rings, err := s.listable(ctx, req.GetKeyRing())
	if err != nil {
		return nil, s.refuseRing(ctx, rpc, req.GetKeyRing(), err)
	}
	query := queryOf(req)
	start := 0 // the ring to start in
	var after *pageToken
	if req.GetPageToken() != "" {
		t, err := decodePageToken(req.GetPageToken(), query)
		if err != nil {
			return nil, s.status(ctx, err)
		}
		start = slices.IndexFunc(rings, func(r *lifecycle.Ring) bool { return r.Name == t.Ring })
		if start < 0 {
			return nil, s.status(ctx, badPageToken("names a key ring this caller may not list"))
		}
		after = &t
	}
	resp := &signetv1.ListKeysResponse{}
	if req.GetLeftovers() && req.GetPageToken() == "" {
		// Each listing scans the backends: limited per caller.
		if err := s.authz.AllowLeftovers(callerOf(ctx)); err != nil {
			return nil, s.refuse(ctx, rpc, authz.Record{KeyRing: req.GetKeyRing()}, err)
		}
		if err := s.addLeftovers(ctx, rings, resp); err != nil {
			return nil, s.status(ctx, err)
		}
	}
	// The version examined last (listed or filtered out), vs[lastI] of
	// ring lastR: a full page's token resumes after it, in whichever ring
	// it was (the first version of a ring is not where to resume).
	var (
		lastR  *lifecycle.Ring
		lastVs []*lifecycle.Version
		lastI  int
	)
	for _, r := range rings[start:] {
		vs := s.ks.Versions(r)
		from := 0
		if after != nil {
			from = resumeAt(vs, *after)
			after = nil
		}
		for i := from; i < len(vs); i++ {
			if len(resp.Versions) == size {
				resp.NextPageToken = tokenAfter(query, lastR, lastVs, lastI).encode()
				return resp, nil
			}
			lastR, lastVs, lastI = r, vs, i
			kv := s.versionProto(r, vs[i])
			if len(req.GetStates()) == 0 || slices.Contains(req.GetStates(), kv.State) {
				resp.Versions = append(resp.Versions, kv)
			}
		}
	}
	return resp, nil
}

// resumeAt is the index in vs of the first version after the token's: the
// one after its id or, should the ring no longer list that id, the first
// created later.
func resumeAt(vs []*lifecycle.Version, t pageToken) int {
	if i := slices.IndexFunc(vs, func(v *lifecycle.Version) bool { return v.ID == t.ID }); i >= 0 {
		return i + 1
	}
	seen := make(map[string]bool, len(t.Same)+1) // at most maxSame+1: decodePageToken bounds Same
	seen[t.ID] = true
	for _, id := range t.Same {
		seen[id] = true
	}
	i := slices.IndexFunc(vs, func(v *lifecycle.Version) bool {
		c := v.Created.UnixNano()
		return c > t.Created || c == t.Created && !seen[v.ID]
	})
	if i < 0 {
		return len(vs)
	}
	return i
}

// listable returns the rings a ListKeys of ring (empty: all) covers for
// the caller: the ring if the caller may list it, or every ring it may.
func (s *service) listable(ctx context.Context, ring string) ([]*lifecycle.Ring, error) {
	if ring != "" {
		r, err := s.ring(ctx, "list", ring)
		if err != nil {
			return nil, err
		}
		return []*lifecycle.Ring{r}, nil
	}
	all := s.ks.Rings()
	names := make([]string, len(all))
	for i, r := range all {
		names[i] = r.Name
	}
	allowed, err := s.authz.AuthorizeList(callerOf(ctx), names)
	if err != nil {
		return nil, err
	}
	rings := make([]*lifecycle.Ring, 0, len(allowed))
	for _, r := range all { // configuration order
		if slices.Contains(allowed, r.Name) {
			rings = append(rings, r)
		}
	}
	return rings, nil
}

// addLeftovers asks each ring's backend what it holds that is not a version.
func (s *service) addLeftovers(ctx context.Context, rings []*lifecycle.Ring, resp *signetv1.ListKeysResponse) error {
	for _, r := range rings {
		ls, err := s.ks.Leftovers(ctx, r)
		if err != nil {
			return err
		}
		for _, l := range ls {
			lp := &signetv1.Leftover{KeyRing: r.Name, BackendId: l.ID, Kind: l.Kind, State: l.State}
			if !l.Created.IsZero() {
				lp.CreatedAt = timestamppb.New(l.Created)
			}
			resp.Leftovers = append(resp.Leftovers, lp)
		}
	}
	return nil
}

// tokenAfter is the page token that resumes after vs[i] of r.
func tokenAfter(query string, r *lifecycle.Ring, vs []*lifecycle.Version, i int) pageToken {
	t := pageToken{Query: query, Ring: r.Name, ID: vs[i].ID, Created: vs[i].Created.UnixNano()}
	for j := i - 1; j >= 0 && len(t.Same) < maxSame; j-- {
		if vs[j].Created.Equal(vs[i].Created) {
			t.Same = append(t.Same, vs[j].ID)
		}
	}
	// A token this server issues must be one it accepts: backend ids can be
	// long (a Cloud KMS version's resource name, a Key Vault URL), so the
	// farthest ids go until it fits maxPageToken.
	for len(t.Same) > 0 && len(t.encode()) > maxPageToken {
		t.Same = t.Same[:len(t.Same)-1]
	}
	return t
}
