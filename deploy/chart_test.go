package deploy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/config"

	// The backend schemes a rendered config may name, as in cmd/signet.
	_ "github.com/signet-dev/signet/backends/awskms"
	_ "github.com/signet-dev/signet/backends/local"
	_ "github.com/signet-dev/signet/backends/pkcs11"
	_ "github.com/signet-dev/signet/backends/vault"
)

// scenario is one `helm install -f values.yaml` the chart must accept.
type scenario struct {
	name     string
	values   string
	replicas int32
	mtls     bool
	// Objects by gvk that must (true) or must not (false) be rendered.
	kinds map[string]bool
}

var scenarios = []scenario{
	{
		name: "defaults", values: "", replicas: 3, mtls: true,
		kinds: map[string]bool{"policy/v1/PodDisruptionBudget": true, "networking.k8s.io/v1/NetworkPolicy": true,
			"monitoring.coreos.com/v1/ServiceMonitor": false, "cert-manager.io/v1/Certificate": false},
	},
	{
		// Vault reached by its address, logged in with its Kubernetes auth
		// method as the pod's service account; TLS from cert-manager; the
		// Prometheus Operator scraping and alerting.
		name: "vault-kubernetes-auth", replicas: 3, mtls: true,
		values: `
config:
  issuer: https://signet.corp.example
  key_rings:
    - name: default
      backend: vault://vault.corp.example:8200/transit?auth=kubernetes&role=signet-prod&auth_mount=kubernetes-prod&jwt_file=/var/run/secrets/vault/token&key_prefix=signet-
      rotation_period: 720h
    - name: payments
      backend: vault://vault.corp.example:8200/transit?auth=kubernetes&role=signet-prod&auth_mount=kubernetes-prod&jwt_file=/var/run/secrets/vault/token&key.payments=payments-jwt
      algorithm: ES384
      token_max_ttl: 10m
  backend_timeout: 3s
  shutdown_timeout: 20s
policy:
  grants:
    - identity: "spiffe://corp.example/ns/payments/**"
      sign:
        - key_rings: [payments]
          audiences: [ledger, "payments-*"]
          subjects: ["$caller"]
          claims: [scope]
          max_ttl: 10m
          rate: {per_second: 50, burst: 100}
    - identity: spiffe://corp.example/ns/security/sa/key-admin
      rotate: ["*"]
      list: ["*"]
vault:
  address: ""
  caSecret: {name: vault-ca}
  kubernetesAuth: {audience: vault-prod}
tls:
  certManager:
    enabled: true
    issuerRef: {name: corp-internal-ca, kind: ClusterIssuer}
serviceMonitor: {enabled: true, labels: {release: prometheus}}
prometheusRule:
  enabled: true
  labels: {release: prometheus}
  runbookBaseURL: https://git.corp.example/platform/signet/-/blob/main/
`,
		kinds: map[string]bool{"monitoring.coreos.com/v1/ServiceMonitor": true, "monitoring.coreos.com/v1/PrometheusRule": true,
			"cert-manager.io/v1/Certificate": true},
	},
	{
		// AWS KMS with IRSA: credentials from the IAM role the service
		// account is annotated with; gRPC admitted from labelled namespaces.
		name: "awskms-irsa", replicas: 3, mtls: true,
		values: `
config:
  issuer: https://signet.corp.example
  key_rings:
    - name: default
      backend: awskms:?alias_prefix=signet-prod&sign_rate=200
      rotation_period: 720h
    - name: partner
      backend: awskms:?region=eu-central-1&alias_prefix=signet-prod
      algorithm: PS256
awsKms:
  roleArn: arn:aws:iam::123456789012:role/signet-prod
  region: eu-west-1
tls:
  secretName: signet-grpc-tls
  clientCA: {configMapName: corp-trust-bundle, key: bundle.pem}
networkPolicy:
  grpcFrom:
    - namespaceSelector:
        matchLabels: {signet.dev/client: "true"}
services:
  public: {type: LoadBalancer, port: 443}
  grpc: {headless: true}
`,
		kinds: map[string]bool{"cert-manager.io/v1/Certificate": false},
	},
	{
		// A development cluster: one replica on the local backend, gRPC in
		// plaintext on the pod's loopback, explicitly allowed.
		name: "dev-plaintext", replicas: 1, mtls: false,
		values: `
replicaCount: 1
tls: {enabled: false, allowPlaintextDevelopmentMode: true}
config:
  key_rings:
    - name: default
      backend: local:///var/lib/signet
  log: {level: debug, format: text}
credentials: {secretName: signet-dev-kek}
extraVolumes:
  - name: keys
    emptyDir: {}
extraVolumeMounts:
  - name: keys
    mountPath: /var/lib/signet
podDisruptionBudget: {enabled: false}
`,
		kinds: map[string]bool{"policy/v1/PodDisruptionBudget": false},
	},
	{
		// An HSM: the pkcs11 image (with the vendor's module added), the PIN
		// from a Secret mounted as a file.
		name: "pkcs11-hsm", replicas: 3, mtls: true,
		values: `
image: {repository: corp/signet-hsm, tag: 0.1.0-pkcs11}
config:
  key_rings:
    - name: default
      backend: pkcs11:token=signet?module-path=/opt/hsm/lib/libhsm-pkcs11.so&pin-source=file:/etc/signet-hsm/pin
      algorithm: ES256
  audit: {path: /var/log/signet/audit.log}
extraVolumes:
  - name: hsm-pin
    secret: {secretName: signet-hsm-pin, defaultMode: 0440}
  - name: audit
    emptyDir: {}
extraVolumeMounts:
  - {name: hsm-pin, mountPath: /etc/signet-hsm, readOnly: true}
  - {name: audit, mountPath: /var/log/signet}
`,
	},
}

