package telemetry

import (
	"runtime"
	"runtime/debug"
)

// Version and Commit say which Signet this is. `make build` (and the
// container image, deploy/Dockerfile) sets them with
//
//	-ldflags "-X github.com/signet-dev/signet/server/telemetry.Version=v1.2.3
//	          -X github.com/signet-dev/signet/server/telemetry.Commit=<git commit>"
//
// Left empty, Build reads them from the binary's build information: the
// main module's version and the VCS revision the go command stamped, if any.
// They feed signet_build_info, the traces' service.version and
// `signet version`; nothing else should read them.
var (
	Version = ""
	Commit  = ""
)

// BuildInfo is what `signet version` prints and signet_build_info carries.
type BuildInfo struct {
	Version   string // "(devel)" for a plain `go build` without VCS stamping
	Commit    string // "unknown" when neither -ldflags nor the go command set it
	GoVersion string // runtime.Version()
}

// Build returns Version and Commit, or, where they are empty, what
// debug.ReadBuildInfo knows.
func Build() BuildInfo {
	b := BuildInfo{Version: Version, Commit: Commit, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "" {
			b.Version = bi.Main.Version
		}
		if b.Commit == "" {
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					b.Commit = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if b.Commit != "" && modified {
				b.Commit += "-dirty"
			}
		}
	}
	if b.Version == "" {
		b.Version = "(devel)"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}
