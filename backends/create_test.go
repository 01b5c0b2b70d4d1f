package backends_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/signet-dev/signet/backends"
)

// script is a Protocol whose primitives do what a case says and record
// the order they ran in, and whether their context was already done.
type script struct {
	newest     string
	createErr  error
	resolveErr error // nil: the lost create is found carried out
	pickErr    error
	commitErr  error
	abandonErr error
	calls      []string
	cancel     context.CancelFunc // called by Create: the caller's deadline passes
}

func (s *script) note(ctx context.Context, name string) {
	if ctx.Err() != nil {
		name += "(done)"
	}
	s.calls = append(s.calls, name)
}

func (s *script) Newest(ctx context.Context) (string, error) {
	s.note(ctx, "Newest")
	return s.newest, nil
}
func (s *script) Claim(ctx context.Context) error { s.note(ctx, "Claim"); return nil }
func (s *script) Create(ctx context.Context) error {
	s.note(ctx, "Create")
	if s.cancel != nil {
		s.cancel()
	}
	return s.createErr
}
func (s *script) Resolve(ctx context.Context, err error) error {
	s.note(ctx, "Resolve")
	return s.resolveErr
}
func (s *script) Settle(ctx context.Context) error { s.note(ctx, "Settle"); return nil }
func (s *script) Pick(ctx context.Context) error   { s.note(ctx, "Pick"); return s.pickErr }
func (s *script) Commit(ctx context.Context) (backends.Version, error) {
	s.note(ctx, "Commit")
	if s.commitErr != nil {
		return backends.Version{}, s.commitErr
	}
	return backends.Version{ID: "2"}, nil
}
func (s *script) Abandon(ctx context.Context, lost bool) (string, error) {
	if lost {
		s.note(ctx, "Abandon(lost)")
	} else {
		s.note(ctx, "Abandon")
	}
	return "the candidate made here", s.abandonErr
}
func (s *script) Release(ctx context.Context) { s.note(ctx, "Release") }

func TestRotateRunsThePrimitivesInOrder(t *testing.T) {
	ring := backends.KeyRing{Name: "r", Algorithm: backends.ES256}
	unavailable := backends.Errorf(backends.KindUnavailable, "test", "no answer")
	cases := []struct {
		name  string
		s     *script
		calls string
		kind  backends.Kind // of the error; KindUnknown for none
		id    string
	}{
		{"won", &script{newest: "1"}, "Newest Claim Create Settle Pick Commit Release", backends.KindUnknown, "2"},
		{"changed", &script{newest: "0"}, "Newest", backends.KindConflict, ""},
		{"lost at pick", &script{newest: "1", pickErr: backends.Lost("3")},
			"Newest Claim Create Settle Pick Abandon(lost) Release", backends.KindConflict, ""},
		{"lost at commit", &script{newest: "1", commitErr: backends.Lost("")},
			"Newest Claim Create Settle Pick Commit Abandon(lost) Release", backends.KindConflict, ""},
		{"failed create", &script{newest: "1", createErr: unavailable, resolveErr: unavailable},
			"Newest Claim Create Resolve Abandon Release", backends.KindUnavailable, ""},
		{"lost cleanup", &script{newest: "1", pickErr: backends.Lost("3"), abandonErr: errors.New("token gone")},
			"Newest Claim Create Settle Pick Abandon(lost) Release", backends.KindUnavailable, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := backends.Rotate(context.Background(), backends.OpenOptions{}, "test", ring, "1", c.s)
			if got := strings.Join(c.s.calls, " "); got != c.calls {
				t.Errorf("calls %q, want %q", got, c.calls)
			}
			if k := backends.KindOf(err); (err == nil) != (c.kind == backends.KindUnknown) || err != nil && k != c.kind {
				t.Errorf("error %v (%v), want kind %v", err, k, c.kind)
			}
			if v.ID != c.id {
				t.Errorf("version %q, want %q", v.ID, c.id)
			}
			if c.kind == backends.KindConflict && c.s.pickErr != nil && !strings.Contains(err.Error(), "the candidate made here") {
				t.Errorf("a lost race does not say what became of the candidate: %v", err)
			}
		})
	}
}

// A create whose answer was lost because the caller's deadline passed is
// read back, decided and cleaned up on the detached context: none of that
// runs on a context that is already done.
func TestRotateDecidesALostCreateOnTheDetachedContext(t *testing.T) {
	ring := backends.KeyRing{Name: "r", Algorithm: backends.ES256}
	ctx, cancel := context.WithCancel(context.Background())
	s := &script{newest: "1", createErr: context.Canceled, cancel: cancel}
	v, err := backends.Rotate(ctx, backends.OpenOptions{}, "test", ring, "1", s)
	if err != nil || v.ID != "2" {
		t.Fatalf("Rotate: %q, %v; want the version the lost create made", v.ID, err)
	}
	if got, want := strings.Join(s.calls, " "), "Newest Claim Create Resolve Settle Pick Commit Release"; got != want {
		t.Errorf("calls %q, want %q (none after Create on a done context)", got, want)
	}
}
