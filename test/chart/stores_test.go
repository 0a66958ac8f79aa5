package chart

// The tests of this file render the chart offline, as `helm template` does
// (values checked against values.schema.json first), and need no cluster:
// go test -short ./chart/ runs them.

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/webhook"
	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
)

const (
	tenant   = "11111111-2222-3333-4444-555555555555"
	clientID = "00000000-0000-0000-0000-0000000000c1"
	provider = "//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/my-pool/providers/my-cluster"
)

// renderFiles renders the chart with vals as `helm install` does: the
// values are checked against values.schema.json, then the templates run.
func renderFiles(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	ch, err := loader.Load(framework.Root() + "/charts/secctx")
	if err != nil {
		t.Fatal(err)
	}
	v, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "secctx", Namespace: releaseNS, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, v)
}

// configOf renders the chart and reads its ConfigMap's config.yaml as
// secctx does (webhook.LoadConfig: strict, an unknown or repeated key is an
// error), then validates it as secctx does at start.
func configOf(t *testing.T, vals map[string]any) (webhook.Config, map[string]string) {
	t.Helper()
	files, err := renderFiles(t, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	var cm corev1.ConfigMap
	if err := yaml.UnmarshalStrict([]byte(files["secctx/templates/configmap.yaml"]), &cm); err != nil {
		t.Fatalf("configmap.yaml: %v", err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := webhook.LoadConfig(path)
	if err != nil {
		t.Fatalf("%v\n%s", err, cm.Data["config.yaml"])
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("secctx refuses the rendered config: %v\n%s", err, cm.Data["config.yaml"])
	}
	return cfg, files
}

func injectVals(inj map[string]any) map[string]any {
	return map[string]any{"config": map[string]any{"inject": inj}}
}

func caPEM(t *testing.T) string {
	t.Helper()
	ca, err := cluster.NewCA("store-ca")
	if err != nil {
		t.Fatal(err)
	}
	return string(ca.CertPEM)
}

// TestStoresRender: backends, gcp and azure reach secctx's config as set,
// and only when set; the config decodes strictly and validates.
func TestStoresRender(t *testing.T) {
	ca := caPEM(t)
	allStores := []any{
		map[string]any{"store": "aws"},
		map[string]any{"store": "gcp"},
		map[string]any{"store": "azure"},
		map[string]any{"group": "secret/*", "store": "vault"},
		map[string]any{"group": "team-?-*", "store": "kubernetes"},
	}
	tests := []struct {
		name     string
		inject   map[string]any
		backend  string
		backends []inject.BackendRule
		gcp      inject.GCPConfig
		azure    inject.AzureConfig
		absent   []string // keys config.yaml must not have
	}{
		{
			name:    "defaults: no rules, no gcp, no azure",
			backend: "kubernetes",
			absent:  []string{"backends:", "gcp:", "azure:", "federation:"},
		},
		{
			name:    "GKE: the project alone, no federation",
			inject:  map[string]any{"backend": "gcp", "gcp": map[string]any{"project": "my-project"}},
			backend: "gcp",
			gcp:     inject.GCPConfig{Project: "my-project"},
			absent:  []string{"backends:", "azure:", "federation:", "endpoint:", "metadataHost:", "caBundle:"},
		},
		{
			name:    "federation's fields without its audience are not rendered",
			inject:  map[string]any{"backend": "gcp", "gcp": map[string]any{"project": "my-project", "federation": map[string]any{"audience": ""}}},
			backend: "gcp",
			gcp:     inject.GCPConfig{Project: "my-project"},
			absent:  []string{"federation:"},
		},
		{
			name:    "AKS: the tenant alone",
			inject:  map[string]any{"backend": "azure", "azure": map[string]any{"tenantID": tenant}},
			backend: "azure",
			azure:   inject.AzureConfig{TenantID: tenant},
			absent:  []string{"backends:", "gcp:", "clientID:", "authorityHost:", "vaultSuffix:", "taskIdentity:"},
		},
		{
			name:    "AKS: the task gets the identity too",
			inject:  map[string]any{"backend": "azure", "azure": map[string]any{"tenantID": tenant, "taskIdentity": true}},
			backend: "azure",
			azure:   inject.AzureConfig{TenantID: tenant, TaskIdentity: true},
		},
		{
			name: "every store, every field",
			inject: map[string]any{
				"backend":  "kubernetes",
				"backends": allStores,
				"vault":    map[string]any{"mode": "agent", "address": "https://vault.vault.svc:8200"},
				"gcp": map[string]any{
					"project": "my-project", "endpoint": "private.googleapis.com:443", "metadataHost": "169.254.169.254:80", "caBundle": ca,
					"federation": map[string]any{
						"audience": provider, "tokenAudience": "my-cluster", "tokenURL": "https://sts.example.com/v1/token",
						"serviceAccount": "secrets-reader@my-project.iam.gserviceaccount.com", "iamEndpoint": "https://iam.example.com",
					},
				},
				"azure": map[string]any{
					"tenantID": tenant, "clientID": clientID, "authorityHost": "https://login.microsoftonline.us/",
					"vaultSuffix": "vault.usgovcloudapi.net", "caBundle": ca,
				},
			},
			backend: "kubernetes",
			backends: []inject.BackendRule{
				{Store: "aws"}, {Store: "gcp"}, {Store: "azure"},
				{Group: "secret/*", Store: "vault"}, {Group: "team-?-*", Store: "kubernetes"},
			},
			gcp: inject.GCPConfig{
				Project: "my-project", Endpoint: "private.googleapis.com:443", MetadataHost: "169.254.169.254:80", CABundle: ca,
				Federation: &inject.GCPFederation{
					Audience: provider, TokenAudience: "my-cluster", TokenURL: "https://sts.example.com/v1/token",
					ServiceAccount: "secrets-reader@my-project.iam.gserviceaccount.com", IAMEndpoint: "https://iam.example.com",
				},
			},
			azure: inject.AzureConfig{
				TenantID: tenant, ClientID: clientID, AuthorityHost: "https://login.microsoftonline.us/",
				VaultSuffix: "vault.usgovcloudapi.net", CABundle: ca,
			},
		},
		{
			name: "docs/install.md's example",
			inject: map[string]any{
				"backend": "kubernetes",
				"backends": []any{
					map[string]any{"store": "aws"}, map[string]any{"store": "gcp"}, map[string]any{"store": "azure"},
					map[string]any{"group": "secret/*", "store": "vault"},
				},
				"vault": map[string]any{"mode": "agent", "address": "https://vault.vault.svc:8200"},
				"gcp":   map[string]any{"project": "my-project"},
				"azure": map[string]any{"tenantID": tenant},
			},
			backend:  "kubernetes",
			backends: []inject.BackendRule{{Store: "aws"}, {Store: "gcp"}, {Store: "azure"}, {Group: "secret/*", Store: "vault"}},
			gcp:      inject.GCPConfig{Project: "my-project"},
			azure:    inject.AzureConfig{TenantID: tenant},
			absent:   []string{"federation:"},
		},
		{
			name: "azure backend, one team's Secrets, gcp by shape",
			inject: map[string]any{
				"backend":  "azure",
				"backends": []any{map[string]any{"group": "team-a-*", "store": "kubernetes"}, map[string]any{"store": "gcp"}},
				"azure":    map[string]any{"tenantID": tenant},
			},
			backend:  "azure",
			backends: []inject.BackendRule{{Group: "team-a-*", Store: "kubernetes"}, {Store: "gcp"}},
			azure:    inject.AzureConfig{TenantID: tenant},
			absent:   []string{"gcp:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var vals map[string]any
			if tt.inject != nil {
				vals = injectVals(tt.inject)
			}
			cfg, files := configOf(t, vals)
			got := cfg.Inject
			if got.Backend != tt.backend {
				t.Errorf("backend %q, want %q", got.Backend, tt.backend)
			}
			if diff := cmp.Diff(tt.backends, got.Backends); diff != "" {
				t.Errorf("backends (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.gcp, got.GCP); diff != "" {
				t.Errorf("gcp (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.azure, got.Azure); diff != "" {
				t.Errorf("azure (-want +got):\n%s", diff)
			}
			text := files["secctx/templates/configmap.yaml"]
			for _, k := range tt.absent {
				if strings.Contains(text, k) {
					t.Errorf("config.yaml has %s:\n%s", k, text)
				}
			}
			// Reading a pod's ServiceAccount (its azure.workload.identity/
			// client-id) needs get on serviceaccounts, which the chart grants
			// in every configuration; the stores add no rule.
			rules := clusterRoleRules(t, files["secctx/templates/rbac.yaml"])
			if !slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
				return slices.Contains(r.APIGroups, "") && slices.Contains(r.Resources, "serviceaccounts") && slices.Contains(r.Verbs, "get")
			}) {
				t.Errorf("the ClusterRole cannot get serviceaccounts: %+v", rules)
			}
			defaults, err := renderFiles(t, nil)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(clusterRoleRules(t, defaults["secctx/templates/rbac.yaml"]), rules); diff != "" {
				t.Errorf("the stores changed the ClusterRole (-defaults +got):\n%s", diff)
			}
		})
	}
}

// clusterRoleRules are the rules of the ClusterRole secctx in rbac.yaml.
func clusterRoleRules(t *testing.T, stream string) []rbacv1.PolicyRule {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(stream)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			t.Fatal("rbac.yaml: no ClusterRole secctx")
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, []byte("kind: ClusterRole\n")) {
			continue
		}
		var cr rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict(doc, &cr); err != nil {
			t.Fatal(err)
		}
		if cr.Name == "secctx" {
			return cr.Rules
		}
	}
}

// TestStoresSchema: values.schema.json refuses, at `helm install`, store
// settings secctx would refuse at start (a fail-closed webhook that does not
// start refuses every labelled pod), naming the value.
func TestStoresSchema(t *testing.T) {
	rule := func(r map[string]any) map[string]any { return injectVals(map[string]any{"backends": []any{r}}) }
	gcp := func(g map[string]any) map[string]any { return injectVals(map[string]any{"gcp": g}) }
	fed := func(f map[string]any) map[string]any { return gcp(map[string]any{"federation": f}) }
	azure := func(a map[string]any) map[string]any { return injectVals(map[string]any{"azure": a}) }
	tests := []struct {
		name string
		vals map[string]any
		want string
	}{
		{"unknown backend", injectVals(map[string]any{"backend": "keepass"}), "backend"},
		{"bad store name", rule(map[string]any{"store": "gcs"}), "store"},
		{"store's name in capitals", rule(map[string]any{"store": "AWS"}), "store"},
		{"rule without store", rule(map[string]any{"group": "secret/*"}), "store"},
		{"unknown key in a rule", rule(map[string]any{"store": "aws", "pattern": "arn:*"}), "pattern"},
		{"group too long", rule(map[string]any{"store": "aws", "group": strings.Repeat("a", 1025)}), "group"},
		{"vault rule without group", rule(map[string]any{"store": "vault"}), "group"},
		{"kubernetes rule with an empty group", rule(map[string]any{"store": "kubernetes", "group": ""}), "group"},
		{"backends not a list", injectVals(map[string]any{"backends": map[string]any{"store": "aws"}}), "backends"},
		{"unknown key under gcp", gcp(map[string]any{"projectID": "my-project"}), "projectID"},
		{"unknown key under gcp.federation", fed(map[string]any{"audience": provider, "pool": "x"}), "pool"},
		{"bad project", gcp(map[string]any{"project": "My Project"}), "project"},
		{"endpoint as a URL", gcp(map[string]any{"endpoint": "https://secretmanager.googleapis.com"}), "endpoint"},
		{"metadataHost without port", gcp(map[string]any{"metadataHost": "metadata.google.internal"}), "metadataHost"},
		{"audience not a provider", fed(map[string]any{"audience": "https://sts.googleapis.com"}), "audience"},
		{"federation's fields without audience", fed(map[string]any{"serviceAccount": "secrets-reader@my-project.iam.gserviceaccount.com"}), "audience"},
		{"serviceAccount not a Google one", fed(map[string]any{"audience": provider, "serviceAccount": "me@example.com"}), "serviceAccount"},
		{"tokenURL not a URL", fed(map[string]any{"audience": provider, "tokenURL": "sts.googleapis.com"}), "tokenURL"},
		{"bad tenantID", azure(map[string]any{"tenantID": "contoso.onmicrosoft.com"}), "tenantID"},
		{"bad clientID", azure(map[string]any{"tenantID": tenant, "clientID": "my-app"}), "clientID"},
		{"unknown key under azure", azure(map[string]any{"tenantID": tenant, "subscriptionID": tenant}), "subscriptionID"},
		{"authorityHost not a URL", azure(map[string]any{"tenantID": tenant, "authorityHost": "login.microsoftonline.com"}), "authorityHost"},
		{"vaultSuffix with a dot first", azure(map[string]any{"tenantID": tenant, "vaultSuffix": ".vault.azure.net"}), "vaultSuffix"},
		{"azure's fields without tenantID", azure(map[string]any{"clientID": clientID}), "tenantID"},
		{"backend azure without tenantID", injectVals(map[string]any{"backend": "azure"}), "tenantID"},
		{"an azure rule without tenantID", rule(map[string]any{"store": "azure"}), "tenantID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderFiles(t, tt.vals)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestVaultInjectorWithFetchedStore: the chart refuses, at install, vault
// in injector mode beside a store the fetch reads, as secctx would at start.
func TestVaultInjectorWithFetchedStore(t *testing.T) {
	for _, tt := range []struct {
		name   string
		inject map[string]any
		want   string
	}{
		{"vault backend, an aws rule", map[string]any{"backend": "vault", "backends": []any{map[string]any{"store": "aws"}}}, "with aws,"},
		{"a vault rule, gcp and azure rules",
			map[string]any{"backends": []any{map[string]any{"group": "secret/*", "store": "vault"}, map[string]any{"store": "gcp"}, map[string]any{"store": "azure"}},
				"azure": map[string]any{"tenantID": tenant}},
			"with gcp, azure,"},
		{"gcp backend, a vault rule", map[string]any{"backend": "gcp", "backends": []any{map[string]any{"group": "secret/*", "store": "vault"}}}, "with gcp,"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderFiles(t, injectVals(tt.inject))
			if err == nil || !strings.Contains(err.Error(), "vault in injector mode cannot share an installation "+tt.want) ||
				!strings.Contains(err.Error(), "config.inject.vault.mode to agent") {
				t.Fatalf("got %v, want the chart to refuse vault in injector mode %s", err, tt.want)
			}
			// secctx refuses the same config: with vault in agent mode the
			// chart renders it, and in injector mode secctx does not start.
			agent := map[string]any{}
			for k, v := range tt.inject {
				agent[k] = v
			}
			agent["vault"] = map[string]any{"mode": "agent", "address": "https://vault.vault.svc:8200"}
			cfg, _ := configOf(t, injectVals(agent))
			cfg.Inject.Vault.Mode = inject.VaultModeInjector
			if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "vault in injector mode") {
				t.Errorf("secctx accepts what the chart refuses: %v", err)
			}
		})
	}
}

// TestLint: `helm lint --strict` finds nothing wrong with the defaults or
// with every store configured.
func TestLint(t *testing.T) {
	for name, vals := range map[string]map[string]any{
		"defaults": nil,
		"stores": injectVals(map[string]any{
			"backend":  "gcp",
			"backends": []any{map[string]any{"store": "aws"}, map[string]any{"store": "azure"}, map[string]any{"group": "secret/*", "store": "vault"}},
			"vault":    map[string]any{"mode": "agent", "address": "https://vault.vault.svc:8200"},
			"gcp":      map[string]any{"project": "my-project", "federation": map[string]any{"audience": provider}},
			"azure":    map[string]any{"tenantID": tenant},
		}),
	} {
		t.Run(name, func(t *testing.T) {
			l := lint.All(framework.Root()+"/charts/secctx", vals, releaseNS, true)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				}
			}
		})
	}
}
