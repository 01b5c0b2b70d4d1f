// Command soak runs three `signet serve` replicas on one key ring for a
// while, with live rotation, faults and independent caching verifiers, and
// checks Signet's promises as it goes (`make soak`; docs/soak.md):
// every token verifies (but those of revoked kids), one version per
// rotation period, a change reaches every replica within refresh_interval
// and a margin, the JWKS is answered throughout, no kid signs before its
// publish_ahead. It prints a report ending with one summary line per
// backend and one for the run, and exits 1 if an invariant broke.
//
// It lives in its own module so that its verifier libraries (jwx, go-oidc)
// stay out of Signet's module graph.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	var o options
	var backends, dir string
	var short time.Duration
	flag.StringVar(&o.signet, "signet", "bin/signet", "the signet binary (make build)")
	flag.StringVar(&o.vault, "vault", os.Getenv("SIGNET_VAULT_BIN"), "the Vault server binary (make bin/vault)")
	flag.StringVar(&o.python, "python", "/usr/bin/python3", "the python with PyJWT (python3-jwt)")
	flag.DurationVar(&o.duration, "duration", 5*time.Minute, "how long the Vault soak runs")
	flag.DurationVar(&short, "short-duration", 0, "how long the AWS KMS and local soaks run (default: a tenth of -duration, at least 40s, at most 3m)")
	flag.IntVar(&o.rate, "rate", 40, "Sign calls per second over all replicas")
	flag.IntVar(&o.concurrency, "concurrency", 8, "most Sign calls in flight")
	flag.StringVar(&backends, "backends", "vault,awskms,local", "backends to soak, in order")
	flag.StringVar(&dir, "dir", "", "where the processes' data and logs go (default: a new temporary directory, kept)")
	flag.Parse()
	if short == 0 {
		short = min(max(o.duration/10, 40*time.Second), 3*time.Minute)
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "signet-soak-")
		if err != nil {
			fatalf("%v", err)
		}
		dir = d
	}
	o.out = os.Stdout
	var plan []plannedRun
	for _, b := range strings.Split(backends, ",") {
		d := short
		if b == "vault" {
			d = o.duration
		}
		plan = append(plan, plannedRun{strings.TrimSpace(b), d})
	}
	fmt.Printf("soak: logs and data in %s\n", dir)
	reports, err := soakAll(o, dir, plan)
	for _, r := range reports {
		r.print(os.Stdout)
	}
	if err != nil {
		fatalf("%v", err)
	}
	total := combine(reports)
	fmt.Println(total.summary("soak"))
	if len(total.violations) > 0 {
		os.Exit(1)
	}
}

type plannedRun struct {
	backend  string
	duration time.Duration
}

// soakAll runs each planned backend in turn, each in its own directory.
func soakAll(o options, dir string, plan []plannedRun) ([]*report, error) {
	var reports []*report
	for _, p := range plan {
		ro := o
		ro.backend, ro.duration = p.backend, p.duration
		ro.dir = filepath.Join(dir, p.backend)
		if err := os.MkdirAll(ro.dir, 0o700); err != nil {
			return reports, err
		}
		r, err := run(ro)
		if err != nil {
			return reports, fmt.Errorf("%s: %w", p.backend, err)
		}
		reports = append(reports, r)
	}
	return reports, nil
}

// combine adds the backends' figures into the run's.
func combine(reports []*report) *report {
	t := &report{}
	var names []string
	for _, r := range reports {
		names = append(names, r.backend)
		t.duration += r.duration
		t.issued += r.issued
		t.verified += r.verified
		t.failed += r.failed
		t.revoked += r.revoked
		t.periods += r.periods
		t.extra += r.extra
		t.late += r.late
		t.fetches += r.fetches
		t.fetchOK += r.fetchOK
		t.propMax = max(t.propMax, r.propMax)
		t.dropMax = max(t.dropMax, r.dropMax)
		t.unexpectedSignErrors += r.unexpectedSignErrors
		for _, v := range r.violations {
			t.violations = append(t.violations, r.backend+": "+v)
		}
	}
	t.backend = strings.Join(names, ",")
	return t
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "soak: "+format+"\n", args...)
	os.Exit(1)
}
