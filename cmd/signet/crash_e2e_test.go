package main

// Crash tests: `signet serve` killed with SIGKILL in the middle of a
// rotation, restarted, and the backend's objects counted afterwards. The
// contract (backends.Signer): once a live replica has had
// 2 × backend_timeout + 2 × refresh_interval, every object Signet created is
// a published version of its ring or removed (scheduled for removal).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/kmstest"
)

// kmsEnv is the environment of a signet process on the KMS test server,
// with its own access key id so that the server can tell processes apart.
func kmsEnv(accessKeyID string) []string {
	var env []string
	for k, v := range kmstest.Env {
		if k == "AWS_ACCESS_KEY_ID" && accessKeyID != "" {
			v = accessKeyID
		}
		env = append(env, k+"="+v)
	}
	return env
}

var versionAlias = regexp.MustCompile(`^alias/signet/[^/]+/[0-9]+$`)

// kmsCensus counts the test server's keys: "version" (a version alias
// reaches it), "pending_deletion", and "leaked" (neither), and lists the
// leaked ones.
func kmsCensus(kms *kmstest.Server) (counts map[string]int, leaked []string) {
	aliased := map[string]bool{}
	for name, id := range kms.Aliases() {
		if versionAlias.MatchString(name) {
			aliased[id] = true
		}
	}
	counts = map[string]int{"version": 0, "pending_deletion": 0, "leaked": 0}
	for _, k := range kms.Keys() {
		switch {
		case aliased[k.ID]:
			counts["version"]++
		case k.State == "PendingDeletion":
			counts["pending_deletion"]++
		default:
			counts["leaked"]++
			leaked = append(leaked, fmt.Sprintf("%s (%s, tags %v)", k.ID, k.State, k.Tags))
		}
	}
	return counts, leaked
}

func formatCounts(c map[string]int) string {
	var parts []string
	for k, v := range c {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// rotateUntilKilled calls Rotate until the process dies of a kill armed
// beforehand. A Rotate refused as Aborted (the previous, interrupted
// rotation's intent is not cleaned up yet) is tried again, a bounded
// number of times.
func (p *process) rotateUntilKilled(t *testing.T, what string) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err := p.client.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
		cancel()
		if err == nil {
			t.Fatalf("%s: Rotate succeeded; the armed kill should have stopped signet", what)
		}
		select {
		case <-p.exited:
			return
		case <-time.After(500 * time.Millisecond): // pacing the retries, not a wait for an event
		}
		if status.Code(err) != codes.Aborted || attempt == 120 {
			t.Fatalf("%s: Rotate failed without a crash: %v", what, err)
		}
	}
}

// waitExit waits for a killed process to be gone.
func (p *process) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(time.Minute): // a hang detector
		t.Fatal("signet serve did not exit after SIGKILL")
	}
}

// TestCrashDuringRotationAWSKMS kills `signet serve` five times in a row at
// the moment the KMS test server has carried out the CreateKey of a
// Rotate, restarting it each time, then checks that no KMS key is left that
// is neither a version nor scheduled for deletion, and that the ring still
// rotates and signs.
func TestCrashDuringRotationAWSKMS(t *testing.T) {
	t.Parallel()
	kms := kmstest.Start()
	t.Cleanup(kms.Close)
	backend := "awskms:?region=us-east-1&endpoint=" + url.QueryEscape(kms.URL)
	const backendTimeout, refreshInterval = 3 * time.Second, time.Second
	p := startSignetWith(t, backendConfig(backend, backendTimeout), kmsEnv("")...)
	for i := range 5 {
		kms.KillAfter("CreateKey", "", p.cmd.Process.Pid)
		p.rotateUntilKilled(t, fmt.Sprintf("crash %d", i+1))
		p = startSignetWith(t, p.config, p.env...)
	}
	counts, leaked := kmsCensus(kms)
	t.Logf("KMS keys by state right after the fifth restart: %s", formatCounts(counts))
	// The restarted replica converges within 2 × backend_timeout +
	// 2 × refresh_interval; the deadline here only catches a hang.
	if !waitFor(time.Minute, func() bool { _, leaked = kmsCensus(kms); return len(leaked) == 0 }) {
		t.Errorf("keys that are neither a version nor scheduled for deletion: %v", leaked)
	}
	counts, _ = kmsCensus(kms)
	t.Logf("KMS keys by state after convergence: %s", formatCounts(counts))
	if counts["version"] != 1 {
		t.Errorf("%d versions after five interrupted rotations, want 1 (each crashed rotation yields none)", counts["version"])
	}
	p.rotateUntilSigning(t)
	if counts, leaked := kmsCensus(kms); len(leaked) != 0 || counts["version"] != 2 {
		t.Errorf("after a rotation that completes: %s, leaked %v", formatCounts(counts), leaked)
	}
}