// TestChart renders each scenario and checks every object.
func TestChart(t *testing.T) {
	t.Parallel()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			r := render(t, sc.values)
			c := newChecker(t, r)
			c.metadata()
			for gvk, want := range sc.kinds {
				if got := c.has(gvk); got != want {
					t.Errorf("%s rendered: %v, want %v\n%s", gvk, got, want, r)
				}
			}
			c.deployment(sc)
			c.configAndFiles(sc)
			c.services(sc)
			c.networkPolicy(sc)
			c.disruptionAndSpread(sc)
			c.monitoring()
			c.certificate()
			c.probesAgainstTheBinary()
		})
	}
}

// checker holds a rendered release and what the checks learn about it.
type checker struct {
	t         *testing.T
	r         *release
	fullname  string
	dep       *appsv1.Deployment
	pod       corev1.PodSpec
	ctr       corev1.Container
	podLabels labels.Set
	cfg       config.Config
	cfgYAML   []byte
}

func newChecker(t *testing.T, r *release) *checker {
	c := &checker{t: t, r: r}
	c.dep = one[appsv1.Deployment](t, r)
	c.fullname = c.dep.Name
	c.pod = c.dep.Spec.Template.Spec
	if len(c.pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(c.pod.Containers))
	}
	c.ctr = c.pod.Containers[0]
	c.podLabels = labels.Set(c.dep.Spec.Template.Labels)
	return c
}

func (c *checker) has(gvk string) bool {
	for _, o := range c.r.objects {
		if o.gvk == gvk {
			return true
		}
	}
	return false
}

