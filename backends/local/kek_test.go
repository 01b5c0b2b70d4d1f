package local

import (
	"context"
	"sync"
	"testing"

	"github.com/signet-dev/signet/backends"
)

// Replicas opening the same empty directory together, with no KEK in the
// environment, agree on the one KEK the first of them generated
// (regression: the others failed to start).
func TestConcurrentFirstOpensShareTheGeneratedKEK(t *testing.T) {
	dir := t.TempDir()
	stores := make([]*Store, 4)
	errs := make([]error, len(stores))
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() {
			stores[i], errs[i] = Open(dir, backends.OpenOptions{Getenv: func(string) string { return "" }})
		})
	}
	wg.Wait()
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("open %d: %v", i, errs[i])
		}
		defer s.Close()
	}
	v, err := stores[0].CreateVersion(context.Background(), certRing, "")
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range stores[1:] {
		if _, err := s.Sign(context.Background(), certRing, v.ID, []byte("x")); err != nil {
			t.Errorf("store %d cannot use a key another made: %v", i+1, err)
		}
	}
}
