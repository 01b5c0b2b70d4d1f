package backends

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"testing"
)

func TestErrorfWrapsEveryCause(t *testing.T) {
	t.Parallel()
	pathErr := &fs.PathError{Op: "open", Path: "/k", Err: fs.ErrNotExist}
	err := Errorf(KindUnavailable, "local", "reading %s: %w (then %w)", "/k", pathErr, context.DeadlineExceeded)

	if got, want := err.Error(), "local: reading /k: open /k: file does not exist (then context deadline exceeded)"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if KindOf(err) != KindUnavailable || !errors.Is(err, ErrUnavailable) {
		t.Errorf("kind %v, want unavailable", KindOf(err))
	}
	for _, target := range []error{fs.ErrNotExist, context.DeadlineExceeded} {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(err, %v) = false: the cause was dropped", target)
		}
	}
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe != pathErr {
		t.Errorf("errors.As finds %v, want the wrapped *fs.PathError", pe)
	}
	if errors.Is(err, os.ErrPermission) {
		t.Error("errors.Is finds a cause that was never wrapped")
	}
}

func TestErrorfCauses(t *testing.T) {
	t.Parallel()
	cause := errors.New("cause")
	tests := []struct {
		name string
		err  error
		want []error // what errors.Is must find
	}{
		{"no %w", Errorf(KindUnknown, "x", "plain %v", cause), nil},
		{"one %w", Errorf(KindUnknown, "x", "one: %w", cause), []error{cause}},
		{"a nested backend error", Errorf(KindUnknown, "x", "outer: %w", Errorf(KindNotFound, "y", "inner: %w", cause)),
			[]error{cause, ErrNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := tt.err.(*Error)
			if tt.want == nil && e.Err != nil {
				t.Errorf("Err = %v, want nil without %%w", e.Err)
			}
			if tt.want == nil && errors.Is(tt.err, cause) {
				t.Error("an operand formatted without w is wrapped")
			}
			for _, w := range tt.want {
				if !errors.Is(tt.err, w) {
					t.Errorf("errors.Is(err, %v) = false", w)
				}
			}
		})
	}
	// The outermost kind wins.
	if k := KindOf(tests[2].err); k != KindUnknown {
		t.Errorf("KindOf a wrapped not-found = %v, want the outer unknown", k)
	}
}
