package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/securityctx"
)

type allServiceAccounts struct{}

func (allServiceAccounts) ServiceAccount(_ context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	sa := &corev1.ServiceAccount{}
	sa.Namespace, sa.Name = ns, name
	return sa, nil
}

// newTestMutator is the /mutate-v1-pod handler exactly as the server
// registers it, with a lookup that finds every service account.
func newTestMutator(t testing.TB, tune ...func(*inject.Config)) *PodMutator {
	t.Helper()
	cfg := inject.DefaultConfig()
	cfg.Agent.Image = "ghcr.io/secctx/secctx:0.1.0"
	for _, f := range tune {
		f(&cfg)
	}
	injector, err := inject.New(cfg, allServiceAccounts{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewPodMutator(injector, logr.Discard(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// reviewBytes wraps a raw pod in an AdmissionReview as the API server sends it.
func reviewBytes(t testing.TB, pod []byte, op admissionv1.Operation) []byte {
	t.Helper()
	return reviewInNamespace(t, pod, op, "flytesnacks-development")
}

// reviewInNamespace is reviewBytes for a pod of namespace ns.
func reviewInNamespace(t testing.TB, pod []byte, op admissionv1.Operation, ns string) []byte {
	t.Helper()
	ar := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("705ab4f5-6393-11e8-b7cc-42010a800002"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Operation: op,
		},
	}
	ar.Request.Object.Raw = pod
	b, err := json.Marshal(ar)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func post(t testing.TB, h http.Handler, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	raw := postRaw(t, h, body)
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(raw, &ar); err != nil {
		t.Fatalf("decode response %s: %v", raw, err)
	}
	if ar.Response == nil || ar.Response.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" {
		t.Fatalf("response without the request's UID: %s", raw)
	}
	return ar.Response
}

// postRaw posts body to h and returns the answer's bytes.
func postRaw(t testing.TB, h http.Handler, body []byte) []byte {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %.300s", rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// TestHandlerKeepsUnknownFields sends a pod with fields this build does not
// know — on the pod, on a container, and a native sidecar's restartPolicy —
// through the real HTTP handler: the patch has only adds, and applied as the
// API server applies it, every unknown field is still there.
func TestHandlerKeepsUnknownFields(t *testing.T) {
	h := newTestMutator(t)
	pod := []byte(`{
	  "apiVersion": "v1", "kind": "Pod",
	  "metadata": {"name": "p", "labels": {"secctx.dev/inject": "true"},
	    "annotations": {"secctx.dev/security-context": "{\"runAs\":{\"k8sServiceAccount\":\"data-processing-sa\"},\"secrets\":[{\"group\":\"my-certs\",\"key\":\"tls.key\",\"mountRequirement\":\"FILE\",\"envVar\":\"TLS_KEY_PATH\"},{\"group\":\"my-credentials\",\"key\":\"db_password\",\"mountRequirement\":\"ENV_VAR\"}]}"}},
	  "spec": {
	    "podFutureField": {"nested": [1, 2, 3]},
	    "serviceAccountName": "default",
	    "initContainers": [{"name": "proxy", "image": "proxy", "restartPolicy": "Always", "containerFutureField": "x"}],
	    "containers": [{"name": "main", "image": "app", "containerFutureField": {"a": "b"},
	      "env": [{"name": "A", "value": "1", "envFutureField": true}],
	      "volumeMounts": [{"name": "data", "mountPath": "/data", "mountFutureField": 7}]}],
	    "volumes": [{"name": "data", "emptyDir": {}, "volumeFutureField": "v"}]
	  },
	  "status": {"statusFutureField": 1}
	}`)
	resp := post(t, h, reviewBytes(t, pod, admissionv1.Create))
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response: allowed %v, patchType %v, result %+v", resp.Allowed, resp.PatchType, resp.Result)
	}
	var ops []struct{ Op, Path string }
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if op.Op != "add" {
			t.Errorf("op %q at %s: want only adds", op.Op, op.Path)
		}
		for _, whole := range []string{"/spec/containers", "/spec/initContainers", "/spec", "/metadata"} {
			if op.Path == whole || op.Path == whole+"/0" {
				t.Errorf("op %s replaces a whole object", op.Path)
			}
		}
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := patch.Apply(pod)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(patched, &got); err != nil {
		t.Fatal(err)
	}
	spec := got["spec"].(map[string]any)
	sidecar := spec["initContainers"].([]any)[0].(map[string]any)
	main := spec["containers"].([]any)[0].(map[string]any)
	for what, v := range map[string]any{
		"spec.podFutureField":                            spec["podFutureField"],
		"initContainers[0].restartPolicy":                sidecar["restartPolicy"],
		"initContainers[0].containerFutureField":         sidecar["containerFutureField"],
		"containers[0].containerFutureField":             main["containerFutureField"],
		"containers[0].env[0].envFutureField":            main["env"].([]any)[0].(map[string]any)["envFutureField"],
		"containers[0].volumeMounts[0].mountFutureField": main["volumeMounts"].([]any)[0].(map[string]any)["mountFutureField"],
		"volumes[0].volumeFutureField":                   spec["volumes"].([]any)[0].(map[string]any)["volumeFutureField"],
		"status.statusFutureField":                       got["status"].(map[string]any)["statusFutureField"],
	} {
		if v == nil {
			t.Errorf("%s lost", what)
		}
	}
	if spec["serviceAccountName"] != "data-processing-sa" {
		t.Errorf("serviceAccountName = %v", spec["serviceAccountName"])
	}
	for _, c := range []map[string]any{sidecar, main} {
		if !strings.Contains(fmt.Sprint(c["env"]), "TLS_KEY_PATH") || !strings.Contains(fmt.Sprint(c["volumeMounts"]), "/etc/flyte/secrets/my-certs") {
			t.Errorf("container %v not injected: %v", c["name"], c)
		}
	}
}

// TestHandlerDeniesBadAnnotations: each bad annotation is refused with 403
// and a message that names the pod and the field.
func TestHandlerDeniesBadAnnotations(t *testing.T) {
	m := newTestMutator(t)
	h := m
	tests := []struct{ name, annotation, want string }{
		{"invalid JSON", `{"secrets": [`, `secctx.dev/security-context: secrets[0]: invalid JSON: unexpected end of input`},
		{"unknown field", `{"secrets": [{"group": "g", "mountType": "FILE"}]}`, `secrets[0].mountType: unknown field; allowed: group, groupVersion, key, mountRequirement, envVar`},
		{"bad envVar", `{"secrets": [{"group": "g", "key": "k"}, {"group": "g", "key": "k", "envVar": "1BAD"}]}`, `secrets[1].envVar "1BAD": must match ^[A-Z_][A-Z0-9_]*$`},
		{"empty group", `{"secrets": [{"group": "", "key": "k"}]}`, `secrets[0].group: required`},
		{"bad mount type", `{"secrets": [{"group": "g", "mountRequirement": "VOLUME"}]}`, `secrets[0].mountRequirement "VOLUME": must be one of ANY, ENV_VAR, FILE (or 0, 1, 2)`},
		{"invalid Secret name", `{"secrets": [{"group": "My_Creds", "key": "k"}]}`, `secrets[0].group "My_Creds": must be a Kubernetes Secret name`},
		{"not an IAM role", `{"runAs": {"iamRole": "arn:aws:iam::123456789012:user/u"}}`, `runAs.iamRole "arn:aws:iam::123456789012:user/u": must be an IAM role ARN`},
		{"not for pods", `{"connectionRef": "c"}`, `connectionRef "c": not supported: connections are for Flyte agents, not pods`},
		{"token over http", `{"tokens": [{"name": "t", "client": {"clientId": "c", "clientSecret": {"group": "s", "key": "k"}}, "tokenEndpoint": "http://idp.example.com/token"}]}`, `tokens[0].tokenEndpoint "http://idp.example.com/token": must be an https:// URL with a host`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod, err := json.Marshal(map[string]any{
				"apiVersion": "v1", "kind": "Pod",
				"metadata": map[string]any{"name": "bad", "labels": map[string]string{securityctx.LabelInject: "true"},
					"annotations": map[string]string{securityctx.AnnotationSecurityContext: tt.annotation}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "main", "image": "app"}}},
			})
			if err != nil {
				t.Fatal(err)
			}
			resp := post(t, h, reviewBytes(t, pod, admissionv1.Create))
			if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden || resp.Patch != nil {
				t.Fatalf("want a 403 refusal without patch, got allowed %v, result %+v", resp.Allowed, resp.Result)
			}
			if !strings.HasPrefix(resp.Result.Message, "pod flytesnacks-development/bad: ") || !strings.Contains(resp.Result.Message, tt.want) {
				t.Errorf("message:\n  %s\nwant it to name the pod and contain:\n  %s", resp.Result.Message, tt.want)
			}
		})
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues(DecisionDenied, ReasonInvalid)); got != float64(len(tests)) {
		t.Errorf("denied count = %v, want %d", got, len(tests))
	}
}

func TestHandlerLeavesOtherPodsAlone(t *testing.T) {
	m := newTestMutator(t)
	h := m
	plain := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"plain"},"spec":{"containers":[{"name":"c","image":"i"}]}}`)
	withSC := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"secctx.dev/inject":"true"},"annotations":{"secctx.dev/security-context":"{\"secrets\":[{\"group\":\"g\",\"key\":\"k\"}]}"}},"spec":{"containers":[{"name":"c","image":"i"}]}}`)
	for name, body := range map[string][]byte{
		"no annotation": reviewBytes(t, plain, admissionv1.Create),
		"update":        reviewBytes(t, withSC, admissionv1.Update),
	} {
		resp := post(t, h, body)
		if !resp.Allowed || resp.Patch != nil {
			t.Errorf("%s: allowed %v, patch %s; want allowed unchanged", name, resp.Allowed, resp.Patch)
		}
	}
	if got := testutil.ToFloat64(m.decisions.WithLabelValues(DecisionUnchanged, ReasonNoChange)) + testutil.ToFloat64(m.decisions.WithLabelValues(DecisionUnchanged, ReasonNotAPod)); got != 2 {
		t.Errorf("unchanged count = %v, want 2", got)
	}
	// A review that does not decode gets no AdmissionReview back: there is no
	// UID to answer to, and the API server treats the error per failurePolicy.
	for name, req := range map[string]*http.Request{
		"not a pod":     httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(reviewBytes(t, []byte(`{"spec": 5}`), admissionv1.Create))),
		"no request":    httptest.NewRequest(http.MethodPost, MutatePath, strings.NewReader(`{"apiVersion":"admission.k8s.io/v1"}`)),
		"GET":           httptest.NewRequest(http.MethodGet, MutatePath, nil),
		"wrong content": httptest.NewRequest(http.MethodPost, MutatePath, strings.NewReader(`x`)),
	} {
		if name != "wrong content" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 400 {
			t.Errorf("%s: HTTP %d, want an error status", name, rec.Code)
		}
	}
}