// metadata: valid names and labels, the release's namespace, the
// recommended labels on every object.
func (c *checker) metadata() {
	t := c.t
	seen := map[string]bool{}
	for _, o := range c.r.objects {
		id := o.gvk + "/" + o.meta.Name
		if seen[id] {
			t.Errorf("%s rendered twice", id)
		}
		seen[id] = true
		if errs := validation.IsDNS1123Label(o.meta.Name); len(errs) > 0 {
			t.Errorf("%s: name %q: %v", o.source, o.meta.Name, errs)
		}
		if o.meta.Namespace != releaseNamespace {
			t.Errorf("%s %s: namespace %q, want the release's", o.gvk, o.meta.Name, o.meta.Namespace)
		}
		for k, v := range o.meta.Labels {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				t.Errorf("%s %s: label %s=%q: %v", o.gvk, o.meta.Name, k, v, errs)
			}
		}
		for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
			"app.kubernetes.io/managed-by", "helm.sh/chart"} {
			if o.meta.Labels[k] == "" {
				t.Errorf("%s %s lacks the label %s", o.gvk, o.meta.Name, k)
			}
		}
		if o.meta.Labels["app.kubernetes.io/instance"] != releaseName {
			t.Errorf("%s %s: instance label %q", o.gvk, o.meta.Name, o.meta.Labels["app.kubernetes.io/instance"])
		}
	}
}

// selects reports whether a selector picks this release's pods, and only
// pods of this release.
func (c *checker) selects(what string, sel map[string]string) {
	c.t.Helper()
	if len(sel) == 0 {
		c.t.Errorf("%s: empty selector (it would select every pod)", what)
		return
	}
	if !labels.SelectorFromSet(sel).Matches(c.podLabels) {
		c.t.Errorf("%s: selector %v does not match the pods' labels %v", what, sel, c.podLabels)
	}
	if sel["app.kubernetes.io/instance"] != releaseName || sel["app.kubernetes.io/name"] == "" {
		c.t.Errorf("%s: selector %v would also select other releases' pods", what, sel)
	}
}

func (c *checker) deployment(sc scenario) {
	t := c.t
	d := c.dep
	if d.Spec.Replicas == nil || *d.Spec.Replicas != sc.replicas {
		t.Errorf("replicas %v, want %d", d.Spec.Replicas, sc.replicas)
	}
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchExpressions) > 0 {
		t.Fatalf("selector %+v: want matchLabels only", d.Spec.Selector)
	}
	sel := d.Spec.Selector.MatchLabels
	c.selects("Deployment", sel)
	// A Deployment's selector is immutable: labels that change with an
	// upgrade would make every upgrade fail.
	for _, k := range []string{"app.kubernetes.io/version", "helm.sh/chart"} {
		if _, ok := sel[k]; ok {
			t.Errorf("the Deployment's selector holds %s, which changes between upgrades", k)
		}
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy %+v: want a rolling update that never has fewer ready replicas", s)
	}

	// No container runs as root, or could become root.
	p := c.pod
	psc := p.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and a non-zero runAsUser", psc)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccompProfile: want RuntimeDefault")
	}
	if p.HostNetwork || p.HostPID || p.HostIPC {
		t.Error("the pod shares a host namespace")
	}
	if p.AutomountServiceAccountToken == nil || *p.AutomountServiceAccountToken {
		t.Error("the pod mounts the service account's API token: Signet does not call the Kubernetes API")
	}
	for _, ctr := range append(slices.Clone(p.InitContainers), p.Containers...) {
		sc := ctr.SecurityContext
		if sc == nil {
			t.Errorf("container %s has no securityContext", ctr.Name)
			continue
		}
		nonRoot := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot || sc.RunAsNonRoot == nil && psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
		if !nonRoot || sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("container %s may run as root", ctr.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation must be false", ctr.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s is privileged", ctr.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: the root file system must be read-only", ctr.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s: capabilities %+v, want all dropped and none added", ctr.Name, sc.Capabilities)
		}
		if sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("container %s: seccomp %s", ctr.Name, sc.SeccompProfile.Type)
		}
	}
	if img := c.ctr.Image; strings.HasSuffix(img, ":latest") || !strings.Contains(img, ":") && !strings.Contains(img, "@") {
		t.Errorf("image %q: want a tag or digest, never latest", img)
	}

	// The config is what the pod runs with: a change must roll the pods.
	cm := configMapNamed(c.r, c.fullname+"-config")
	if cm == nil {
		t.Fatalf("no ConfigMap %s-config\n%s", c.fullname, c.r)
	}
	sum := sha256.Sum256([]byte(strings.TrimSuffix(cm.Data["signet.yaml"], "\n")))
	if got := d.Spec.Template.Annotations["checksum/config"]; got != hex.EncodeToString(sum[:]) {
		t.Errorf("checksum/config %q is not the config's sha256: a config change would not roll the pods", got)
	}
}

