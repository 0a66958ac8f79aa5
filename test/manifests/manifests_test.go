// Package manifests tests the install manifests: config/ (kustomize) and
// charts/secctx (Helm) decode strictly into Kubernetes types, agree with each
// other, and agree with the code (webhook path, label, config defaults).
package manifests

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/pkg/securityctx"
	"github.com/secctx/secctx/pkg/webhook"
	"github.com/secctx/secctx/test/framework/cluster"
)

const namespace = "secctx-system"

var decoder = func() runtime.Decoder {
	s := runtime.NewScheme()
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
}()

// objects maps "Kind namespace/name" to the decoded object.
type objects map[string]runtime.Object

// addAll decodes every object of a YAML stream, strictly.
func (o objects) addAll(t *testing.T, src string, stream []byte) {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if j, err := yaml.YAMLToJSON(doc); err != nil || string(bytes.TrimSpace(j)) != "null" {
			o.add(t, src, doc)
		}
	}
}

// foreignGroups are API groups of the chart's optional objects whose types
// the scheme does not have (cert-manager's, the Prometheus Operator's);
// their objects are keyed from their metadata and not decoded further.
var foreignGroups = []string{"cert-manager.io/", "monitoring.coreos.com/"}

func (o objects) add(t *testing.T, src string, doc []byte) {
	t.Helper()
	var head struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Metadata   metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	for _, g := range foreignGroups {
		if strings.HasPrefix(head.APIVersion, g) {
			o[head.Kind+" "+head.Metadata.Namespace+"/"+head.Metadata.Name] = &corev1.List{}
			return
		}
	}
	obj, gvk, err := decoder.Decode(doc, nil, nil)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	m := metaOf(obj)
	key := gvk.Kind + " " + m.GetNamespace() + "/" + m.GetName()
	if _, dup := o[key]; dup {
		t.Fatalf("%s: %s twice", src, key)
	}
	o[key] = obj
}

func metaOf(obj runtime.Object) metav1.Object {
	return obj.(metav1.ObjectMetaAccessor).GetObjectMeta()
}

// loadKustomize builds a kustomization with kustomize's own library, as
// `kubectl apply -k` does.
func loadKustomize(t *testing.T, dir string, out objects) {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", dir, err)
	}
	b, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	out.addAll(t, dir, b)
}

func renderChart(t *testing.T, vals map[string]any) objects {
	t.Helper()
	files, err := renderFiles(vals)
	if err != nil {
		t.Fatalf("render chart: %v", err)
	}
	out := objects{}
	for name, content := range files {
		if strings.HasSuffix(name, "NOTES.txt") {
			continue
		}
		out.addAll(t, name, []byte(content))
	}
	return out
}

