// Package telemetrytest reads Signet's /metrics in tests the way Prometheus
// does, so that tests check the values a scrape gives.
package telemetrytest

import (
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a /metrics endpoint, parsed by Prometheus's own
// parser.
type Metrics map[string]*dto.MetricFamily

// Scrape fetches url and parses it.
func Scrape(t testing.TB, url string) Metrics {
	t.Helper()
	resp, err := http.Get(url) // #nosec G107 -- a test scraping the test server it started
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return fams
}

// Value is the value of the sample of name whose labels include the given
// name/value pairs (a histogram's _count and _sum too); it fails the test if
// there is not exactly one.
func (m Metrics) Value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	base, suffix := name, ""
	for _, s := range []string{"_count", "_sum"} {
		if f, ok := m[strings.TrimSuffix(name, s)]; ok && strings.HasSuffix(name, s) && f.GetType() == dto.MetricType_HISTOGRAM {
			base, suffix = strings.TrimSuffix(name, s), s
		}
	}
	f, ok := m[base]
	if !ok {
		t.Fatalf("no metric %s", base)
	}
	var found []float64
	for _, s := range f.GetMetric() {
		if !hasLabels(s, labels) {
			continue
		}
		switch {
		case suffix == "_count":
			found = append(found, float64(s.GetHistogram().GetSampleCount()))
		case suffix == "_sum":
			found = append(found, s.GetHistogram().GetSampleSum())
		case s.Counter != nil:
			found = append(found, s.GetCounter().GetValue())
		case s.Gauge != nil:
			found = append(found, s.GetGauge().GetValue())
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, labels, len(found))
	}
	return found[0]
}

func hasLabels(s *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, l := range s.GetLabel() {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