// mount is what a path in the container is, according to its volume mounts.
type mount struct {
	volume   string
	kind     string // configMap, secret, serviceAccountToken, emptyDir, other
	name     string // the ConfigMap or Secret
	key      string
	audience string
	readOnly bool
}

// resolve finds what the container sees at an absolute path.
func (c *checker) resolve(p string) (mount, bool) {
	var best *corev1.VolumeMount
	for i, m := range c.ctr.VolumeMounts {
		mp := strings.TrimSuffix(m.MountPath, "/")
		if (p == mp || strings.HasPrefix(p, mp+"/")) && (best == nil || len(mp) > len(best.MountPath)) {
			best = &c.ctr.VolumeMounts[i]
		}
	}
	if best == nil {
		return mount{}, false
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(p, strings.TrimSuffix(best.MountPath, "/")), "/")
	for _, v := range c.pod.Volumes {
		if v.Name != best.Name {
			continue
		}
		m := mount{volume: v.Name, readOnly: best.ReadOnly}
		fromItems := func(kind, name string, items []corev1.KeyToPath) (mount, bool) {
			if len(items) == 0 {
				m.kind, m.name, m.key = kind, name, rel
				return m, rel != "" && !strings.Contains(rel, "/")
			}
			for _, it := range items {
				if it.Path == rel {
					m.kind, m.name, m.key = kind, name, it.Key
					return m, true
				}
			}
			return m, false
		}
		switch {
		case v.ConfigMap != nil:
			return fromItems("configMap", v.ConfigMap.Name, v.ConfigMap.Items)
		case v.Secret != nil:
			return fromItems("secret", v.Secret.SecretName, v.Secret.Items)
		case v.EmptyDir != nil:
			m.kind = "emptyDir"
			return m, true
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				var got mount
				var ok bool
				switch {
				case s.ConfigMap != nil:
					got, ok = fromItems("configMap", s.ConfigMap.Name, s.ConfigMap.Items)
				case s.Secret != nil:
					got, ok = fromItems("secret", s.Secret.Name, s.Secret.Items)
				case s.ServiceAccountToken != nil && s.ServiceAccountToken.Path == rel:
					got, ok = mount{volume: v.Name, kind: "serviceAccountToken", audience: s.ServiceAccountToken.Audience, readOnly: best.ReadOnly}, true
				}
				if ok {
					return got, true
				}
			}
			return m, false
		default:
			m.kind = "other"
			return m, true
		}
	}
	c.t.Errorf("volume mount %s names no volume", best.Name)
	return mount{}, false
}

// readFile reads a file as the container would: from a rendered ConfigMap.
func (c *checker) readFile(p string) ([]byte, error) {
	m, ok := c.resolve(p)
	if !ok {
		return nil, fmt.Errorf("open %s: no volume mounts it", p)
	}
	if m.kind != "configMap" {
		return nil, fmt.Errorf("open %s: it is a %s, not a rendered ConfigMap", p, m.kind)
	}
	cm := configMapNamed(c.r, m.name)
	if cm == nil {
		return nil, fmt.Errorf("open %s: ConfigMap %s is not rendered by the chart", p, m.name)
	}
	data, ok := cm.Data[m.key]
	if !ok {
		return nil, fmt.Errorf("open %s: ConfigMap %s has no key %s", p, m.name, m.key)
	}
	return []byte(data), nil
}