// renderFiles renders the chart as `helm install` does, values checked
// against values.schema.json first.
func renderFiles(vals map[string]any) (map[string]string, error) {
	chart, err := loader.Load("../../charts/secctx")
	if err != nil {
		return nil, err
	}
	v, err := chartutil.ToRenderValues(chart, vals, chartutil.ReleaseOptions{Name: "secctx", Namespace: namespace, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	if err := chartutil.ValidateAgainstSchema(chart, v["Values"].(chartutil.Values)); err != nil {
		return nil, err
	}
	return engine.Render(chart, v)
}

// normalize drops what legitimately differs: Helm's labels and checksum
// annotation, the image tag, the CA bundle (provided at install).
func normalize(objs objects) {
	for _, obj := range objs {
		m := metaOf(obj)
		m.SetLabels(nil)
		m.SetAnnotations(nil)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			o.Spec.Template.Annotations = nil
			o.Spec.Template.Spec.Containers[0].Image = ""
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			for i := range o.Webhooks {
				o.Webhooks[i].ClientConfig.CABundle = nil
			}
		}
	}
}

func TestKustomizeAndChartAgree(t *testing.T) {
	kust := objects{}
	loadKustomize(t, "../../config/default", kust)
	chart := renderChart(t, nil)
	delete(kust, "Namespace /"+namespace) // Helm installs into an existing namespace
	normalize(kust)
	normalize(chart)
	if diff := cmp.Diff(kust, chart); diff != "" {
		t.Errorf("config/ and charts/secctx differ (-kustomize +chart):\n%s", diff)
	}
}

// TestFlyteModeAgrees: config/flyte is the chart with flyte.enabled, and
// both select the two labels with one webhook each.
func TestFlyteModeAgrees(t *testing.T) {
	kust := objects{}
	loadKustomize(t, "../../config/flyte", kust)
	chart := renderChart(t, map[string]any{"flyte": map[string]any{"enabled": true}})
	delete(kust, "Namespace /"+namespace)
	normalize(kust)
	normalize(chart)
	if diff := cmp.Diff(kust, chart); diff != "" {
		t.Errorf("config/flyte and the chart with flyte.enabled differ (-kustomize +chart):\n%s", diff)
	}
	mwc := chart["MutatingWebhookConfiguration /secctx"].(*admissionregistrationv1.MutatingWebhookConfiguration)
	var selected []string
	for _, wh := range mwc.Webhooks {
		for k, v := range wh.ObjectSelector.MatchLabels {
			selected = append(selected, wh.Name+" "+k+"="+v)
		}
	}
	want := []string{"pods.secctx.dev " + securityctx.LabelInject + "=true", "flyte-pods.secctx.dev " + securityctx.LabelFlyteInject + "=true"}
	if diff := cmp.Diff(want, selected); diff != "" {
		t.Errorf("webhooks select (-want +got):\n%s", diff)
	}
}

func TestManifestsMatchTheCode(t *testing.T) {
	objs := objects{}
	loadKustomize(t, "../../config/default", objs)
	mwc := objs["MutatingWebhookConfiguration /secctx"].(*admissionregistrationv1.MutatingWebhookConfiguration)
	svc := objs["Service "+namespace+"/secctx-webhook"].(*corev1.Service)
	dep := objs["Deployment "+namespace+"/secctx"].(*appsv1.Deployment)
	cm := objs["ConfigMap "+namespace+"/secctx-config"].(*corev1.ConfigMap)

	if len(mwc.Webhooks) != 1 {
		t.Fatalf("want one webhook, have %d", len(mwc.Webhooks))
	}
	wh := mwc.Webhooks[0]
	ref := wh.ClientConfig.Service
	if ref == nil || ref.Name != svc.Name || ref.Namespace != namespace || *ref.Path != webhook.MutatePath {
		t.Errorf("webhook calls %+v; the Service is %s/%s and the path %s", ref, namespace, svc.Name, webhook.MutatePath)
	}
	if got := wh.ObjectSelector.MatchLabels[securityctx.LabelInject]; got != "true" {
		t.Errorf("objectSelector %v does not select %s=true", wh.ObjectSelector, securityctx.LabelInject)
	}
	if *wh.FailurePolicy != admissionregistrationv1.Fail || *wh.SideEffects != admissionregistrationv1.SideEffectClassNone ||
		*wh.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy || *wh.TimeoutSeconds != 5 ||
		*wh.MatchPolicy != admissionregistrationv1.Equivalent {
		t.Errorf("webhook policies: failure %s, sideEffects %s, reinvocation %s, timeout %d, match %s",
			*wh.FailurePolicy, *wh.SideEffects, *wh.ReinvocationPolicy, *wh.TimeoutSeconds, *wh.MatchPolicy)
	}
	excluded := strings.Join(wh.NamespaceSelector.MatchExpressions[0].Values, ",")
	if excluded != "kube-system,"+namespace {
		t.Errorf("namespaceSelector leaves out %s", excluded)
	}
	if r := wh.Rules[0]; strings.Join(r.Resources, ",") != "pods" || len(r.Operations) != 1 || r.Operations[0] != admissionregistrationv1.Create {
		t.Errorf("rules %+v: want CREATE on pods only", wh.Rules)
	}

	// The ConfigMap's config is valid and is exactly the code's defaults.
	cfg, err := loadConfigMap(t, cm)
	if err != nil {
		t.Fatal(err)
	}
	// Self-managed certificates name this install's objects.
	want := webhook.DefaultConfig()
	want.Certificates.Mode = webhook.CertModeSelf
	want.Certificates.Namespace = namespace
	want.Certificates.SecretName = dep.Spec.Template.Spec.Volumes[1].Name
	want.Certificates.ServiceName = svc.Name
	want.Certificates.WebhookConfigurationName = mwc.Name
	if _, ok := objs["Secret "+namespace+"/secctx-webhook-tls"]; !ok {
		t.Errorf("no Secret %s/secctx-webhook-tls for the certificate", namespace)
	}
	want.Certificates.SecretName = "secctx-webhook-tls"
	// The token sidecar runs secctx's own image.
	want.Inject.Agent.Image = dep.Spec.Template.Spec.Containers[0].Image
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("config.yaml differs from the defaults (-code +manifest):\n%s", diff)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("config.yaml: %v", err)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	chart, err := loader.Load("../../charts/secctx")
	if err != nil {
		t.Fatal(err)
	}
	if want := "ghcr.io/secctx/secctx:" + chart.Metadata.AppVersion; c.Image != want {
		t.Errorf("config/ deploys %s; the release (the chart's appVersion) is %s", c.Image, want)
	}
	if p := dep.Spec.Template.Spec.PriorityClassName; p != "system-cluster-critical" {
		t.Errorf("priorityClassName %q: a fail-closed webhook should not be evicted first", p)
	}
	for _, name := range []string{"ValidatingAdmissionPolicy /secctx-opt-in", "ValidatingAdmissionPolicyBinding /secctx-opt-in", "ClusterRole /secctx-metrics-reader"} {
		if _, ok := objs[name]; !ok {
			t.Errorf("config/default lacks %s", name)
		}
	}
	if c.Ports[0].ContainerPort != int32(cfg.Port) || c.VolumeMounts[1].MountPath != cfg.CertDir {
		t.Errorf("container port %d / cert mount %s; config says %d / %s", c.Ports[0].ContainerPort, c.VolumeMounts[1].MountPath, cfg.Port, cfg.CertDir)
	}
	if sc := c.SecurityContext; sc == nil || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || len(sc.Capabilities.Drop) != 1 {
		t.Errorf("container security context is not restricted: %+v", sc)
	}
}

func TestChartValues(t *testing.T) {
	objs := renderChart(t, map[string]any{
		"replicaCount": 3,
		"certificates": map[string]any{"mode": "provided", "caBundle": "Q0E="},
		"webhook":      map[string]any{"timeoutSeconds": 10, "excludeNamespaces": []any{"flyte"}},
		"config":       map[string]any{"logLevel": "debug"},
	})
	mwc := objs["MutatingWebhookConfiguration /secctx"].(*admissionregistrationv1.MutatingWebhookConfiguration)
	wh := mwc.Webhooks[0]
	if string(wh.ClientConfig.CABundle) != "CA" || *wh.TimeoutSeconds != 10 ||
		strings.Join(wh.NamespaceSelector.MatchExpressions[0].Values, ",") != "kube-system,"+namespace+",flyte" {
		t.Errorf("webhook: caBundle %q, timeout %d, excluded %v", wh.ClientConfig.CABundle, *wh.TimeoutSeconds, wh.NamespaceSelector.MatchExpressions[0].Values)
	}
	if dep := objs["Deployment "+namespace+"/secctx"].(*appsv1.Deployment); *dep.Spec.Replicas != 3 ||
		dep.Spec.Template.Spec.Containers[0].Image != "ghcr.io/secctx/secctx:0.1.0" {
		t.Errorf("deployment: replicas %d, image %s", *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Image)
	}
	if cm := objs["ConfigMap "+namespace+"/secctx-config"].(*corev1.ConfigMap); !strings.Contains(cm.Data["config.yaml"], "logLevel: debug") {
		t.Errorf("config: %s", cm.Data["config.yaml"])
	}
	crd := "CustomResourceDefinition /securitycontextpolicies.secctx.dev"
	if _, ok := objs[crd]; !ok {
		t.Errorf("the chart does not install the SecurityContextPolicy CRD by default")
	}
	objs = renderChart(t, map[string]any{"crds": map[string]any{"install": false}, "policy": map[string]any{"mode": "enforce"}})
	if _, ok := objs[crd]; ok {
		t.Errorf("crds.install false: the CRD is still there")
	}
	if cm := objs["ConfigMap "+namespace+"/secctx-config"].(*corev1.ConfigMap); !strings.Contains(cm.Data["config.yaml"], "policy:\n  mode: \"enforce\"") {
		t.Errorf("policy.mode: %s", cm.Data["config.yaml"])
	}
}

// TestChartReferenceChecks: Secrets are readable only with referenceChecks
// on, and then with get alone.
func TestChartReferenceChecks(t *testing.T) {
	secretRules := func(objs objects) []rbacv1.PolicyRule {
		var rules []rbacv1.PolicyRule
		for _, r := range objs["ClusterRole /secctx"].(*rbacv1.ClusterRole).Rules {
			if slices.Contains(r.Resources, "secrets") {
				rules = append(rules, r)
			}
		}
		return rules
	}
	if rules := secretRules(renderChart(t, nil)); len(rules) != 0 {
		t.Errorf("referenceChecks off: the ClusterRole reads Secrets: %v", rules)
	}
	for _, mode := range []string{"warn", "deny"} {
		objs := renderChart(t, map[string]any{"referenceChecks": mode})
		want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}
		if diff := cmp.Diff(want, secretRules(objs)); diff != "" {
			t.Errorf("referenceChecks %s: Secret rules (-want +got):\n%s", mode, diff)
		}
		if cm := objs["ConfigMap "+namespace+"/secctx-config"].(*corev1.ConfigMap); !strings.Contains(cm.Data["config.yaml"], "\nreferenceChecks: \""+mode+"\"\n") {
			t.Errorf("referenceChecks %s: %s", mode, cm.Data["config.yaml"])
		}
	}
}

