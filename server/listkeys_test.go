package server

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/lifecycle"
)

// TestPageResumesAfterAVanishedVersion: a page token whose version the
// ring no longer lists resumes at the next version, even when versions
// share its creation time (AWS KMS gives seconds) and their ids are in no
// order: none of them is skipped, none repeated.
func TestPageResumesAfterAVanishedVersion(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	v := func(id string, at time.Duration) *lifecycle.Version {
		return &lifecycle.Version{Version: backends.Version{ID: id, Created: t0.Add(at)}}
	}
	// Ids out of order within the second on purpose.
	all := []*lifecycle.Version{v("m", 0), v("z", time.Second), v("c", time.Second), v("q", time.Second), v("a", time.Second), v("e", 2*time.Second)}
	for i := range all[:len(all)-1] {
		tok := tokenAfter("q", &lifecycle.Ring{Name: "r"}, all, i)
		// The version the token names vanishes.
		left := append(append([]*lifecycle.Version(nil), all[:i]...), all[i+1:]...)
		got := resumeAt(left, tok)
		if want := i; got != want { // the version after it now sits where it was
			t.Errorf("token after %s (gone): resumes at %d (%s), want %d (%s)", all[i].ID, got, left[min(got, len(left)-1)].ID, want, left[want].ID)
		}
		if got := resumeAt(all, tok); got != i+1 {
			t.Errorf("token after %s (still listed): resumes at %d, want %d", all[i].ID, got, i+1)
		}
	}
}

// TestListKeysPagingAcrossRings pages through three rings of 3, 1 and 4
// versions with every page size from 1 to past the total, with and without
// a state filter: every version comes exactly once, in the order of an
// unpaged listing. Page size 1 used to panic (index out of range [-1])
// whenever a page filled at the last version of a ring.
func TestListKeysPagingAcrossRings(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t, backends.ES256, backends.EdDSA, backends.ES384), Options{})
	ctx := ctxT(t)
	for ring, rotations := range map[string]int{"default": 2, "ring-es384": 3} {
		for range rotations {
			if _, err := ts.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: ring}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, states := range [][]signetv1.KeyState{nil, {signetv1.KeyState_KEY_STATE_PENDING},
		{signetv1.KeyState_KEY_STATE_ACTIVE}, {signetv1.KeyState_KEY_STATE_RETIRED}} {
		all, err := ts.client.ListKeys(ctx, &signetv1.ListKeysRequest{States: states})
		if err != nil || all.GetNextPageToken() != "" {
			t.Fatalf("unpaged %v: %v, token %q", states, err, all.GetNextPageToken())
		}
		var want []string
		for _, v := range all.GetVersions() {
			want = append(want, v.GetKeyRing()+"/"+v.GetKid())
		}
		if states == nil && len(want) != 8 {
			t.Fatalf("unpaged listing has %d versions, want 8: %v", len(want), want)
		}
		for size := 1; size <= 9; size++ {
			var got []string
			req := &signetv1.ListKeysRequest{States: states, PageSize: int32(size)}
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatalf("states %v, page size %d: still paging after %d pages", states, size, pages)
				}
				resp, err := ts.client.ListKeys(ctx, req)
				if err != nil {
					t.Fatalf("states %v, page size %d, page %d: %v", states, size, pages, err)
				}
				if len(resp.GetVersions()) > size {
					t.Fatalf("page of %d versions, page size %d", len(resp.GetVersions()), size)
				}
				for _, v := range resp.GetVersions() {
					got = append(got, v.GetKeyRing()+"/"+v.GetKid())
				}
				if resp.GetNextPageToken() == "" {
					break
				}
				req.PageToken = resp.GetNextPageToken()
			}
			if !slices.Equal(got, want) {
				t.Errorf("states %v, page size %d:\n got %v\nwant %v", states, size, got, want)
			}
		}
	}
}