// configAndFiles: the container runs `serve --config` with the rendered
// config, which passes Signet's own check-config (authz.CheckConfig, the
// policy read from where the pod has it mounted), and every file the config
// names is mounted where it says, from the right source.
func (c *checker) configAndFiles(sc scenario) {
	t := c.t
	args := c.ctr.Args
	if len(c.ctr.Command) > 0 {
		t.Errorf("command %v overrides the image's entrypoint", c.ctr.Command)
	}
	if len(args) != 3 || args[0] != "serve" || args[1] != "--config" {
		t.Fatalf("args %v: want serve --config FILE", args)
	}
	m, ok := c.resolve(args[2])
	if !ok || m.kind != "configMap" || m.name != c.fullname+"-config" || !m.readOnly {
		t.Fatalf("--config %s is not mounted read-only from the config ConfigMap: %+v", args[2], m)
	}
	data, err := c.readFile(args[2])
	if err != nil {
		t.Fatal(err)
	}
	c.cfgYAML = data
	cfg, err := authz.CheckConfig(data, c.readFile)
	if err != nil {
		t.Fatalf("the rendered config does not pass check-config: %v\n%s", err, data)
	}
	c.cfg = cfg

	if cfg.MTLS() != sc.mtls {
		t.Errorf("mTLS %v, want %v", cfg.MTLS(), sc.mtls)
	}
	if cfg.MTLS() {
		m, ok := c.resolve(cfg.PolicyFile)
		if !ok || m.kind != "configMap" || m.name != c.fullname+"-policy" || m.key != "policy.yaml" {
			t.Errorf("policy_file %s is not the policy ConfigMap's policy.yaml: %+v", cfg.PolicyFile, m)
		}
		// No subPath anywhere: a subPath mount never sees the kubelet's
		// updates, and the policy and certificates must reload.
		for _, vm := range c.ctr.VolumeMounts {
			if vm.SubPath != "" || vm.SubPathExpr != "" {
				t.Errorf("volume mount %s uses subPath: its files would never be updated", vm.Name)
			}
		}
		tlsSecret := c.tlsSecretName()
		for file, key := range map[string]string{cfg.GRPC.TLS.CertFile: "tls.crt", cfg.GRPC.TLS.KeyFile: "tls.key"} {
			if m, ok := c.resolve(file); !ok || m.kind != "secret" || m.name != tlsSecret || m.key != key {
				t.Errorf("%s is not %s of Secret %s: %+v", file, key, tlsSecret, m)
			}
		}
		caSource, caKey := c.clientCA()
		if m, ok := c.resolve(cfg.GRPC.TLS.ClientCAFile); !ok || m.kind+"/"+m.name != caSource || m.key != caKey {
			t.Errorf("client_ca_file %s is not %s of %s: %+v", cfg.GRPC.TLS.ClientCAFile, caKey, caSource, m)
		}
	} else if configMapNamed(c.r, c.fullname+"-policy") != nil {
		t.Error("a policy ConfigMap without mTLS: Signet refuses policy_file without grpc.tls")
	}

	env := map[string]string{}
	for _, e := range c.ctr.Env {
		env[e.Name] = e.Value
	}
	if ca := env["VAULT_CACERT"]; ca != "" {
		if m, ok := c.resolve(ca); !ok || m.kind != "secret" {
			t.Errorf("VAULT_CACERT %s is not mounted from a Secret: %+v", ca, m)
		}
	}
	vaultAudience := c.r.values["vault"].(map[string]any)["kubernetesAuth"].(map[string]any)["audience"]
	for _, ring := range cfg.KeyRings {
		u, err := url.Parse(ring.Backend)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		// Files a backend reads: each mounted, secrets from Secrets.
		for _, k := range []string{"jwt_file", "token_file", "secret_id_file", "ca_file", "client_cert", "client_key"} {
			if f := q.Get(k); f != "" {
				if m, ok := c.resolve(f); !ok || m.kind == "configMap" || m.kind == "emptyDir" {
					t.Errorf("key ring %s: %s=%s is not mounted from a Secret or token: %+v", ring.Name, k, f, m)
				}
			}
		}
		switch u.Scheme {
		case "vault":
			if u.Host == "" && env["VAULT_ADDR"] == "" {
				t.Errorf("key ring %s: %s names no host and VAULT_ADDR is not set", ring.Name, ring.Backend)
			}
			if q.Get("auth") == "kubernetes" {
				m, ok := c.resolve(q.Get("jwt_file"))
				if !ok || m.kind != "serviceAccountToken" || m.audience != vaultAudience {
					t.Errorf("key ring %s: jwt_file %q is not a service account token for audience %v: %+v", ring.Name, q.Get("jwt_file"), vaultAudience, m)
				}
			}
		case "pkcs11":
			if src := q.Get("pin-source"); strings.HasPrefix(src, "file:") {
				if m, ok := c.resolve(strings.TrimPrefix(src, "file:")); !ok || m.kind != "secret" {
					t.Errorf("key ring %s: the PIN file %s is not mounted from a Secret: %+v", ring.Name, src, m)
				}
			}
		case "local":
			dir := u.Path
			if u.Opaque != "" {
				dir = u.Opaque
			}
			if m, ok := c.resolve(path.Clean(dir)); !path.IsAbs(dir) || !ok || m.kind != "emptyDir" && m.kind != "other" || m.readOnly {
				t.Errorf("key ring %s: %s is not a writable volume (the root file system is read-only): %+v", ring.Name, dir, m)
			}
		}
	}
	if a := cfg.Audit.Path; a != "" && a != "-" {
		if m, ok := c.resolve(a); !ok || m.kind == "configMap" || m.kind == "secret" || m.readOnly {
			t.Errorf("audit.path %s is not on a writable volume: %+v", a, m)
		}
	}

	// A terminating replica sleeps, then shuts down gracefully: both must
	// fit in the grace period, or in-flight requests are cut.
	var sleep time.Duration
	if l := c.ctr.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		sleep = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	grace := time.Duration(*c.pod.TerminationGracePeriodSeconds) * time.Second
	if sleep+cfg.ShutdownTimeout.D() >= grace {
		t.Errorf("preStop sleep %v + shutdown_timeout %v do not fit in terminationGracePeriodSeconds %v", sleep, cfg.ShutdownTimeout.D(), grace)
	}
}

