package telemetry

import (
	"runtime"
	"testing"
)

// Build prefers what -ldflags set, and never answers an empty string.
func TestBuild(t *testing.T) {
	defer func(v, c string) { Version, Commit = v, c }(Version, Commit)

	Version, Commit = "", ""
	b := Build()
	if b.Version == "" || b.Commit == "" || b.GoVersion != runtime.Version() {
		t.Errorf("without -ldflags: %+v", b)
	}
	Version, Commit = "v1.2.3", "0123abc"
	if b := Build(); b.Version != "v1.2.3" || b.Commit != "0123abc" {
		t.Errorf("with Version and Commit set: %+v", b)
	}
}