// TestCertificateModes renders each mode and checks what it adds, and that
// RBAC grows only with self mode.
func TestCertificateModes(t *testing.T) {
	tests := []struct {
		name    string
		certs   map[string]any
		want    []string // object keys that must be there
		notWant []string
		check   func(t *testing.T, objs objects)
	}{
		{"self", nil,
			[]string{"Secret " + namespace + "/secctx-webhook-tls", "Role " + namespace + "/secctx", "RoleBinding " + namespace + "/secctx"},
			[]string{"Certificate " + namespace + "/secctx-webhook"},
			func(t *testing.T, objs objects) {
				dep := objs["Deployment "+namespace+"/secctx"].(*appsv1.Deployment)
				if dep.Spec.Template.Spec.Volumes[1].EmptyDir == nil {
					t.Errorf("self mode: certs volume is not an emptyDir: %+v", dep.Spec.Template.Spec.Volumes[1])
				}
				role := objs["Role "+namespace+"/secctx"].(*rbacv1.Role)
				for _, r := range role.Rules {
					own := map[string][]string{"secrets": {"secctx-webhook-tls"}, "leases": {"secctx-webhook-tls-rotation"}}[r.Resources[0]]
					if (slices.Contains(r.Verbs, "update") || slices.Contains(r.Verbs, "delete")) && !slices.Equal(r.ResourceNames, own) {
						t.Errorf("self mode: writes not limited to the certificate Secret and the rotation Lease: %+v", r)
					}
				}
			}},
		{"cert-manager", map[string]any{"mode": "cert-manager"},
			[]string{"Certificate " + namespace + "/secctx-webhook", "Issuer " + namespace + "/secctx-selfsigned"},
			[]string{"Secret " + namespace + "/secctx-webhook-tls", "Role " + namespace + "/secctx"},
			func(t *testing.T, objs objects) {
				mwc := objs["MutatingWebhookConfiguration /secctx"].(*admissionregistrationv1.MutatingWebhookConfiguration)
				if got := mwc.Annotations["cert-manager.io/inject-ca-from"]; got != namespace+"/secctx-webhook" {
					t.Errorf("cainjector annotation %q", got)
				}
			}},
		{"cert-manager with an issuer", map[string]any{"mode": "cert-manager", "certManager": map[string]any{"issuerRef": map[string]any{"name": "corp", "kind": "ClusterIssuer"}}},
			[]string{"Certificate " + namespace + "/secctx-webhook"},
			[]string{"Issuer " + namespace + "/secctx-selfsigned"}, nil},
		{"provided", map[string]any{"mode": "provided", "caBundle": "Q0E="},
			nil,
			[]string{"Secret " + namespace + "/secctx-webhook-tls", "Role " + namespace + "/secctx", "Certificate " + namespace + "/secctx-webhook"},
			func(t *testing.T, objs objects) {
				cr := objs["ClusterRole /secctx"].(*rbacv1.ClusterRole)
				want := []rbacv1.PolicyRule{
					{APIGroups: []string{""}, Resources: []string{"serviceaccounts"}, Verbs: []string{"get", "list", "watch"}},
					{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
					{APIGroups: []string{"secctx.dev"}, Resources: []string{"securitycontextpolicies"}, Verbs: []string{"get", "list", "watch"}},
					{APIGroups: []string{"authentication.k8s.io"}, Resources: []string{"tokenreviews"}, Verbs: []string{"create"}},
					{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
				}
				if diff := cmp.Diff(want, cr.Rules); diff != "" {
					t.Errorf("provided mode: ClusterRole grants more than reading service accounts, namespaces and policies and checking metrics clients (-want +got):\n%s", diff)
				}
				dep := objs["Deployment "+namespace+"/secctx"].(*appsv1.Deployment)
				if s := dep.Spec.Template.Spec.Volumes[1].Secret; s == nil || s.SecretName != "secctx-webhook-tls" {
					t.Errorf("provided mode: certs volume %+v", dep.Spec.Template.Spec.Volumes[1])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals := map[string]any{}
			if tt.certs != nil {
				vals["certificates"] = tt.certs
			}
			files, err := renderFiles(vals)
			if err != nil {
				t.Fatal(err)
			}
			objs := objects{}
			for name, content := range files {
				if !strings.HasSuffix(name, "NOTES.txt") {
					objs.addAll(t, name, []byte(content))
				}
			}
			for _, k := range tt.want {
				if _, ok := objs[k]; !ok {
					t.Errorf("missing %s; have %v", k, keys(objs))
				}
			}
			for _, k := range tt.notWant {
				if _, ok := objs[k]; ok {
					t.Errorf("unexpected %s", k)
				}
			}
			if tt.check != nil {
				tt.check(t, objs)
			}
			// The rendered config is one secctx accepts.
			cfg, err := loadConfigMap(t, objs["ConfigMap "+namespace+"/secctx-config"].(*corev1.ConfigMap))
			if err == nil {
				err = cfg.Validate()
			}
			if err != nil {
				t.Errorf("rendered config: %v", err)
			}
			if files["secctx/templates/NOTES.txt"] == "" {
				t.Error("no NOTES.txt")
			}
		})
	}
}

// TestSchemaRejectsBadValues: values.schema.json stops mistakes at
// `helm install`, naming the value.
func TestSchemaRejectsBadValues(t *testing.T) {
	tests := []struct {
		name string
		vals map[string]any
		want string
	}{
		{"replicas as a word", map[string]any{"replicaCount": "two"}, "replicaCount"},
		{"no replicas", map[string]any{"replicaCount": 0}, "replicaCount"},
		{"unknown mode", map[string]any{"certificates": map[string]any{"mode": "magic"}}, "mode"},
		{"provided without a CA", map[string]any{"certificates": map[string]any{"mode": "provided"}}, "caBundle"},
		{"unknown key", map[string]any{"replicas": 2}, "replicas"},
		{"timeout too long", map[string]any{"webhook": map[string]any{"timeoutSeconds": 31}}, "timeoutSeconds"},
		{"bad log level", map[string]any{"config": map[string]any{"logLevel": "loud"}}, "logLevel"},
		{"bad duration", map[string]any{"certificates": map[string]any{"self": map[string]any{"renewBefore": "90 days"}}}, "renewBefore"},
		{"native sidecars maybe", map[string]any{"config": map[string]any{"inject": map[string]any{"agent": map[string]any{"nativeSidecars": "maybe"}}}}, "nativeSidecars"},
		{"reference checks maybe", map[string]any{"referenceChecks": "maybe"}, "referenceChecks"},
		{"http host with a path", map[string]any{"config": map[string]any{"inject": map[string]any{"tokens": map[string]any{"httpHosts": []any{"idp/x"}}}}}, "httpHosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderFiles(tt.vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

func keys(o objects) []string {
	var ks []string
	for k := range o {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestChartTokenSettings: the chart passes httpHosts and the CA bundle into
// the config, where secctx reads them.
func TestChartTokenSettings(t *testing.T) {
	objs := renderChart(t, map[string]any{"config": map[string]any{"inject": map[string]any{"tokens": map[string]any{
		"httpHosts": []any{"10.0.0.200:8080"}, "caBundle": testCA(t)}}}})
	cfg, err := loadConfigMap(t, objs["ConfigMap "+namespace+"/secctx-config"].(*corev1.ConfigMap))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := cfg.Inject.Tokens.HTTPHosts; len(got) != 1 || got[0] != "10.0.0.200:8080" {
		t.Errorf("httpHosts %v", got)
	}
	if cfg.Inject.Tokens.CABundle != testCA(t) {
		t.Errorf("caBundle %q", cfg.Inject.Tokens.CABundle)
	}
}

// loadConfigMap reads secctx's config from its ConfigMap as secctx does,
// from a file.
func loadConfigMap(t *testing.T, cm *corev1.ConfigMap) (webhook.Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	return webhook.LoadConfig(path)
}

var (
	testCAOnce sync.Once
	testCAPEM  string
)

func testCA(t *testing.T) string {
	t.Helper()
	testCAOnce.Do(func() {
		ca, err := cluster.NewCA("test-ca")
		if err != nil {
			t.Fatal(err)
		}
		testCAPEM = string(ca.CertPEM)
	})
	return testCAPEM
}
