package authz

import (
	"bufio"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func auditLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		lines = append(lines, sc.Text())
	}
	return lines
}

// A record written to an audit file that log rotation removed is written
// again to a new file at the path; one written after a rename lands in the
// renamed file until the path is checked (every second, or SIGHUP), then
// in a new one.
func TestAuditFollowsRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	a, err := openAudit(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	write := func(jti string) {
		t.Helper()
		if err := a.write(Record{RPC: "Sign", Outcome: "ok", JTI: jti}); err != nil {
			t.Fatalf("write %s: %v", jti, err)
		}
	}
	write("1")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	write("2")
	if l := auditLines(t, path); len(l) != 1 || !strings.Contains(l[0], `"jti":"2"`) {
		t.Errorf("after removal the record is not in a new file at the path: %q", l)
	}

	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	write("3") // the renamed file still has a name: on record there
	a.reopenIfMoved()
	write("4")
	if l := auditLines(t, path+".1"); len(l) != 2 || !strings.Contains(l[1], `"jti":"3"`) {
		t.Errorf("renamed file: %q", l)
	}
	if l := auditLines(t, path); len(l) != 1 || !strings.Contains(l[0], `"jti":"4"`) {
		t.Errorf("after the rename was noticed: %q", l)
	}

	// SIGHUP: reopen whatever the path holds.
	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	if err := a.reopen(); err != nil {
		t.Fatal(err)
	}
	write("5")
	if l := auditLines(t, path); len(l) != 1 || !strings.Contains(l[0], `"jti":"5"`) {
		t.Errorf("after reopen: %q", l)
	}

	// The path cannot be created again: the record is not on record.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	if os.Getuid() == 0 {
		return // root creates files in any directory
	}
	if err := a.write(Record{RPC: "Sign", Outcome: "ok", JTI: "6"}); err == nil {
		t.Error("a record written to a removed file that cannot be recreated counted as written")
	}
}

// The refusal limiter gives each peer a burst and then a line a second,
// summarises the rest, and keeps a bounded number of buckets however many
// peers there are.
func TestRefusalLimiter(t *testing.T) {
	q := newRefusalLimiter()
	now := time.Unix(1e9, 0)
	a := netip.MustParseAddr("192.0.2.1")
	allowed := 0
	for range 1000 {
		if q.allow(a, now) {
			allowed++
		}
	}
	if allowed != refusalPeerBurst {
		t.Errorf("one peer at once: %d lines, want the burst %d", allowed, refusalPeerBurst)
	}
	r, ok := q.summary(now)
	if !ok || r.Summarized != 1000-refusalPeerBurst || !strings.Contains(r.Reason, "from 1 peer") {
		t.Errorf("summary %+v %v", r, ok)
	}
	if _, ok := q.summary(now); ok {
		t.Error("a second summary with nothing new")
	}
	// Another /64 of IPv6 is another peer; the same /64 is the same one.
	if !q.allow(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Error("a new IPv6 peer")
	}
	for range refusalPeerBurst - 1 {
		q.allow(netip.MustParseAddr("2001:db8:0:1::2"), now)
	}
	if q.allow(netip.MustParseAddr("2001:db8:0:1::3"), now) {
		t.Error("the same /64 got more than its burst")
	}
	// Many peers: the buckets stay bounded and all of them together
	// stay within the overall burst.
	q = newRefusalLimiter()
	allowed = 0
	for i := range 3 * maxRefusalPeers {
		if q.allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), now) {
			allowed++
		}
	}
	if len(q.peers) > maxRefusalPeers || allowed > refusalAllBurst {
		t.Errorf("%d buckets (max %d), %d lines (overall burst %d)", len(q.peers), maxRefusalPeers, allowed, refusalAllBurst)
	}
	// Once the buckets have refilled, they are dropped and a new peer
	// gets one of its own again.
	later := now.Add(time.Minute)
	if !q.allow(netip.MustParseAddr("192.0.2.200"), later) || len(q.peers) != 1 {
		t.Errorf("after a quiet minute: %d buckets, want the new peer's alone", len(q.peers))
	}
}