func (c *checker) tlsSecretName() string {
	tls := c.r.values["tls"].(map[string]any)
	if n, _ := tls["secretName"].(string); n != "" {
		return n
	}
	return c.fullname + "-tls"
}

// clientCA returns "secret/NAME" or "configMap/NAME", and the key.
func (c *checker) clientCA() (string, string) {
	ca := c.r.values["tls"].(map[string]any)["clientCA"].(map[string]any)
	key := ca["key"].(string)
	if n, _ := ca["configMapName"].(string); n != "" {
		return "configMap/" + n, key
	}
	if n, _ := ca["secretName"].(string); n != "" {
		return "secret/" + n, key
	}
	return "secret/" + c.tlsSecretName(), key
}

// listenPort returns the port of a listen address.
func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	var p int32
	if _, err := fmt.Sscan(addr[i+1:], &p); err != nil || i < 0 {
		t.Fatalf("listen address %q", addr)
	}
	return p
}

// containerPort returns the number of a named container port.
func (c *checker) containerPort(name string) int32 {
	for _, p := range c.ctr.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func (c *checker) services(sc scenario) {
	t := c.t
	// The container's named ports are the config's listeners.
	for name, listen := range map[string]string{"grpc": c.cfg.GRPC.Listen, "http": c.cfg.HTTP.Listen, "admin": c.cfg.Admin.Listen} {
		if got, want := c.containerPort(name), listenPort(t, listen); got != want {
			t.Errorf("container port %s is %d, the config listens on %s", name, got, listen)
		}
	}
	byName := map[string]*corev1.Service{}
	for _, s := range all[corev1.Service](c.r) {
		byName[s.Name] = s
		c.selects("Service "+s.Name, s.Spec.Selector)
		for _, p := range s.Spec.Ports {
			if p.TargetPort.StrVal == "" || c.containerPort(p.TargetPort.StrVal) == 0 {
				t.Errorf("Service %s port %s: targetPort %v is not a named container port", s.Name, p.Name, p.TargetPort.String())
			}
		}
	}
	// Each Service exposes one port, and the admin port only the metrics one.
	want := map[string]string{c.fullname: "http"}
	if sc.mtls {
		// -peers: every ready replica, for a new one to ask (startup.peers).
		want[c.fullname+"-grpc"], want[c.fullname+"-peers"] = "grpc", "grpc"
	}
	if c.has("monitoring.coreos.com/v1/ServiceMonitor") {
		want[c.fullname+"-metrics"] = "admin"
	}
	if len(byName) != len(want) {
		t.Errorf("Services %v, want %v", slices.Collect(maps.Keys(byName)), want)
	}
	for name, port := range want {
		s := byName[name]
		if s == nil {
			t.Errorf("no Service %s", name)
			continue
		}
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].TargetPort.StrVal != port {
			t.Errorf("Service %s exposes %+v, want only the %s port", name, s.Spec.Ports, port)
		}
	}
	if s := byName[c.fullname+"-peers"]; s != nil {
		if s.Spec.ClusterIP != corev1.ClusterIPNone || s.Spec.PublishNotReadyAddresses {
			t.Errorf("the peers Service is not headless, or names replicas that are not ready")
		}
		if addrs := c.cfg.Peers.Addresses; len(addrs) != 1 || !strings.HasPrefix(addrs[0], s.Name+"."+s.Namespace+".svc:") ||
			!strings.HasSuffix(addrs[0], fmt.Sprintf(":%d", c.containerPort("grpc"))) {
			t.Errorf("peers.addresses %v: want the peers Service's name and the gRPC port", addrs)
		}
	}
	if s := byName[c.fullname+"-metrics"]; s != nil && s.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("the metrics Service is not headless")
	}
}