// FuzzPageToken feeds arbitrary page tokens (a caller's input) to the
// decoder and the resume: refused or accepted, never a panic; an accepted
// one is bounded (maxSame) and resumes within the ring; every token the
// server issues decodes to itself.
func FuzzPageToken(f *testing.F) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var vs []*lifecycle.Version
	for i, at := range []int{0, 1, 1, 1, 2, 3} {
		vs = append(vs, &lifecycle.Version{Version: backends.Version{ID: string(rune('a' + i)), Created: t0.Add(time.Duration(at) * time.Second)}})
	}
	ring := &lifecycle.Ring{Name: "r"}
	for i := range vs {
		f.Add(tokenAfter("q", ring, vs, i).encode())
	}
	f.Add("")
	f.Add("eyJxIjoicSIsInIiOiJyIiwidiI6InoiLCJjIjotMSwicyI6bnVsbH0")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := decodePageToken(s, "q")
		if err != nil {
			return
		}
		if len(tok.Same) > maxSame || len(s) > maxPageToken {
			t.Fatalf("accepted a token beyond the bounds: %d ids, %d bytes", len(tok.Same), len(s))
		}
		if i := resumeAt(vs, tok); i < 0 || i > len(vs) {
			t.Fatalf("resumes at %d of %d", i, len(vs))
		}
		again, err := decodePageToken(tok.encode(), "q")
		if err != nil || !slices.Equal(again.Same, tok.Same) || again.ID != tok.ID || again.Created != tok.Created || again.Ring != tok.Ring {
			t.Fatalf("re-encoded token %+v decodes to %+v, %v", tok, again, err)
		}
	})
}

// TestForgedPageTokenBounded: a forged token with a huge list of ids is
// refused before any work (its cost would grow with the list), and the
// tokens the server issues never carry more than maxSame ids, however many
// versions share a creation time.
func TestForgedPageTokenBounded(t *testing.T) {
	same := make([]string, 10000)
	for i := range same {
		same[i] = "v" + strconv.Itoa(i)
	}
	forged := pageToken{Query: "q", Ring: "r", ID: "x", Same: same}.encode()
	if _, err := decodePageToken(forged, "q"); err == nil {
		t.Error("a token with 10000 ids was accepted")
	}
	if _, err := decodePageToken(strings.Repeat("A", maxPageToken+1), "q"); err == nil {
		t.Error("an oversized token was accepted")
	}
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var vs []*lifecycle.Version
	for i := range 100 {
		vs = append(vs, &lifecycle.Version{Version: backends.Version{ID: strconv.Itoa(i), Created: t0}})
	}
	tok := tokenAfter("q", &lifecycle.Ring{Name: "r"}, vs, 99)
	if len(tok.Same) != maxSame {
		t.Errorf("token carries %d ids, want %d", len(tok.Same), maxSame)
	}
	if _, err := decodePageToken(tok.encode(), "q"); err != nil {
		t.Errorf("an issued token is refused: %v", err)
	}
}

// TestLongIDsPageToken: versions with long backend ids (Cloud KMS resource
// names run to a few hundred bytes) sharing a creation time still get a
// page token the server accepts back, keeping as many of the nearest ids as
// fit.
func TestLongIDsPageToken(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	var vs []*lifecycle.Version
	for i := range maxSame + 8 {
		id := "projects/" + strings.Repeat("p", 30) + "/locations/europe-west1/keyRings/" + strings.Repeat("r", 63) +
			"/cryptoKeys/" + strings.Repeat("k", 63) + "/cryptoKeyVersions/" + strconv.Itoa(i)
		vs = append(vs, &lifecycle.Version{Version: backends.Version{ID: id, Created: t0}})
	}
	tok := tokenAfter("q", &lifecycle.Ring{Name: "r"}, vs, len(vs)-1)
	got, err := decodePageToken(tok.encode(), "q")
	if err != nil {
		t.Fatalf("the server refuses its own token (%d bytes, %d ids): %v", len(tok.encode()), len(tok.Same), err)
	}
	if len(got.Same) == 0 || got.Same[0] != vs[len(vs)-2].ID {
		t.Errorf("the token kept %d ids, not starting with the nearest", len(got.Same))
	}
}
