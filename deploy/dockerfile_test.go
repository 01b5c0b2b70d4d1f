package deploy

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerui"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/opencontainers/go-digest"

	"github.com/signet-dev/signet/server/config"
)

// The targets of deploy/Dockerfile: the static image (the default, so the
// last stage) and the cgo one with the PKCS#11 backend.
const (
	staticTarget = "static"
	pkcs11Target = "pkcs11"
)

type dockerfile struct {
	stages []instructions.Stage
	byName map[string]*instructions.Stage
}

func parseDockerfile(t *testing.T) (dockerfile, []byte) {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile parser warning: %s (line %d)", w.Short, w.Location.Start.Line)
	}
	var warnings []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		warnings = append(warnings, fmt.Sprintf("%s: %s (line %d)", rule, msg, loc[0].Start.Line))
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range warnings {
		t.Errorf("Dockerfile: %s", w)
	}
	if len(metaArgs) > 0 {
		t.Errorf("ARG before the first FROM (%v): base images are written out, pinned, not arguments", metaArgs[0].Args)
	}
	d := dockerfile{stages: stages, byName: map[string]*instructions.Stage{}}
	for i := range stages {
		s := &stages[i]
		if s.Name == "" {
			t.Errorf("stage %d (FROM %s) has no name: every stage is named, the targets after their image", i, s.BaseName)
			continue
		}
		if d.byName[s.Name] != nil {
			t.Errorf("two stages are named %q", s.Name)
		}
		d.byName[s.Name] = s
	}
	return d, data
}

// TestDockerfileLint runs BuildKit's own checks over every target, as
// `docker build --check` does: the Dockerfile front end's lint rules and its
// conversion of each stage, without a daemon and without pulling anything.
func TestDockerfileLint(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"", staticTarget, pkcs11Target} {
		resolver := &offlineResolver{}
		res, err := dockerfile2llb.DockerfileLint(context.Background(), data, dockerfile2llb.ConvertOpt{
			Config: dockerui.Config{Target: target, BuildArgs: map[string]string{
				"VERSION": "v1.2.3", "COMMIT": "0123abc", "SOURCE_DATE_EPOCH": "1700000000"}},
			SourceMap:    &llb.SourceMap{Filename: "deploy/Dockerfile", Language: "Dockerfile", Data: data, Definition: &llb.Definition{}},
			MetaResolver: resolver,
		})
		if err != nil {
			t.Fatalf("target %q: %v", target, err)
		}
		if res.Error != nil {
			t.Errorf("target %q: %s", target, res.Error.Message)
		}
		for _, w := range res.Warnings {
			t.Errorf("target %q: %s: %s (%s)", target, w.RuleName, w.Detail, w.URL)
		}
		if len(resolver.refs) == 0 {
			t.Errorf("target %q: no base image was resolved", target)
		}
		for _, ref := range resolver.refs {
			if !strings.Contains(ref, "@sha256:") {
				t.Errorf("target %q: the build would resolve %s, which is not pinned", target, ref)
			}
		}
	}
}

// offlineResolver stands in for the registry: BuildKit asks it for each
// base image's configuration, and it records the reference and answers an
// empty Linux image, so that linting needs no network.
type offlineResolver struct{ refs []string }

func (r *offlineResolver) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	r.refs = append(r.refs, ref)
	var dgst digest.Digest
	if _, d, ok := strings.Cut(ref, "@"); ok {
		dgst = digest.Digest(d)
	}
	return ref, dgst, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"},"config":{}}`), nil
}

var pinnedImage = regexp.MustCompile(`^([a-z0-9][a-z0-9._/-]*):([A-Za-z0-9][A-Za-z0-9._-]*)@sha256:[0-9a-f]{64}$`)

