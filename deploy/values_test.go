package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/signet-dev/signet/deploy/internal/chartdoc"
	"github.com/signet-dev/signet/server/config"
)

// TestChartRefuses: values that would deploy something Signet refuses or
// that would not work fail at install, saying what to do.
func TestChartRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, values, want string }{
		{"plaintext gRPC without saying so", "tls: {enabled: false}",
			"set tls.allowPlaintextDevelopmentMode=true"},
		{"the local backend on three replicas", "config: {key_rings: [{name: default, backend: 'local:///var/lib/signet'}]}",
			"3 replicas would publish different JWKS"},
		{"Vault Kubernetes auth reading the default token", "config: {key_rings: [{name: default, backend: 'vault:///transit?auth=kubernetes&role=signet'}]}",
			"add jwt_file=/var/run/secrets/vault/token"},
		{"a Vault URI without a host and no vault.address", "vault: {address: ''}",
			"set vault.address"},
		{"cert-manager without an issuer", "tls: {certManager: {enabled: true}}",
			"tls.certManager.enabled needs tls.certManager.issuerRef.name"},
		{"two client CAs", "tls: {clientCA: {secretName: a, configMapName: b}}",
			"set secretName or configMapName, not both"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := renderValues(t, c.values)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("values %s:\ngot  %v\nwant an error containing %q", c.values, err, c.want)
			}
		})
	}
}

// TestValuesSchemaRejectsTypos: a misspelt or unknown key fails at install
// (Helm validates values against values.schema.json before rendering),
// naming the key; so do keys the chart owns and values of the wrong kind.
func TestValuesSchemaRejectsTypos(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ values, want string }{
		{"replicaCont: 3", "replicaCont"},
		{"tls: {enabeld: false}", "enabeld"},
		{"services: {public: {prot: 8080}}", "prot"},
		{"config: {key_ring: []}", "key_ring"},
		{"config: {key_rings: [{name: default, backend: 'vault:///transit', token_max_tll: 1h}]}", "token_max_tll"},
		{"policy: {grants: [{identity: 'spiffe://x/*', sgin: []}]}", "sgin"},
		{"probes: {readiness: {path: /ready}}", "path"},
		// The chart owns the listeners and file paths: they must agree with the pod.
		{"config: {grpc: {listen: '0.0.0.0:9443'}}", "grpc"},
		{"config: {policy_file: /tmp/policy.yaml}", "policy_file"},
		{"config: {http: {listen: '0.0.0.0:80'}}", "listen"},
		{"config: {state_dir: /tmp}", "state_dir"},
		{"config: {peers: {addresses: ['x:1']}}", "peers"},
		{"startup: {peers: {identities: ['signet']}}", "identities"},
		// Wrong kinds and values.
		{"replicaCount: 0", "replicaCount"},
		{"config: {backend_timeout: 5}", "backend_timeout"},
		{"config: {backend_timeout: 5 seconds}", "backend_timeout"},
		{"config: {key_rings: [{name: Default, backend: 'vault:///transit'}]}", "name"},
		{"config: {key_rings: [{name: default, backend: 'vault:///transit', algorithm: HS256}]}", "algorithm"},
		{"image: {digest: latest}", "digest"},
	} {
		_, err := renderValues(t, c.values)
		if err == nil || !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %s:\ngot  %v\nwant a schema error naming %q", c.values, err, c.want)
		}
	}
}

// TestValuesSchemaMatchesSignetConfig: the schema's config section has every
// field of Signet's config file and key rings but the ones the chart fills
// in, and nothing else, so that a new config field is not refused at install
// (and no removed one accepted).
func TestValuesSchemaMatchesSignetConfig(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema schemaNode
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatal(err)
	}
	cfg := schema.Properties["config"]
	// What the chart sets itself, and kubernetes_signer, which it does not
	// offer: that signer serves kube-apiserver on its own control-plane
	// host's Unix socket (docs/kubernetes.md), not from a Deployment.
	chartOwned := map[string]bool{"grpc": true, "http.listen": true, "admin.listen": true, "policy_file": true,
		"kubernetes_signer": true, "state_dir": true, "peers": true}
	want := yamlFields(reflect.TypeFor[config.Config](), "", chartOwned)
	got := cfg.fields("")
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("values.schema.json config has\n  %v\nSignet's config (without what the chart owns) has\n  %v", got, want)
	}
}

type schemaNode struct {
	Type       any                    `json:"type"`
	Properties map[string]*schemaNode `json:"properties"`
	Items      *schemaNode            `json:"items"`
}

// fields lists the leaf fields under n, items of arrays included (a[].b).
func (n *schemaNode) fields(prefix string) []string {
	var out []string
	for name, p := range n.Properties {
		key := prefix + name
		switch {
		case len(p.Properties) > 0:
			out = append(out, p.fields(key+".")...)
		case p.Items != nil && len(p.Items.Properties) > 0:
			out = append(out, p.Items.fields(key+"[].")...)
		default:
			out = append(out, key)
		}
	}
	return out
}

// yamlFields lists the YAML fields of a config struct the same way.
func yamlFields(t reflect.Type, prefix string, skip map[string]bool) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		key := prefix + name
		if name == "" || name == "-" || skip[key] {
			continue
		}
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeFor[config.Duration]():
			out = append(out, yamlFields(ft, key+".", skip)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, yamlFields(ft.Elem(), key+"[].", skip)...)
		default:
			out = append(out, key)
		}
	}
	return out
}

// TestChartREADME: the values table in README.md is what `make chart-docs`
// writes from values.schema.json and values.yaml.
func TestChartREADME(t *testing.T) {
	t.Parallel()
	want, got, err := chartdoc.README(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("deploy/helm/signet/README.md's values table is stale: run make chart-docs")
	}
	// Every value the chart has is in the table.
	c := loadChart(t)
	var missing []string
	var walk func(prefix string, v map[string]any)
	walk = func(prefix string, v map[string]any) {
		for k, x := range v {
			key := prefix + k
			if m, ok := x.(map[string]any); ok && len(m) > 0 && !bytes.Contains(got, []byte("| `"+key+"` |")) {
				walk(key+".", m)
				continue
			}
			if !bytes.Contains(got, []byte("| `"+key+"` |")) {
				missing = append(missing, key)
			}
		}
	}
	walk("", c.Values)
	if len(missing) > 0 {
		t.Errorf("values missing from the README's table: %v", missing)
	}
}
