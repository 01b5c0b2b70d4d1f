package server

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"
)

// peerClientEnv, when set, makes the test binary a client of the
// ExternalJWTSigner socket it names instead of running tests
// (peerClientMain): what another local user's process does.
const peerClientEnv = "SIGNET_TEST_KUBE_PEER_CLIENT"

// nobody is the uid and gid the other process runs as.
const nobody = 65534

// peerClientMain calls Metadata on the socket and prints the outcome as one
// line: "ok" or "code=CODE err=MESSAGE".
func peerClientMain(socket string) int {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		fmt.Println("client:", err)
		return 1
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = externaljwtv1.NewExternalJWTSignerClient(conn).Metadata(ctx, &externaljwtv1.MetadataRequest{}, grpc.WaitForReady(false))
	if err != nil {
		fmt.Printf("code=%s err=%s\n", status.Code(err), status.Convert(err).Message())
		return 0
	}
	fmt.Println("ok")
	return 0
}

// asNobody runs a copy of this test binary as uid and gid 65534, as a
// client of socket, and returns the line it printed. The copy sits in a
// directory that user can reach (the go test build directory is 0700).
func asNobody(t *testing.T, bin, socket string) string {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{peerClientEnv + "=" + socket, "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the client as uid %d: %v\n%s", nobody, err, out)
	}
	return strings.TrimSpace(string(out))
}

// A real process of another uid: while the socket is 0600 the kernel
// refuses its connect (EACCES, the first line of defence); with the socket
// widened by this test so that it can connect, the peer-credential check
// refuses it at the handshake, before a request is read, and the audit log
// records the refusal with its uid and gid. The owner, admitted, is served
// throughout.
func TestKubeSignerRefusesAnotherUIDsProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to start a process as another uid (in CI, testreport fails a skip)")
	}
	cfg, dir := kubeConfig(t, "")
	e := startKube(t, cfg)

	bin := filepath.Join(shortDir(t), "client")
	copyExecutable(t, bin)
	// Let nobody reach the socket's directory (search only: the signer
	// refuses a directory others may write to) and the client's.
	for _, d := range []string{dir, filepath.Dir(bin)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}

	if got := asNobody(t, bin, e.socket); !strings.Contains(got, "permission denied") {
		t.Fatalf("uid %d on the 0600 socket: %q, want the kernel's permission denied at connect", nobody, got)
	}
	if n := len(nobodyRecords(e.auditLines(t))); n != 0 {
		t.Fatalf("%d connect records of uid %d before it could connect", n, nobody)
	}

	if err := os.Chmod(e.socket, 0o666); err != nil { // this test's widening, not the signer's
		t.Fatal(err)
	}
	got := asNobody(t, bin, e.socket)
	if !strings.HasPrefix(got, "code=Unavailable") || strings.Contains(got, "permission denied") {
		t.Fatalf("uid %d on a socket it may connect to: %q, want Unavailable from the handshake's refusal", nobody, got)
	}
	recs := nobodyRecords(e.auditLines(t))
	if len(recs) == 0 {
		t.Fatalf("no ExternalJWTSigner/connect denial of uid %d in the audit log: %v", nobody, e.auditLines(t))
	}
	t.Logf("uid %d: %s; audited: %v", nobody, got, recs[0])

	if _, err := e.kube.Metadata(ctxT(t), &externaljwtv1.MetadataRequest{}); err != nil {
		t.Fatalf("the admitted owner: %v", err)
	}
}

// nobodyRecords are the audit log's refused connections of uid 65534.
func nobodyRecords(lines []map[string]any) []map[string]any {
	var out []map[string]any
	for _, l := range lines {
		if l["rpc"] == "ExternalJWTSigner/connect" && l["outcome"] == "denied" && l["caller"] == unixCaller(nobody, nobody) {
			out = append(out, l)
		}
	}
	return out
}

// copyExecutable copies this test binary to dst, executable by all.
func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, src); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