// TestDockerfileInvariants: what the image must be whatever else changes.
func TestDockerfileInvariants(t *testing.T) {
	t.Parallel()
	d, _ := parseDockerfile(t)
	if len(d.stages) == 0 {
		t.Fatal("no stages")
	}
	if last := d.stages[len(d.stages)-1].Name; last != staticTarget {
		t.Errorf("the last stage, which `docker build` builds without --target, is %q, want %q", last, staticTarget)
	}
	goVersion := goDirective(t)
	seen := map[string]bool{}
	for _, s := range d.stages {
		switch base := s.BaseName; {
		case base == "scratch" || seen[base]:
		case strings.Contains(base, "$"):
			t.Errorf("stage %s: FROM %s: a base image from a build argument is not pinned", s.Name, base)
		default:
			m := pinnedImage.FindStringSubmatch(base)
			if m == nil {
				t.Errorf("stage %s: FROM %s: pin base images as name:tag@sha256:digest", s.Name, base)
				continue
			}
			if m[2] == "latest" {
				t.Errorf("stage %s: FROM %s: no latest tags", s.Name, base)
			}
			if m[1] == "golang" && !strings.HasPrefix(m[2], goVersion+"-") && m[2] != goVersion {
				t.Errorf("stage %s: FROM %s: the toolchain is not go.mod's go %s (GOTOOLCHAIN=local builds with the image's)", s.Name, base, goVersion)
			}
		}
		seen[s.Name] = true
		for _, c := range s.Commands {
			if c.Name() == "add" {
				t.Errorf("stage %s: ADD (it fetches URLs and unpacks archives): use COPY", s.Name)
			}
		}
	}

	makeTags, makeVars := makefileBuildFlags(t)
	for _, target := range []string{staticTarget, pkcs11Target} {
		s := d.byName[target]
		if s == nil {
			t.Errorf("no %q target", target)
			continue
		}
		if s.BaseName != "scratch" {
			t.Errorf("target %s: FROM %s: the final image starts empty (no shell, no package manager)", target, s.BaseName)
		}
		var user string
		var entrypoint, cmd *instructions.ShellDependantCmdLine
		var hasBinary bool
		var exposed []string
		var buildStages []string
		for _, c := range s.Commands {
			switch c := c.(type) {
			case *instructions.RunCommand:
				t.Errorf("target %s: RUN %v: the final image has no shell to run it", target, c.CmdLine)
			case *instructions.UserCommand:
				user = c.User
			case *instructions.EntrypointCommand:
				entrypoint = &c.ShellDependantCmdLine
			case *instructions.CmdCommand:
				cmd = &c.ShellDependantCmdLine
			case *instructions.ExposeCommand:
				exposed = append(exposed, c.Ports...)
			case *instructions.CopyCommand:
				if c.From == "" || d.byName[c.From] == nil {
					t.Errorf("target %s: COPY %v: copy only from the build stages, not from the context", target, c.SourcePaths)
					continue
				}
				buildStages = append(buildStages, c.From)
				if c.DestPath == "/signet" || c.DestPath == "/" && slices.Contains(c.SourcePaths, "/rootfs/") {
					hasBinary = true
				}
			}
		}
		if !hasBinary {
			t.Errorf("target %s: nothing copies the binary to /signet", target)
		}
		uid, gid, ok := strings.Cut(user, ":")
		if u, err := strconv.Atoi(uid); err != nil || u == 0 {
			t.Errorf("target %s: USER %q: run as a non-root numeric user (Kubernetes' runAsNonRoot can only check a number)", target, user)
		}
		if g, err := strconv.Atoi(gid); !ok || err != nil || g == 0 {
			t.Errorf("target %s: USER %q: give a non-root numeric group too", target, user)
		}
		if entrypoint == nil || entrypoint.PrependShell || !slices.Equal(entrypoint.CmdLine, []string{"/signet"}) {
			t.Errorf("target %s: ENTRYPOINT %+v: want the exec form [\"/signet\"] (there is no shell)", target, entrypoint)
		}
		if cmd == nil || cmd.PrependShell || len(cmd.CmdLine) == 0 || cmd.CmdLine[0] != "serve" {
			t.Errorf("target %s: CMD %+v: want the exec form [\"serve\", ...]", target, cmd)
		}
		def := config.Default()
		for _, listen := range []string{def.GRPC.Listen, def.HTTP.Listen, def.Admin.Listen} {
			if port := listen[strings.LastIndex(listen, ":")+1:]; !slices.Contains(exposed, port) {
				t.Errorf("target %s: EXPOSE %v lacks %s, a default port of Signet's", target, exposed, port)
			}
		}

		// The go build that made the binary: the Makefile's tags and -X
		// variables, -trimpath, and cgo only for the PKCS#11 image.
		builds := 0
		for _, from := range buildStages {
			for _, c := range d.byName[from].Commands {
				run, ok := c.(*instructions.RunCommand)
				if !ok || !strings.Contains(strings.Join(run.CmdLine, " "), "go build") {
					continue
				}
				builds++
				checkGoBuild(t, target, d.byName[from], strings.Join(run.CmdLine, " "), makeTags, makeVars)
			}
		}
		if builds != 1 {
			t.Errorf("target %s: copies from %d stages that run go build, want 1", target, builds)
		}
	}
}

var (
	tagsFlag    = regexp.MustCompile(`(?:^|\s)-tags[ =](\S+)`)
	ldflagsFlag = regexp.MustCompile(`-ldflags[ =]["']([^"']*)["']`)
	xFlag       = regexp.MustCompile(`-X\s+([^=\s]+)=(\S*)`)
	cgoEnv      = regexp.MustCompile(`CGO_ENABLED=(\d)`)
)

