package webhook

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/inject"
)

// BenchmarkServeHTTP is the whole request path: AdmissionReview bytes in,
// response bytes out, for the reference task pod with 1, 3 and 20 secrets,
// and with no SecurityContext (secrets=0: the cost of saying no).
func BenchmarkServeHTTP(b *testing.B) {
	for _, n := range []int{0, 1, 3, 20} {
		b.Run(fmt.Sprintf("secrets=%d", n), func(b *testing.B) {
			serveLoop(b, reviewBytes(b, taskPod(b, n), admissionv1.Create))
		})
	}
	// Two tokens: the sidecar, the installer, a wrapped command, three
	// volumes.
	b.Run("tokens=2", func(b *testing.B) {
		serveLoop(b, reviewBytes(b, taskPodWith(b, 0, 2), admissionv1.Create))
	})
	// The same pod on its reinvocation, which every pod with secctx's init
	// containers gets (the ServiceAccount plugin, run again after secctx,
	// mounts the API token in them): its agent containers are compared
	// field by field, so the whole pod is decoded, not the view.
	b.Run("tokens=2,reinvoked", func(b *testing.B) {
		pod := taskPodWith(b, 0, 2)
		resp := post(b, newTestMutator(b), reviewBytes(b, pod, admissionv1.Create))
		p, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			b.Fatal(err)
		}
		injected, err := p.Apply(pod)
		if err != nil {
			b.Fatal(err)
		}
		body := reviewBytes(b, injected, admissionv1.Create)
		if r := post(b, newTestMutator(b), body); !r.Allowed || r.Patch != nil {
			b.Fatalf("reinvocation: allowed %v, patch %s", r.Allowed, r.Patch)
		}
		serveLoop(b, body)
	})
	// An IAM role (IRSA) with 3 secrets: three more env vars, a projected
	// volume.
	b.Run("secrets=3,iamRole", func(b *testing.B) {
		pod := taskPodWith(b, 3, 0)
		pod = bytes.Replace(pod, []byte(`{\"secrets\"`), []byte(`{\"runAs\":{\"iamRole\":\"arn:aws:iam::123456789012:role/r\"},\"secrets\"`), 1)
		serveLoop(b, reviewBytes(b, pod, admissionv1.Create))
	})
	// Secrets fetched in the pod (backend aws): an IAM role and 3 secrets
	// from Secrets Manager, 2 of them ENV_VAR: the fetch init container,
	// the installer, a wrapped command, four volumes.
	b.Run("aws,secrets=3,iamRole", func(b *testing.B) {
		serveLoopWith(b, func(c *inject.Config) { c.Backend = inject.BackendAWS }, reviewBytes(b, []byte(awsPod), admissionv1.Create))
	})
	// Vault in agent mode, 3 secrets, 2 of them ENV_VAR.
	b.Run("vault-agent,secrets=3", func(b *testing.B) {
		serveLoopWith(b, func(c *inject.Config) {
			c.Backend, c.Vault.Mode, c.Vault.Address = inject.BackendVault, inject.VaultModeAgent, "https://vault.example.com:8200"
		}, reviewBytes(b, []byte(vaultPod), admissionv1.Create))
	})
	// Four stores in one pod (issue 23): a Kubernetes Secret and, in one
	// fetch, AWS, Google and Azure; 6 secrets, 3 of them ENV_VAR.
	b.Run("stores=4,secrets=6", func(b *testing.B) {
		serveLoopWith(b, func(c *inject.Config) {
			c.Backends = []inject.BackendRule{{Store: inject.BackendAWS}, {Store: inject.BackendGCP}, {Store: inject.BackendAzure}}
			c.GCP.Project = "my-project"
			c.Azure = inject.AzureConfig{TenantID: "11111111-2222-3333-4444-555555555555", ClientID: "00000000-0000-0000-0000-0000000000c1"}
		}, reviewBytes(b, []byte(mixedPod), admissionv1.Create))
	})
	// Enforce mode with 10 policies selecting the namespace, the last one
	// allowing the pod: every glob of the others is tried first.
	b.Run("secrets=3,policies=10", func(b *testing.B) {
		var pols staticPolicies
		for i := range 10 {
			p := &v1alpha1.SecurityContextPolicy{Spec: v1alpha1.SecurityContextPolicySpec{Allow: v1alpha1.Allow{
				SecretGroups: []string{fmt.Sprintf("team-%d-*", i), fmt.Sprintf("shared-%d", i)},
				MountTypes:   []string{"ENV_VAR"}, Backends: []string{"other"}}}}
			p.Name = fmt.Sprintf("p%d", i)
			pols = append(pols, p)
		}
		pols[9].Spec.Allow = v1alpha1.Allow{SecretGroups: []string{"group-*"}, MountTypes: []string{"ANY", "ENV_VAR", "FILE"}, Backends: []string{"kubernetes"}}
		h := newTestMutator(b).WithPolicy(PolicyEnforce, pols)
		serveLoopWithMutator(b, h, reviewBytes(b, taskPod(b, 3), admissionv1.Create))
	})
	// The audit line written, as secctx serve writes it (JSON, info level),
	// to a discarding writer; the other cases run with logging off.
	b.Run("secrets=3,audit-log", func(b *testing.B) {
		log, err := NewLogger("info", io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		injector, err := inject.New(inject.DefaultConfig(), allServiceAccounts{})
		if err != nil {
			b.Fatal(err)
		}
		h, err := NewPodMutator(injector, log, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		serveLoopWithMutator(b, h, reviewBytes(b, taskPod(b, 3), admissionv1.Create))
	})
	// Every pod a SecurityContext the injector has not seen lately: the
	// cost of the first pod of each task, parsing and planning included.
	b.Run("secrets=3,uncached", func(b *testing.B) {
		body := reviewBytes(b, taskPod(b, 3), admissionv1.Create)
		var bodies [][]byte
		for i := range 2 * 256 { // twice the plan cache: every request misses
			bodies = append(bodies, bytes.ReplaceAll(body, []byte("group-0"), fmt.Appendf(nil, "g%03d-0", i)))
		}
		serveLoop(b, bodies...)
	})
}

// The task pod of the store benchmarks: a Flyte-like pod with a command,
// as the exec wrapper needs for ENV_VAR.
const (
	awsPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"t","namespace":"team-a","labels":{"secctx.dev/inject":"true"},` +
		`"annotations":{"secctx.dev/security-context":"{\"runAs\":{\"iamRole\":\"arn:aws:iam::123456789012:role/r\"},\"secrets\":[` +
		`{\"group\":\"arn:aws:secretsmanager:us-east-1:123456789012:secret\",\"key\":\"db\",\"mountRequirement\":\"ENV_VAR\",\"envVar\":\"DB\"},` +
		`{\"group\":\"arn:aws:secretsmanager:us-east-1:123456789012:secret\",\"key\":\"api\",\"mountRequirement\":\"ENV_VAR\"},` +
		`{\"group\":\"arn:aws:secretsmanager:us-east-1:123456789012:secret\",\"key\":\"cert\",\"mountRequirement\":\"FILE\"}]}"}},` +
		`"spec":{"securityContext":{"runAsUser":1000},"containers":[{"name":"task","image":"cr.flyte.org/task:1","command":["pyflyte-execute"],"args":["--inputs","s3://x/inputs.pb","--output-prefix","s3://x/out"],` +
		`"env":[{"name":"FLYTE_INTERNAL_EXECUTION_ID","value":"f1"}],"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}}`
	mixedPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"t","namespace":"team-a","labels":{"secctx.dev/inject":"true"},` +
		`"annotations":{"secctx.dev/security-context":"{\"runAs\":{\"iamRole\":\"arn:aws:iam::123456789012:role/r\"},\"secrets\":[` +
		`{\"group\":\"db\",\"key\":\"password\",\"mountRequirement\":\"FILE\"},` +
		`{\"group\":\"db\",\"key\":\"user\",\"mountRequirement\":\"ENV_VAR\"},` +
		`{\"group\":\"arn:aws:secretsmanager:us-east-1:123456789012:secret\",\"key\":\"api\",\"mountRequirement\":\"ENV_VAR\"},` +
		`{\"group\":\"projects/my-project/secrets/signing-key\",\"mountRequirement\":\"FILE\"},` +
		`{\"group\":\"projects/my-project/secrets/db-creds\",\"key\":\"user\",\"mountRequirement\":\"ENV_VAR\",\"envVar\":\"DB_USER\"},` +
		`{\"group\":\"https://kv-prod.vault.azure.net/secrets/storage-key\",\"mountRequirement\":\"FILE\"}]}"}},` +
		`"spec":{"securityContext":{"runAsUser":1000},"containers":[{"name":"task","image":"cr.flyte.org/task:1","command":["pyflyte-execute"],"args":["--inputs","s3://x/inputs.pb","--output-prefix","s3://x/out"],` +
		`"env":[{"name":"FLYTE_INTERNAL_EXECUTION_ID","value":"f1"}],"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}}`
	vaultPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"t","namespace":"team-a","labels":{"secctx.dev/inject":"true"},` +
		`"annotations":{"secctx.dev/security-context":"{\"secrets\":[` +
		`{\"group\":\"secret/my-app\",\"key\":\"db\",\"mountRequirement\":\"ENV_VAR\",\"envVar\":\"DB\"},` +
		`{\"group\":\"secret/my-app\",\"key\":\"api\",\"mountRequirement\":\"ENV_VAR\"},` +
		`{\"group\":\"secret/my-app\",\"key\":\"cert\",\"mountRequirement\":\"FILE\"}]}"}},` +
		`"spec":{"securityContext":{"runAsUser":1000},"containers":[{"name":"task","image":"cr.flyte.org/task:1","command":["pyflyte-execute"],"args":["--inputs","s3://x/inputs.pb","--output-prefix","s3://x/out"],` +
		`"env":[{"name":"FLYTE_INTERNAL_EXECUTION_ID","value":"f1"}],"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}}`
)

// serveLoop sends the bodies in turn, one a benchmark iteration.
func serveLoop(b *testing.B, bodies ...[]byte) { serveLoopWith(b, nil, bodies...) }

// serveLoopWith is serveLoop with the config tuned.
func serveLoopWith(b *testing.B, tune func(*inject.Config), bodies ...[]byte) {
	var h *PodMutator
	if tune != nil {
		h = newTestMutator(b, tune)
	} else {
		h = newTestMutator(b)
	}
	serveLoopWithMutator(b, h, bodies...)
}

// serveLoopWithMutator is serveLoop through h.
func serveLoopWithMutator(b *testing.B, h *PodMutator, bodies ...[]byte) {
	req, _ := http.NewRequest(http.MethodPost, MutatePath, nil)
	req.Header.Set("Content-Type", "application/json")
	w := &discardWriter{header: http.Header{}}
	rd := bytes.NewReader(nil)
	b.SetBytes(int64(len(bodies[0])))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		rd.Reset(bodies[i%len(bodies)])
		i++
		req.Body = io.NopCloser(rd)
		w.n = 0
		h.ServeHTTP(w, req)
	}
	if w.n == 0 {
		b.Fatal("no response written")
	}
}

type discardWriter struct {
	header http.Header
	n      int
}

func (w *discardWriter) Header() http.Header         { return w.header }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// BenchmarkControllerRuntimeAdmission is the same work behind
// controller-runtime's admission.Webhook, which decodes the review with the
// API machinery's universal deserializer and hands the pod over as raw
// bytes: the path PodMutator replaces, kept for comparison.
func BenchmarkControllerRuntimeAdmission(b *testing.B) {
	for _, n := range []int{0, 3} {
		b.Run(fmt.Sprintf("secrets=%d", n), func(b *testing.B) {
			injector, err := inject.New(inject.DefaultConfig(), allServiceAccounts{})
			if err != nil {
				b.Fatal(err)
			}
			h := &admission.Webhook{Handler: admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
				out, err := injector.InjectJSON(ctx, req.Namespace, req.Object.Raw)
				if err != nil {
					return admission.Denied(err.Error())
				}
				resp := admission.Allowed("")
				if out.Patch != nil {
					pt := admissionv1.PatchTypeJSONPatch
					resp.Patch, resp.PatchType = out.Patch, &pt
				}
				return resp
			})}
			body := reviewBytes(b, taskPod(b, n), admissionv1.Create)
			req, _ := http.NewRequest(http.MethodPost, MutatePath, nil)
			req.Header.Set("Content-Type", "application/json")
			w := &discardWriter{header: http.Header{}}
			rd := bytes.NewReader(body)
			b.ReportAllocs()
			for b.Loop() {
				rd.Reset(body)
				req.Body = io.NopCloser(rd)
				h.ServeHTTP(w, req)
			}
		})
	}
}