// TestHandlerChecksTheLabels: the handler does not trust the registration's
// objectSelector. A pod that reaches it without the opt-in label is not
// injected: refused when it carries a request, left alone otherwise; and
// Flyte's label and annotations mean nothing with Flyte mode off.
func TestHandlerChecksTheLabels(t *testing.T) {
	h := newTestMutator(t)
	pod := func(labels, annotations string) []byte {
		return reviewBytes(t, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{`+labels+`},"annotations":{`+annotations+
			`}},"spec":{"containers":[{"name":"c","image":"i"}]}}`), admissionv1.Create)
	}
	sc := `"secctx.dev/security-context":"{\"secrets\":[{\"group\":\"g\",\"key\":\"k\"}]}"`
	flyte := `"flyte.secrets/s0":"m4zg54lqhiqceztsnfsgk3tuorzs42lpozqxe2lbnruwk4zcbjvwk5j1earhu23fpe2dgmrcbi"`
	tests := []struct {
		name, labels, annotations string
		denied, patched           bool
	}{
		{"annotation without the label", `"other":"x"`, sc, true, false},
		{"the label set to false", `"secctx.dev/inject":"false"`, sc, true, false},
		{"neither", `"other":"x"`, `"a":"b"`, false, false},
		{"the label alone", `"secctx.dev/inject":"true"`, `"a":"b"`, false, true},
		{"Flyte's label and annotation, Flyte mode off", `"inject-flyte-secrets":"true"`, flyte, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := post(t, h, pod(tt.labels, tt.annotations))
			if resp.Allowed == tt.denied || (resp.Patch != nil) != tt.patched {
				t.Fatalf("allowed %v, patch %s, result %+v; want denied %v, patched %v", resp.Allowed, resp.Patch, resp.Result, tt.denied, tt.patched)
			}
			if tt.denied && !strings.Contains(resp.Result.Message, `but the pod is not labelled secctx.dev/inject: "true"; add the label`) {
				t.Errorf("message %q does not say to add the label", resp.Result.Message)
			}
			if tt.patched && !strings.Contains(string(resp.Patch), `"/metadata/annotations/secctx.dev~1status"`) {
				t.Errorf("patch %s: a labelled pod gets the status annotation", resp.Patch)
			}
		})
	}
}

// TestHandlerMatchesInject: the webhook's patch is exactly what pkg/inject
// computes, for the reference task pod.
func TestHandlerMatchesInject(t *testing.T) {
	h := newTestMutator(t)
	pod := taskPod(t, 3)
	resp := post(t, h, reviewBytes(t, pod, admissionv1.Create))
	injector, _ := inject.New(inject.DefaultConfig(), allServiceAccounts{})
	out, err := injector.InjectJSON(context.Background(), "flytesnacks-development", pod)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(out.Patch), string(resp.Patch)); diff != "" {
		t.Errorf("patch (-inject +webhook):\n%s", diff)
	}
}

// taskPod is testdata/task-pod.yaml with n secrets requested, alternating
// ENV_VAR and FILE, across groups of up to three keys; with n == 0 it has no
// SecurityContext at all.
func taskPod(t testing.TB, n int) []byte { return taskPodWith(t, n, 0) }

// taskPodWith is the reference task pod with n secrets and tokens tokens.
func taskPodWith(t testing.TB, n, tokens int) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/task-pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var pod map[string]any
	if err := yaml.Unmarshal(b, &pod); err != nil {
		t.Fatal(err)
	}
	if n == 0 && tokens == 0 {
		raw, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	sc := &securityctx.SecurityContext{}
	for i := range n {
		s := securityctx.Secret{Group: fmt.Sprintf("group-%d", i/3), Key: fmt.Sprintf("key_%d", i), MountRequirement: securityctx.MountEnvVar}
		if i%2 == 1 {
			s.MountRequirement = securityctx.MountFile
			s.EnvVar = fmt.Sprintf("KEY_%d_PATH", i)
		}
		sc.Secrets = append(sc.Secrets, s)
	}
	for i := range tokens {
		sc.Tokens = append(sc.Tokens, securityctx.OAuth2TokenRequest{
			Name:          fmt.Sprintf("api-%d", i),
			Client:        &securityctx.OAuth2Client{ClientID: "my-app", ClientSecret: &securityctx.Secret{Group: "oauth-secrets", Key: fmt.Sprintf("client-%d", i)}},
			TokenEndpoint: "https://auth.example.com/oauth2/token",
		})
	}
	enc, err := securityctx.Encode(sc)
	if err != nil {
		t.Fatal(err)
	}
	pod["metadata"].(map[string]any)["annotations"].(map[string]any)[securityctx.AnnotationSecurityContext] = enc
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestReviewJSONMatchesEncodingJSON(t *testing.T) {
	for _, out := range []reviewOut{
		{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview", Response: responseOut{UID: "u1", Allowed: true}},
		{APIVersion: "admission.k8s.io/v1beta1", Kind: "AdmissionReview", Response: responseOut{UID: "u2", Allowed: true,
			Patch: []byte(`[{"op":"add","path":"/a","value":"\u2028<>"}]`), PatchType: "JSONPatch", Warnings: []string{"w1", `"quoted"`}}},
		{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview", Response: responseOut{UID: "u3",
			Status: &status{Status: "Failure", Reason: "Forbidden", Code: 403, Message: "pod ns/p: secrets[0].envVar \"1BAD\": must match ^[A-Z_]"}}},
		{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview", Response: responseOut{UID: "u4",
			Status: &status{Status: "Failure", Code: 500, Message: "panic"}}},
	} {
		got, err := out.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(out)
		if err != nil {
			t.Fatal(err)
		}
		var g, w admissionv1.AdmissionReview
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("not JSON: %s", got)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, g); diff != "" {
			t.Errorf("appendJSON (-encoding/json +direct):\n%s", diff)
		}
	}
	bad := reviewOut{Response: responseOut{UID: "\xff"}}
	if _, err := bad.appendJSON(nil); err == nil {
		t.Error("invalid UTF-8: no error")
	}
}