func checkGoBuild(t *testing.T, target string, stage *instructions.Stage, run string, makeTags string, makeVars []string) {
	t.Helper()
	where := fmt.Sprintf("target %s (stage %s): go build", target, stage.Name)
	if !regexp.MustCompile(`(^|\s)-trimpath(\s|$)`).MatchString(run) {
		t.Errorf("%s without -trimpath: the binary would hold the builder's paths", where)
	}
	if m := tagsFlag.FindStringSubmatch(run); m == nil || m[1] != makeTags {
		t.Errorf("%s: tags %v, want the Makefile's %q", where, m, makeTags)
	}
	m := ldflagsFlag.FindStringSubmatch(run)
	if m == nil {
		t.Errorf("%s without -ldflags", where)
		return
	}
	var vars []string
	args := map[string]bool{}
	for _, c := range stage.Commands {
		if a, ok := c.(*instructions.ArgCommand); ok {
			for _, kv := range a.Args {
				args[kv.Key] = true
			}
		}
	}
	for _, x := range xFlag.FindAllStringSubmatch(m[1], -1) {
		vars = append(vars, x[1])
		if ref := strings.Trim(x[2], "${}"); !args[ref] {
			t.Errorf("%s: -X %s=%s: not set from a build argument of the stage", where, x[1], x[2])
		}
	}
	slices.Sort(vars)
	if !slices.Equal(vars, makeVars) {
		t.Errorf("%s: -ldflags sets %v, the Makefile's build sets %v", where, vars, makeVars)
	}
	if !strings.Contains(m[1], "-buildid=") {
		t.Errorf("%s: -ldflags without -buildid=: the build id would differ between builds", where)
	}
	want := "0"
	if target == pkcs11Target {
		want = "1"
	}
	if c := cgoEnv.FindStringSubmatch(run); c == nil || c[1] != want {
		t.Errorf("%s: CGO_ENABLED %v, want %s", where, c, want)
	}
}

// makefileBuildFlags returns the Makefile's build tags and the variables its
// -ldflags set with -X, sorted.
func makefileBuildFlags(t *testing.T) (tags string, vars []string) {
	t.Helper()
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	line := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(.*)$`).FindSubmatch(mk)
		if m == nil {
			t.Fatalf("the Makefile sets no %s", name)
		}
		return string(m[1])
	}
	m := tagsFlag.FindStringSubmatch(line("TAGS"))
	if m == nil {
		t.Fatalf("the Makefile's TAGS has no -tags: %q", line("TAGS"))
	}
	for _, x := range xFlag.FindAllStringSubmatch(line("LDFLAGS"), -1) {
		vars = append(vars, x[1])
	}
	if len(vars) == 0 {
		t.Fatalf("the Makefile's LDFLAGS set no variable: %q", line("LDFLAGS"))
	}
	slices.Sort(vars)
	return m[1], vars
}

// goDirective returns the go version in Signet's go.mod.
func goDirective(t *testing.T) string {
	t.Helper()
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return string(m[1])
}

// TestDockerignore: the build context holds every file the binary is built
// from (with and without cgo) and nothing else that matters: not the local
// backend's keys, not bin/, not .git, not tests.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	f, err := os.Open("Dockerfile.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	excluded := func(path string) bool {
		ex, err := pm.MatchesOrParentMatches(path)
		if err != nil {
			t.Fatal(err)
		}
		return ex
	}
	need := []string{"go.mod", "go.sum", "gen/go.mod", "gen/go.sum", "client/go.mod", "client/go.sum"}
	for _, cgo := range []string{"0", "1"} {
		need = append(need, signetSources(t, cgo)...)
	}
	for _, p := range need {
		if excluded(p) {
			t.Errorf("%s is needed to build signet but Dockerfile.dockerignore leaves it out of the context", p)
		}
	}
	for _, p := range []string{"signet-data/kek", "signet-data/rings/default/1.json", "bin/signet", "bin/vault",
		".git/HEAD", ".git", "dev-certs/ca-key.pem", "cmd/signet/e2e_test.go", "server/authz/testdata/fuzz/x",
		"deploy/helm/signet/values.yaml", "docs/deploy.md", "scripts/vault/main.go", "internal/vaulttest/vaulttest.go"} {
		if !excluded(p) {
			t.Errorf("%s would be in the image's build context", p)
		}
	}
}

// signetSources lists the files of Signet's own packages (its API and client
// modules' too) that go build
// compiles into cmd/signet with the Makefile's tags, relative to the
// repository. It asks the go command, offline.
func signetSources(t *testing.T, cgo string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-tags", "pkcs11",
		"-f", `{{if .Module}}{{if or (eq .Module.Path "github.com/signet-dev/signet") (eq .Module.Path "github.com/signet-dev/signet/gen") (eq .Module.Path "github.com/signet-dev/signet/client")}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}
{{end}}{{range .CgoFiles}}{{$d}}/{{.}}
{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}
{{end}}{{end}}{{end}}`, "./cmd/signet")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo, "GOPROXY=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list (CGO_ENABLED=%s): %v", cgo, err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, l := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, l)
		if err != nil || strings.HasPrefix(rel, "..") {
			t.Fatalf("%s is outside the repository", l)
		}
		files = append(files, filepath.ToSlash(rel))
	}
	if len(files) < 20 {
		t.Fatalf("go list found only %v", files)
	}
	return files
}