// networkPolicy: the admin port is admitted from the monitoring namespace
// only; every port named exists.
func (c *checker) networkPolicy(sc scenario) {
	t := c.t
	nps := all[networkingv1.NetworkPolicy](c.r)
	if len(nps) != 1 {
		t.Fatalf("%d NetworkPolicies, want 1", len(nps))
	}
	np := nps[0]
	c.selects("NetworkPolicy", np.Spec.PodSelector.MatchLabels)
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policyTypes %v", np.Spec.PolicyTypes)
	}
	monitoring := c.r.values["networkPolicy"].(map[string]any)["monitoringNamespace"].(string)
	admitted := map[string]bool{}
	for _, rule := range np.Spec.Ingress {
		if len(rule.Ports) == 0 {
			t.Errorf("an ingress rule admits every port: %+v", rule)
		}
		for _, p := range rule.Ports {
			name := p.Port.StrVal
			if c.containerPort(name) == 0 {
				t.Errorf("NetworkPolicy names port %v, which the container does not have", p.Port.String())
			}
			admitted[name] = true
			if name != "admin" {
				continue
			}
			if len(rule.From) != 1 || rule.From[0].NamespaceSelector == nil ||
				!reflect.DeepEqual(rule.From[0].NamespaceSelector.MatchLabels, map[string]string{"kubernetes.io/metadata.name": monitoring}) ||
				len(rule.From[0].NamespaceSelector.MatchExpressions) > 0 || rule.From[0].IPBlock != nil {
				t.Errorf("the admin port is admitted from %+v, want the %s namespace only", rule.From, monitoring)
			}
		}
	}
	for _, p := range []string{"http", "admin"} {
		if !admitted[p] {
			t.Errorf("the NetworkPolicy does not admit the %s port", p)
		}
	}
	if admitted["grpc"] != sc.mtls {
		t.Errorf("gRPC admitted: %v, with mTLS %v", admitted["grpc"], sc.mtls)
	}
}

