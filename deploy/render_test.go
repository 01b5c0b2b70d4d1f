package deploy

import (
	"bytes"
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"
)

const (
	chartDir         = "helm/signet"
	releaseName      = "signet"
	releaseNamespace = "security"
)

// The Go type of each kind the chart may render. Anything else fails the
// test: a new kind needs its API type here.
var kindTypes = map[string]func() any{
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":      func() any { return &networkingv1.NetworkPolicy{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &monitoringv1.ServiceMonitor{} },
	"monitoring.coreos.com/v1/PrometheusRule": func() any { return &monitoringv1.PrometheusRule{} },
	"cert-manager.io/v1/Certificate":          func() any { return &cmv1.Certificate{} },
}

// object is one rendered manifest, decoded into its API type.
type object struct {
	source string // the template it came from
	gvk    string // apiVersion/kind
	meta   metav1.ObjectMeta
	typed  any
}

// release is what `helm template` would print, decoded.
type release struct {
	values  common.Values // .Values as the templates saw them
	objects []object
	notes   string
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return c
}

// renderValues renders the chart as `helm install -f values.yaml` would,
// with Helm's own packages: the values are coalesced with the chart's and
// validated against values.schema.json, and the templates are rendered in
// strict mode (a reference to a value that does not exist fails).
func renderValues(t *testing.T, valuesYAML string) (*release, error) {
	t.Helper()
	c := loadChart(t)
	vals, err := common.ReadValues([]byte(valuesYAML))
	if err != nil {
		t.Fatalf("the test's values: %v", err)
	}
	top, err := util.ToRenderValues(c, vals, common.ReleaseOptions{
		Name: releaseName, Namespace: releaseNamespace, Revision: 1, IsInstall: true}, nil)
	if err != nil {
		return nil, err
	}
	files, err := engine.Engine{Strict: true}.RenderWithContext(context.Background(), c, top)
	if err != nil {
		return nil, err
	}
	r := &release{}
	r.values, _ = top["Values"].(common.Values)
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		content := files[name]
		switch base := path.Base(name); {
		case base == "NOTES.txt":
			r.notes = content
			continue
		case strings.HasPrefix(base, "_"):
			continue
		}
		for _, doc := range splitDocuments(content) {
			r.objects = append(r.objects, decodeObject(t, name, doc))
		}
	}
	return r, nil
}

// render renders values that must be accepted.
func render(t *testing.T, valuesYAML string) *release {
	t.Helper()
	r, err := renderValues(t, valuesYAML)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	return r
}

// splitDocuments splits a rendered template into its YAML documents,
// dropping the empty ones (comments only, or a disabled template).
func splitDocuments(content string) [][]byte {
	var docs [][]byte
	for _, doc := range strings.Split("\n"+content, "\n---") {
		empty := true
		for _, line := range strings.Split(doc, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, []byte(doc))
		}
	}
	return docs
}

// decodeObject decodes one manifest strictly: YAML with a duplicate key, a
// field its API type does not have, or a field spelt in another case (which
// encoding/json would accept and the API server would not) all fail.
func decodeObject(t *testing.T, source string, doc []byte) object {
	t.Helper()
	j, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		t.Fatalf("%s: not YAML: %v\n%s", source, err, doc)
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if _, err := sigsjson.UnmarshalStrict(j, &head); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	gvk := head.APIVersion + "/" + head.Kind
	newType, ok := kindTypes[gvk]
	if !ok {
		t.Fatalf("%s renders a %s, which the test does not know: add its API type to kindTypes", source, gvk)
	}
	typed := newType()
	strict, err := sigsjson.UnmarshalStrict(j, typed, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		t.Fatalf("%s: %s does not decode: %v", source, gvk, err)
	}
	for _, e := range strict {
		t.Errorf("%s: %s: %v", source, gvk, e)
	}
	var m struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if _, err := sigsjson.UnmarshalStrict(j, &m); err != nil {
		t.Fatalf("%s: %v", source, err)
	}
	return object{source: source, gvk: gvk, meta: m.Metadata, typed: typed}
}

// all returns the rendered objects of one Go type.
func all[T any](r *release) []*T {
	var out []*T
	for _, o := range r.objects {
		if v, ok := o.typed.(*T); ok {
			out = append(out, v)
		}
	}
	return out
}

// one returns the only rendered object of a type, failing if there is not
// exactly one.
func one[T any](t *testing.T, r *release) *T {
	t.Helper()
	objs := all[T](r)
	if len(objs) != 1 {
		var zero T
		t.Fatalf("%d objects of type %T rendered, want 1", len(objs), &zero)
	}
	return objs[0]
}

// configMapNamed returns a rendered ConfigMap by name, or nil.
func configMapNamed(r *release, name string) *corev1.ConfigMap {
	for _, cm := range all[corev1.ConfigMap](r) {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

func (r *release) String() string {
	var b bytes.Buffer
	for _, o := range r.objects {
		fmt.Fprintf(&b, "%s %s (%s)\n", o.gvk, o.meta.Name, o.source)
	}
	return b.String()
}
