package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/internal/fixtures"
	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/inject"
)

// TestLogsAndAnswersAreBounded (issue 22): whatever a review holds, every
// log line and the answer stay small, and no credential in an endpoint (user
// info, a query) reaches either.
func TestLogsAndAnswersAreBounded(t *testing.T) {
	var logs syncBuffer
	m := loggedMutator(t, &logs)
	// Enforce, with a policy that allows nothing: an admitted-looking
	// request still reaches the audit line with its SecurityContext.
	m.WithPolicy(PolicyEnforce, staticPolicies{&v1alpha1.SecurityContextPolicy{ObjectMeta: metav1.ObjectMeta{Name: "none"}}})
	token := func(endpoint string) string {
		return `{"runAs":{"executionIdentity":"` + strings.Repeat("e", 1024) + `"},"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"oauth","key":"s"}},"tokenEndpoint":` + strconv.Quote(endpoint) + `}]}`
	}
	pod := func(sc string) []byte {
		return []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"secctx.dev/inject":"true"},"annotations":{"secctx.dev/security-context":` +
			strconv.Quote(sc) + `}},"spec":{"containers":[{"name":"c","image":"i","command":["/app"]}]}}`)
	}
	for name, body := range map[string][]byte{
		"user info":       reviewBytes(t, pod(token("https://alice:hunter2@idp.example.com/token")), admissionv1.Create),
		"query":           reviewBytes(t, pod(token("https://idp.example.com/token?client_secret=hunter2")), admissionv1.Create),
		"one slash":       reviewBytes(t, pod(token("https:/alice:hunter2@idp.example.com/token")), admissionv1.Create),
		"/ in password":   reviewBytes(t, pod(token("https://alice:hun/ter2@idp.example.com/token")), admissionv1.Create),
		"fragment":        reviewBytes(t, pod(token("https://idp.example.com/token#client_secret=hunter2")), admissionv1.Create),
		"1.5 MB endpoint": reviewBytes(t, pod(token("https://idp.example.com/"+strings.Repeat("x", 1_500_000))), admissionv1.Create),
		"1 MB uid": bytes.Replace(reviewBytes(t, pod(token("https://idp.example.com/token")), admissionv1.Create),
			[]byte(`"uid":"705ab4f5-6393-11e8-b7cc-42010a800002"`), []byte(`"uid":"`+strings.Repeat("u", 1<<20)+`"`), 1),
		// Not a namespace the API server would send: refused as a bad
		// review before it reaches a lookup or a message.
		"1 MB namespace": bytes.Replace(reviewBytes(t, pod(token("https://idp.example.com/token")), admissionv1.Create),
			[]byte(`"namespace":"flytesnacks-development"`), []byte(`"namespace":"`+strings.Repeat("n", 1<<20)+`"`), 1),
	} {
		logs.Reset()
		r := postRaw(t, m, body)
		if strings.Contains(logs.String(), "hunter2") || strings.Contains(string(r), "hunter2") ||
			strings.Contains(logs.String(), "ter2") || strings.Contains(string(r), "ter2") {
			t.Errorf("%s: a credential of the endpoint reached the log or the answer", name)
		}
		// The answer echoes the request's uid, as the API server requires;
		// all else in it is bounded.
		if n := len(r); n > 8<<10 && name != "1 MB uid" {
			t.Errorf("%s: answer of %d bytes", name, n)
		}
		if name == "1 MB namespace" && !bytes.Contains(r, []byte(`"code":400`)) {
			t.Errorf("a review for namespace n×1M: %.300s, want a 400", r)
		}
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		if len(lines) == 0 || lines[0] == "" {
			t.Errorf("%s: nothing logged", name)
		}
		for _, l := range lines {
			if len(l) > 8<<10 {
				t.Errorf("%s: a log line of %d bytes: %.300s...", name, len(l), l)
			}
		}
	}
}

// TestHandlerMatchesInjectOnFixtures: for every golden fixture of pkg/inject,
// with its config, the webhook answers as pkg/inject does on the whole pod:
// the same patch, or the same refusal. The webhook reads a pod view and
// decodes the whole pod only when the view is not enough (reinvocations
// with secctx's containers or volumes, account switches): this holds both
// paths to the typed result.
func TestHandlerMatchesInjectOnFixtures(t *testing.T) {
	inputs, err := filepath.Glob("../inject/testdata/pods/*.in.yaml")
	if err != nil || len(inputs) < 100 {
		t.Fatalf("fixtures: %d, %v", len(inputs), err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			cfg := inject.DefaultConfig()
			cfg.Flyte.Enabled = true
			cfg.Agent.Image = "ghcr.io/secctx/secctx:0.1.0"
			if b, err := os.ReadFile(strings.TrimSuffix(in, ".in.yaml") + ".config.yaml"); err == nil {
				if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
					t.Fatal(err)
				}
			}
			injector, err := inject.New(cfg, &fixtures.Accounts{})
			if err != nil {
				t.Fatal(err)
			}
			m, err := NewPodMutator(injector, logr.Discard(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			y, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := yaml.YAMLToJSON(y)
			if err != nil {
				t.Fatal(err)
			}
			var pod corev1.Pod
			if err := json.Unmarshal(raw, &pod); err != nil {
				t.Fatal(err)
			}
			ns := pod.Namespace
			if ns == "" {
				ns = "default"
			}
			r := post(t, m, reviewInNamespace(t, raw, admissionv1.Create, ns))
			out, err := injector.Patch(context.Background(), &pod, ns)
			if err != nil {
				if r.Allowed || r.Result == nil || r.Result.Message != err.Error() {
					t.Errorf("inject refuses (%v); the webhook answers allowed=%v %+v", err, r.Allowed, r.Result)
				}
				return
			}
			if diff := cmp.Diff(string(out.Patch), string(r.Patch)); diff != "" || !r.Allowed {
				t.Errorf("allowed=%v; patch (-inject +webhook):\n%s", r.Allowed, diff)
			}
		})
	}
}
