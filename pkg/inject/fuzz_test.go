package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"

	"github.com/secctx/secctx/pkg/securityctx"
)

// FuzzInject: for any annotation (and containers and status annotation) on a pod with
// init, native-sidecar and regular containers, Inject never panics; when it
// admits the pod, its patch only adds, applies cleanly to the raw pod and
// gives the typed result, and a second injection changes nothing; with each
// backend (0 kubernetes, 1 aws, 2 vault in agent mode, 3 vault injector).
func FuzzInject(f *testing.F) {
	for _, s := range []string{
		`{"secrets":[{"group":"my-credentials","key":"db_password","mountRequirement":"ENV_VAR","envVar":"DB_PASSWORD"}]}`,
		`{"secrets":[{"group":"my-certs","key":"tls.key","mountRequirement":"FILE","envVar":"TLS_KEY_PATH"}]}`,
		`{"runAs":{"k8sServiceAccount":"data-processing-sa","executionIdentity":"alice@example.com"}}`,
		`{"secrets":[{"group":"a"},{"group":"a","key":"b"},{"group":"a","groupVersion":"v","key":"c","mountRequirement":1}]}`,
		`{"secrets":[{"group":"app","mountRequirement":"ENV_VAR"},{"group":"x.y","key":"K","mountRequirement":2,"envVar":"P"}]}`,
		`{"secrets":[{"group":"a","key":"k"},{"group":"a","key":"K"}]}`,
		`{"secrets":[{"group":"shared","key":"EXISTING","mountRequirement":"ENV_VAR","envVar":"EXISTING"}]}`,
		`{"runAs":{"iamRole":"arn:aws:iam::123456789012:role/r"},"secrets":[{"group":"arn:aws:secretsmanager:us-east-1:123456789012:secret","key":"db","mountRequirement":"ENV_VAR","envVar":"DB"},{"group":"arn:aws:secretsmanager:us-east-1:123456789012:secret","key":"a/b","mountRequirement":"FILE"}]}`,
		`{"secrets":[{"group":"secret/my-app","key":"db","mountRequirement":"FILE","envVar":"P"},{"group":"kv/x","groupVersion":"kv1","key":"k"}]}`,
		// Issue 22: other spellings of a path, Vault's own paths, a client
		// secret asked for twice, credentials in endpoints.
		`{"secrets":[{"group":"arn:aws:secretsmanager:us-east-1:123456789012:secret","key":"a/../../etc/passwd","mountRequirement":"FILE"},{"group":"arn:aws:secretsmanager:us-east-1:123456789012:secret","key":"./x","groupVersion":".."}]}`,
		`{"secrets":[{"group":"auth/token/lookup-self","key":"id","mountRequirement":"FILE"},{"group":"secret/../sys","key":"k"}]}`,
		`{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"oauth","key":"s"}},"tokenEndpoint":"https://idp/oauth2/%2e%2e/token"}],"secrets":[{"group":"oauth"}]}`,
		`{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"oauth","key":"s"}},"tokenEndpoint":"https://u:p@idp/t?client_secret=x"}]}`,
	} {
		for backend := range uint8(4) {
			f.Add(s, "", "", backend)
			f.Add(s, "main,sidecar", "", backend)
		}
	}
	for _, st := range []string{`{"containers":[]}`, `null`, `{}`, `{"containers":["main"]}`, `{"containers":["init","sidecar","main"]}`, `{"containers":["ghost"]}`} {
		f.Add(`{"secrets":[{"group":"a","key":"k"}]}`, "", st, uint8(0))
	}
	f.Fuzz(func(t *testing.T, annotation, containers, status string, backend uint8) {
		pod := map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "fuzz", "labels": map[string]any{"secctx.dev/inject": "true"},
				"annotations": map[string]any{securityctx.AnnotationSecurityContext: annotation}},
			"spec": map[string]any{
				"futureField": map[string]any{"keep": true},
				"initContainers": []any{
					map[string]any{"name": "init", "image": "i"},
					map[string]any{"name": "sidecar", "image": "s", "restartPolicy": "Always", "futureContainerField": 1},
				},
				"containers": []any{map[string]any{"name": "main", "image": "m", "command": []any{"run"},
					"env": []any{map[string]any{"name": "EXISTING", "value": "v"}}}},
			},
		}
		if containers != "" {
			pod["metadata"].(map[string]any)["annotations"].(map[string]any)[securityctx.AnnotationContainers] = containers
		}
		if status != "" {
			pod["metadata"].(map[string]any)["annotations"].(map[string]any)[securityctx.AnnotationStatus] = status
		}
		raw, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Agent.Image = "secctx:1"
		switch backend % 4 {
		case 1:
			cfg.Backend = BackendAWS
		case 2:
			cfg.Backend, cfg.Vault.Mode, cfg.Vault.Address = BackendVault, VaultModeAgent, "https://vault:8200"
		case 3:
			cfg.Backend = BackendVault
		}
		in := newTestInjector(t, cfg)
		full := &corev1.Pod{}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, full); err != nil {
			t.Fatal(err)
		}
		out, err := in.Patch(context.Background(), full, "default")
		viewOut, viewErr := in.InjectJSON(context.Background(), "default", raw)
		if fmt.Sprint(err) != fmt.Sprint(viewErr) {
			t.Fatalf("whole pod and PodView disagree:\n%v\n%v", err, viewErr)
		}
		if err != nil {
			if !IsDenied(err) {
				t.Fatalf("internal error: %v", err)
			}
			return
		}
		if string(out.Patch) != string(viewOut.Patch) {
			t.Fatalf("whole pod and PodView give different patches:\n%s\n%s", out.Patch, viewOut.Patch)
		}
		assertOnlyAdds(t, out.Patch)
		patched := applyPatch(t, raw, out.Patch)
		var fromPatch corev1.Pod
		if err := kjson.UnmarshalCaseSensitivePreserveInts(patched, &fromPatch); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(out.Pod, &fromPatch); diff != "" {
			t.Fatalf("patched raw pod differs from the typed result (-typed +patched):\n%s", diff)
		}
		var generic map[string]any
		if err := json.Unmarshal(patched, &generic); err != nil {
			t.Fatal(err)
		}
		spec := generic["spec"].(map[string]any)
		var sidecar map[string]any
		for _, c := range spec["initContainers"].([]any) {
			if c.(map[string]any)["name"] == "sidecar" {
				sidecar = c.(map[string]any)
			}
		}
		if spec["futureField"] == nil || sidecar["restartPolicy"] != "Always" || sidecar["futureContainerField"] == nil {
			t.Fatalf("unknown fields lost: %s", patched)
		}
		again, err := in.Patch(context.Background(), &fromPatch, "default")
		if err != nil {
			t.Fatalf("second injection: %v", err)
		}
		if again.Patch != nil {
			t.Fatalf("second injection not a no-op: %s", again.Patch)
		}
	})
}