// TestCrashLoopScheduledRotationAWSKMS runs three replicas, each with its
// own credentials, whose scheduled rotation comes due every few seconds;
// whichever carries out a CreateKey is killed at that moment and
// restarted, five times in all (a crash loop: a restarted replica finds the
// rotation due at once). Then no KMS key may be left that is neither a
// version nor scheduled for deletion, and every killed rotation's key must
// be scheduled for deletion.
func TestCrashLoopScheduledRotationAWSKMS(t *testing.T) {
	t.Parallel()
	kms := kmstest.Start()
	t.Cleanup(kms.Close)
	backend := "awskms:?region=us-east-1&endpoint=" + url.QueryEscape(kms.URL)
	config := configHead + "backend_timeout: 2s\nkey_rings:\n" +
		"  - {name: default, backend: '" + backend + "', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s, rotation_period: 4s}\n"
	const crashes = 5
	var kills atomic.Int32
	arm := func(p *process, accessKey string) {
		pid := p.cmd.Process.Pid
		kms.After("CreateKey", func(ak string) bool {
			if ak != accessKey {
				return false
			}
			if kills.Add(1) <= crashes {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return true
		})
	}
	replicas := make([]*process, 3)
	keys := make([]string, 3)
	for i := range replicas {
		keys[i] = fmt.Sprintf("AKIDREPLICA%d", i)
		replicas[i] = startSignetWith(t, config, kmsEnv(keys[i])...)
		arm(replicas[i], keys[i])
	}
	// The crash loop: restart each replica the test server killed.
	if !waitFor(3*time.Minute, func() bool {
		for i, p := range replicas {
			select {
			case <-p.exited:
				replicas[i] = startSignetWith(t, config, kmsEnv(keys[i])...)
				if kills.Load() < crashes {
					arm(replicas[i], keys[i])
				}
			default:
			}
		}
		return kills.Load() >= crashes
	}) {
		t.Fatalf("only %d of %d crashes in three minutes", kills.Load(), crashes)
	}
	for i, p := range replicas { // the last one killed
		select {
		case <-p.exited:
			replicas[i] = startSignetWith(t, config, kmsEnv(keys[i])...)
		case <-time.After(time.Second): // it is alive
		}
	}
	t.Logf("KMS keys by state after %d crashes: %s", crashes, func() string { c, _ := kmsCensus(kms); return formatCounts(c) }())
	// Rotations go on meanwhile, so look for a moment with none in flight.
	var counts map[string]int
	var leaked []string
	if !waitFor(time.Minute, func() bool {
		_, intent := kms.Aliases()["alias/signet/default/rotating"]
		counts, leaked = kmsCensus(kms)
		return !intent && len(leaked) == 0 && counts["pending_deletion"] >= crashes
	}) {
		t.Errorf("no convergence: %s, leaked %v", formatCounts(counts), leaked)
	}
	t.Logf("KMS keys by state after convergence: %s", formatCounts(counts))
	// Every key is a version or scheduled for deletion (leaked is empty
	// above), and each killed rotation left one key behind. More than one
	// per kill is not a leak: a rotation that loses its race or runs out of
	// its backend_timeout schedules its own key too (under load, 2 s can
	// pass between CreateKey and the version alias).
	if counts["pending_deletion"] < crashes {
		t.Errorf("%d keys scheduled for deletion, want at least one per killed rotation (%d)", counts["pending_deletion"], crashes)
	}
	for _, p := range replicas {
		resp := p.sign(t, "default")
		if err := goJOSEVerify(p.jwks(t), resp.GetToken()); err != nil {
			t.Errorf("after the crash loop: %v", err)
		}
	}
	recovered := 0.0
	for _, p := range replicas {
		m := p.metrics(t)
		recovered += m.Value(t, "signet_backend_recovered_objects_total", "backend", "awskms", "action", "scheduled_deletion")
	}
	t.Logf("the live replicas count %v keys they scheduled for deletion", recovered)
}

// TestCrashDuringRotationLocal kills `signet serve` on the local backend
// while it rotates a ring whose RSA-4096 keys take seconds to make, three
// times, and leaves a temporary file beside the keys as a kill between
// writing and linking a key file does (that window is too short to hit).
// The restarted replica removes it (logged, counted, listed by
// `signet keys --leftovers` until then) and every file left is a version.
func TestCrashDuringRotationLocal(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	config := configHead + "backend_timeout: 30s\nkey_rings:\n" +
		"  - {name: default, backend: 'local://" + dataDir + "', algorithm: RS512, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s}\n"
	p := startSignetWith(t, config)
	ringDir := filepath.Join(dataDir, "rings", "default")
	for range 3 {
		go p.client.Rotate(context.Background(), &signetv1.RotateRequest{KeyRing: "default"})
		p.cmd.Process.Kill()
		p.waitExit(t)
		p = startSignetWith(t, p.config, p.env...)
	}
	stale := filepath.Join(ringDir, ".tmp-4242")
	if err := os.WriteFile(stale, []byte(`{"ring":"default","version":"9"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// Its age comes from when the replica first saw it, not from its
	// modification time (another host's clock): removed once seen for
	// longer than 2 x backend_timeout.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(stale, old, old)
	if !waitFor(3*time.Minute, func() bool { _, err := os.Stat(stale); return errors.Is(err, fs.ErrNotExist) }) {
		t.Fatal("the stale temporary file was not removed")
	}
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(p.stderr.String(), "cleaned up after an interrupted operation") && strings.Contains(p.stderr.String(), ".tmp-4242")
	}) {
		t.Errorf("the clean-up is not in the log:\n%s", p.stderr.String())
	}
	if n := p.metrics(t).Value(t, "signet_backend_recovered_objects_total", "backend", "local", "action", "removed"); n != 1 {
		t.Errorf("signet_backend_recovered_objects_total{backend=local,action=removed} = %v, want 1", n)
	}
	// A kill that happened to land between writing and linking a key file
	// left a fresh temporary file, removed once 2 x backend_timeout old.
	var out string
	if !waitFor(2*time.Minute, func() bool {
		out = runCLI(t, "keys", "--server", p.grpcAddr, "--leftovers")
		return strings.Contains(out, "no leftovers")
	}) {
		t.Errorf("signet keys --leftovers:\n%s", out)
	}
	entries, _ := os.ReadDir(ringDir)
	versions := 0
	for _, e := range entries {
		if !regexp.MustCompile(`^[0-9]+\.json$`).MatchString(e.Name()) {
			t.Errorf("%s is not a version file", e.Name())
		}
		versions++
	}
	if len(listKids(t, p)) != versions {
		t.Errorf("%d version files, %d versions listed", versions, len(listKids(t, p)))
	}
	p.rotateUntilSigning(t)
}