func (c *checker) disruptionAndSpread(sc scenario) {
	t := c.t
	for _, pdb := range all[policyv1.PodDisruptionBudget](c.r) {
		c.selects("PodDisruptionBudget", pdb.Spec.Selector.MatchLabels)
		if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.IntValue() < 1 || int32(mu.IntValue()) >= sc.replicas {
			t.Errorf("PodDisruptionBudget maxUnavailable %v with %d replicas", mu, sc.replicas)
		}
	}
	keys := map[string]corev1.UnsatisfiableConstraintAction{}
	for _, tsc := range c.pod.TopologySpreadConstraints {
		c.selects("topology spread "+tsc.TopologyKey, tsc.LabelSelector.MatchLabels)
		keys[tsc.TopologyKey] = tsc.WhenUnsatisfiable
	}
	if keys["kubernetes.io/hostname"] != corev1.DoNotSchedule || keys["topology.kubernetes.io/zone"] != corev1.ScheduleAnyway {
		t.Errorf("topology spread %v: want nodes required and zones preferred", keys)
	}
}

// monitoring: the ServiceMonitor scrapes the admin port of this release's
// metrics Service; the PrometheusRule carries deploy/prometheus/alerts.yaml.
func (c *checker) monitoring() {
	t := c.t
	for _, sm := range all[monitoringv1.ServiceMonitor](c.r) {
		var matched []string
		for _, s := range all[corev1.Service](c.r) {
			if labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(s.Labels)) {
				matched = append(matched, s.Name)
			}
		}
		if !slices.Equal(matched, []string{c.fullname + "-metrics"}) {
			t.Errorf("the ServiceMonitor selects Services %v, want the metrics Service only", matched)
		}
		if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{releaseNamespace}) {
			t.Errorf("ServiceMonitor namespaces %v", sm.Spec.NamespaceSelector.MatchNames)
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor endpoints %+v: want port admin, /metrics", sm.Spec.Endpoints)
		}
	}
	for _, pr := range all[monitoringv1.PrometheusRule](c.r) {
		data, err := os.ReadFile("prometheus/alerts.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var shipped monitoringv1.PrometheusRuleSpec
		if err := sigsyaml.UnmarshalStrict(data, &shipped); err != nil {
			t.Fatalf("deploy/prometheus/alerts.yaml: %v", err)
		}
		base := c.r.values["prometheusRule"].(map[string]any)["runbookBaseURL"].(string)
		for gi := range shipped.Groups {
			for ri := range shipped.Groups[gi].Rules {
				rule := &shipped.Groups[gi].Rules[ri]
				if rule.Alert != "" && rule.Annotations["runbook_url"] == "" {
					t.Errorf("alert %s has no runbook_url", rule.Alert)
				}
				if u, ok := rule.Annotations["runbook_url"]; ok {
					rule.Annotations["runbook_url"] = base + u
				}
			}
		}
		if !reflect.DeepEqual(pr.Spec, shipped) {
			got, _ := sigsyaml.Marshal(pr.Spec)
			t.Errorf("the PrometheusRule is not deploy/prometheus/alerts.yaml (runbook URLs under %q):\n%s", base, got)
		}
	}
}

func (c *checker) certificate() {
	t := c.t
	for _, cert := range all[cmv1.Certificate](c.r) {
		if cert.Spec.SecretName != c.tlsSecretName() {
			t.Errorf("the Certificate writes Secret %s, the pods mount %s", cert.Spec.SecretName, c.tlsSecretName())
		}
		fqdn := c.fullname + "-grpc." + releaseNamespace + ".svc"
		if !slices.Contains(cert.Spec.DNSNames, fqdn) {
			t.Errorf("the Certificate's names %v lack the gRPC Service's %s", cert.Spec.DNSNames, fqdn)
		}
		if !slices.Contains(cert.Spec.Usages, cmv1.UsageServerAuth) {
			t.Errorf("Certificate usages %v lack server auth", cert.Spec.Usages)
		}
		if cert.Spec.IssuerRef.Name == "" {
			t.Error("the Certificate names no issuer")
		}
	}
}
