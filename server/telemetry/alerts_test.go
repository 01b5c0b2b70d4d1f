package telemetry

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// The alert rules Signet ships, their promtool unit tests and their runbook,
// relative to the repository root.
const (
	alertsFile      = "deploy/prometheus/alerts.yaml"
	alertsTestsFile = "deploy/prometheus/alerts_test.yaml"
	runbookFile     = "docs/runbook.md"
	toolsModFile    = "scripts/tools/go.mod"
)

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTestFile struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestAlertRules checks deploy/prometheus/alerts.yaml with Prometheus's own
// promtool (bin/promtool, see PromtoolEnv; `make rules` runs the same), and
// that what the rules name exists: Signet's metrics and the runbook's
// sections.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	// Read here, not only by promtool, so that go test's result cache
	// notices when the rules, their tests, the runbook or the pin change.
	files := map[string][]byte{}
	for _, f := range []string{alertsFile, alertsTestsFile, runbookFile, toolsModFile, "scripts/tools/go.sum"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	var rules ruleFile
	if err := yaml.Unmarshal(files[alertsFile], &rules); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(rules.Groups) != 1 || rules.Groups[0].Name != "signet" || len(rules.Groups[0].Rules) == 0 {
		t.Fatalf("%s: want one group, signet, with rules", alertsFile)
	}

	t.Run("promtool", func(t *testing.T) {
		promtool(t, root, "check", "rules", alertsFile)
		promtool(t, root, "test", "rules", alertsTestsFile)
	})

	t.Run("metrics exist", func(t *testing.T) {
		m := NewMetrics()
		m.Register(NewKeySetCollector(nil)) // Register only describes: no key set needed
		m.Register(NewCertificateCollector(nil))
		for _, r := range rules.Groups[0].Rules {
			names := metricName.FindAllString(r.Expr, -1)
			if len(names) == 0 {
				t.Errorf("%s: its expression names no signet_ metric", r.Alert)
			}
			for _, name := range names {
				if !registered(m.reg, name) {
					t.Errorf("%s: no metric %s in the registry", r.Alert, name)
				}
			}
		}
	})

	t.Run("labels, annotations and runbook", func(t *testing.T) {
		anchors := runbookAnchors(string(files[runbookFile]))
		for _, r := range rules.Groups[0].Rules {
			if r.Alert == "" {
				t.Errorf("%s: a rule that is not an alert: %q", alertsFile, r.Expr)
				continue
			}
			if s := r.Labels["severity"]; len(r.Labels) != 1 || (s != "critical" && s != "warning") {
				t.Errorf("%s: labels %v, want only severity: critical or warning", r.Alert, r.Labels)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if r.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbookFile+"#")
			if !ok || !anchors[anchor] {
				t.Errorf("%s: runbook_url %q is not a section of %s", r.Alert, r.Annotations["runbook_url"], runbookFile)
			}
		}
	})

	t.Run("each alert fires and stays silent in a test", func(t *testing.T) {
		var tests ruleTestFile
		if err := yaml.Unmarshal(files[alertsTestsFile], &tests); err != nil {
			t.Fatalf("%s: %v", alertsTestsFile, err)
		}
		fires, silent := map[string]bool{}, map[string]bool{}
		for _, tc := range tests.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) > 0 {
					fires[at.Alertname] = true
				} else {
					silent[at.Alertname] = true
				}
			}
		}
		for _, r := range rules.Groups[0].Rules {
			if !fires[r.Alert] || !silent[r.Alert] {
				t.Errorf("%s: %s must have it fire (fires: %v) and stay silent (silent: %v)",
					r.Alert, alertsTestsFile, fires[r.Alert], silent[r.Alert])
			}
		}
	})
}

// metricName matches Signet's metric names in a PromQL expression.
var metricName = regexp.MustCompile(`\bsignet_[a-z0-9_]+`)

// registered reports whether reg has a metric called name or, for a
// histogram's _bucket, _count or _sum series, one called its base name.
// Registering a descriptor fails exactly when one of that name is already
// there (the probe's help text and labels differ from any real metric's),
// so the registry's own bookkeeping answers, for every collector in it.
func registered(reg *prometheus.Registry, name string) bool {
	has := func(name string) bool {
		probe := probeCollector{prometheus.NewDesc(name, "probe", []string{"probe_only"}, nil)}
		if err := reg.Register(probe); err != nil {
			return strings.Contains(err.Error(), "same fully-qualified name")
		}
		reg.Unregister(probe)
		return false
	}
	if has(name) {
		return true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && has(base) {
			return true
		}
	}
	return false
}

type probeCollector struct{ desc *prometheus.Desc }

func (p probeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }
func (p probeCollector) Collect(chan<- prometheus.Metric)    {}

// runbookAnchors returns the anchors a Markdown renderer gives the
// headings of doc: lower case, punctuation dropped, spaces as hyphens.
func runbookAnchors(doc string) map[string]bool {
	anchors := map[string]bool{}
	for line := range strings.Lines(doc) {
		heading, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		anchors[b.String()] = true
	}
	return anchors
}

// PromtoolEnv names the environment variable that holds the path of a
// promtool binary: the Makefile sets it to bin/promtool (Debian's prometheus
// package's, or one built from the version pinned in scripts/tools/go.mod).
const PromtoolEnv = "SIGNET_PROMTOOL"

// promtool runs Prometheus's promtool in the repository root: the binary
// PromtoolEnv names, or else the one pinned in scripts/tools/go.mod, built
// into the Go build cache (minutes, the first time); -mod=readonly keeps
// go.mod and go.sum as they are.
func promtool(t *testing.T, root string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"tool", "-modfile=" + filepath.Join(root, toolsModFile), "promtool"}, args...)...)
	if bin := os.Getenv(PromtoolEnv); bin != "" {
		cmd = exec.Command(bin, args...) // #nosec G204 G702 -- the promtool the test run names
	}
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly", "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// repoRoot is the directory above the test's that holds the alert rules.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, alertsFile)); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no %s above %s", alertsFile, dir)
		}
	}
}
