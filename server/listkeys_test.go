package server

import (
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
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
