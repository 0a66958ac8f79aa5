package e2e

// These tests run against secctx deployed from config/ in a real cluster
// (TestMain). They run in file order; TestWebhookDown stops secctx and
// brings it back, so it is last.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
)

const (
	labelInject = "secctx.dev/inject"
	annotSC     = "secctx.dev/security-context"
	annotStatus = "secctx.dev/status"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// namespace makes a namespace for one test, with the given Secrets
// (name -> key -> value), and deletes it afterwards.
func namespace(t *testing.T, ctx context.Context, secrets map[string]map[string]string) string {
	t.Helper()
	name := "e2e-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 63 {
		name = name[:63]
	}
	if err := kube.CreateNamespace(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	for s, data := range secrets {
		sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: s}, StringData: data}
		if _, err := kube.Client.CoreV1().Secrets(name).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// createServiceAccounts creates the accounts in ns.
func createServiceAccounts(t *testing.T, ctx context.Context, ns string, sas ...*corev1.ServiceAccount) {
	t.Helper()
	for _, sa := range sas {
		if _, err := kube.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func taskContainer(name string, args ...string) corev1.Container {
	return corev1.Container{Name: name, Image: framework.TaskImage, ImagePullPolicy: corev1.PullNever, Args: args}
}

func taskPod(ns, name, securityContext string, labelled bool, containers ...corev1.Container) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: map[string]string{}, Labels: map[string]string{}},
		Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: containers},
	}
	if securityContext != "" {
		p.Annotations[annotSC] = securityContext
	}
	if labelled {
		p.Labels[labelInject] = "true"
	}
	return p
}

func runPod(t *testing.T, ctx context.Context, pod *corev1.Pod) (*corev1.Pod, map[string]string) {
	t.Helper()
	got, logs, err := framework.RunPod(ctx, kube, pod, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod %s: phase %s, want Succeeded; logs: %v", pod.Name, got.Status.Phase, logs)
	}
	return got, logs
}

// TestSecretsReachTheProcess: what a task reads from its environment and
// files is the Secret's value, by the name it asked for, by the _FSEC_ name,
// and by flytekit's lookup rule.
func TestSecretsReachTheProcess(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, map[string]map[string]string{
		"db-creds": {"password": "p4ssw0rd-e2e"},
		"certs":    {"tls.key": "key-material-e2e"},
		"api":      {"token": "tok-e2e-123"},
	})
	sc := `{"secrets": [
	  {"group": "db-creds", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"},
	  {"group": "certs", "key": "tls.key", "mountRequirement": "FILE", "envVar": "TLS_KEY_PATH"},
	  {"group": "api", "key": "token", "mountRequirement": "ENV_VAR"}]}`
	_, logs := runPod(t, ctx, taskPod(ns, "task", sc, true,
		taskContainer("env", "-full", "env", "DB_PASSWORD", "_FSEC_DB-CREDS_PASSWORD", "_FSEC_API_TOKEN"),
		taskContainer("file", "-full", "file-from-env", "TLS_KEY_PATH"),
		taskContainer("flytekit", "-full", "flytekit", "db-creds/password", "certs/tls.key", "api/token"),
	))
	want := map[string]string{
		"env": "DB_PASSWORD = p4ssw0rd-e2e\n" +
			"_FSEC_DB-CREDS_PASSWORD = p4ssw0rd-e2e\n" +
			"_FSEC_API_TOKEN = tok-e2e-123\n",
		"file": "TLS_KEY_PATH = /etc/flyte/secrets/certs/tls.key = key-material-e2e\n",
		"flytekit": "db-creds/password from env _FSEC_DB-CREDS_PASSWORD = p4ssw0rd-e2e\n" +
			"certs/tls.key from file /etc/flyte/secrets/certs/tls.key = key-material-e2e\n" +
			"api/token from env _FSEC_API_TOKEN = tok-e2e-123\n",
	}
	if diff := cmp.Diff(want, logs); diff != "" {
		t.Errorf("container output (-want +got):\n%s", diff)
	}
}

// TestServiceAccountIdentity: the token the pod gets is the Identity's
// service account's.
func TestServiceAccountIdentity(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "data-processing-sa"}})
	got, logs := runPod(t, ctx, taskPod(ns, "task", `{"runAs": {"k8sServiceAccount": "data-processing-sa"}}`, true,
		taskContainer("task", "whoami")))
	if got.Spec.ServiceAccountName != "data-processing-sa" {
		t.Errorf("serviceAccountName = %q", got.Spec.ServiceAccountName)
	}
	if want := fmt.Sprintf("running as system:serviceaccount:%s:data-processing-sa\n", ns); logs["task"] != want {
		t.Errorf("token subject: got %q, want %q", logs["task"], want)
	}
}

// TestBadAnnotationRejected: kubectl apply of examples/bad-annotation.yaml
// fails, and the message names every field that is wrong.
func TestBadAnnotationRejected(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	_, stderr, err := kube.Kubectl(ctx, nil, "apply", "-n", ns, "-f", filepath.Join(framework.Root(), "examples", "bad-annotation.yaml"))
	if err == nil {
		t.Fatal("kubectl apply succeeded")
	}
	for _, want := range []string{
		`admission webhook "pods.secctx.dev" denied the request`,
		`secrets[0].envVar "db-password": must match`,
		`secrets[1].group "My_Certs"`,
		`secrets[1].mountRequirement "DISK": must be one of ANY, ENV_VAR, FILE`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("kubectl's error lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := kube.Client.CoreV1().Pods(ns).Get(ctx, "example-bad-annotation", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the pod exists: %v", err)
	}
}

// TestUnlabelledPodUntouched: without the opt-in label (and without a
// request) the webhook is not even called.
func TestUnlabelledPodUntouched(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	got, logs := runPod(t, ctx, taskPod(ns, "task", "", false, taskContainer("task", "-full", "env", "HOSTNAME")))
	if _, ok := got.Annotations[annotStatus]; ok {
		t.Errorf("pod has %s", annotStatus)
	}
	if env := got.Spec.Containers[0].Env; len(env) != 0 {
		t.Errorf("env was added: %+v", env)
	}
	for _, v := range got.Spec.Volumes {
		if strings.HasPrefix(v.Name, "secctx-") {
			t.Errorf("volume %s was added", v.Name)
		}
	}
	if logs["task"] != "HOSTNAME = task\n" {
		t.Errorf("output %q", logs["task"])
	}
}

// TestAnnotationWithoutLabelRefused: a pod that asks for secrets but lacks
// the label is not admitted without them: the admission policy refuses it,
// saying to add the label.
func TestAnnotationWithoutLabelRefused(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	sc := `{"secrets": [{"group": "db-creds", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`
	_, err := kube.Client.CoreV1().Pods(ns).Create(ctx, taskPod(ns, "task", sc, false, taskContainer("task", "env", "DB_PASSWORD")), metav1.CreateOptions{})
	want := `ValidatingAdmissionPolicy 'secctx-opt-in' with binding 'secctx-opt-in' denied request: the pod carries the annotation secctx.dev/security-context but not the label secctx.dev/inject: "true"; add the label`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want a refusal containing %q", err, want)
	}

	// Flyte mode (secctx runs from config/flyte here): the same for Flyte's
	// annotations without Flyte's label.
	flyte := taskPod(ns, "flyte", "", false, taskContainer("task", "env", "DB_PASSWORD"))
	flyte.Annotations["flyte.secrets/s0"] = "m4zg54lqhiqce2lzfvrxezlemvxhi1lbnrzsectlmv3tuibcmrrf53dbonzxo22smqrau2lpovxhix2smvyxk1lsmvwwk2tuhiqektswl4lecuqkmvxhmx2wmfzduibcirbf5ucbknjvot1siqrau"
	_, err = kube.Client.CoreV1().Pods(ns).Create(ctx, flyte, metav1.CreateOptions{})
	want = `ValidatingAdmissionPolicy 'secctx-flyte-opt-in' with binding 'secctx-flyte-opt-in' denied request: the pod carries flyte.secrets/s<N> annotations but not the label inject-flyte-secrets: "true"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Flyte: got %v, want a refusal containing %q", err, want)
	}
}

// TestServerSideDryRun: kubectl apply --dry-run=server shows the injected pod
// and creates nothing (the webhook declares sideEffects: None).
func TestServerSideDryRun(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	out, _, err := kube.Kubectl(ctx, nil, "apply", "--dry-run=server", "-o", "yaml", "-n", ns,
		"-f", filepath.Join(framework.Root(), "examples", "1-env-var-secret.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"- name: DB_PASSWORD\n      valueFrom:\n        secretKeyRef:\n          key: db_password\n          name: my-credentials",
		annotStatus + ":",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out)
		}
	}
	if _, err := kube.Client.CoreV1().Pods(ns).Get(ctx, "example-1-env-var-secret", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dry run created the pod: %v", err)
	}
}

// TestReinvocation: a webhook that runs after secctx adds a container; the
// API server calls secctx again (reinvocationPolicy: IfNeeded). The new
// container gets nothing: only the containers of secctx's first pass are
// targets. Named in secctx.dev/containers, it gets the secrets.
func TestReinvocation(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, map[string]map[string]string{"db-creds": {"password": "p4ssw0rd-e2e"}})

	ca, err := cluster.NewCA("add-container-webhook")
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err := ca.Issue("add-container", *hostAddress)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	// The API server runs on this machine, so it reaches a webhook served by
	// the test itself on the node address.
	ln, err := tls.Listen("tcp", net.JoinHostPort(listenAddress(), "0"), &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	added := taskContainer("added", "-full", "env", "HOSTNAME")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addContainer(t, w, r, added)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	name := "zz-e2e-add-container" // sorts after "secctx", so it is called after it
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "add-container.e2e.secctx.dev",
			AdmissionReviewVersions: []string{"v1"},
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL:      ptr.To(fmt.Sprintf("https://%s/mutate", net.JoinHostPort(*hostAddress, fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)))),
				CABundle: ca.CertPEM,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:     ptr.To(admissionregistrationv1.Fail),
		}},
	}
	if _, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), name, metav1.DeleteOptions{})
	})

	sc := `{"secrets": [{"group": "db-creds", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`
	pod := taskPod(ns, "task", sc, true, taskContainer("main", "-full", "env", "DB_PASSWORD"))
	// The API server picks the new configuration up asynchronously.
	err = framework.Poll(ctx, 30*time.Second, func() (bool, error) {
		p, err := kube.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && len(p.Spec.Containers) == 2, err
	})
	if err != nil {
		t.Fatalf("the second webhook is not called: %v", err)
	}
	got, logs := runPod(t, ctx, pod)
	want := map[string]string{"main": "DB_PASSWORD = p4ssw0rd-e2e\n", "added": "HOSTNAME = task\n"}
	if diff := cmp.Diff(want, logs); diff != "" {
		t.Errorf("container output (-want +got):\n%s", diff)
	}
	if len(got.Spec.Containers) != 2 {
		t.Fatalf("containers: %d, want 2", len(got.Spec.Containers))
	}
	if env := got.Spec.Containers[1].Env; len(env) != 0 {
		t.Errorf("the container added after secctx got env %+v", env)
	}
	if st := got.Annotations[annotStatus]; !strings.Contains(st, `"containers":["main"]`) {
		t.Errorf("status %s: want the first pass's containers only", st)
	}

	// With a token: on the second pass secctx finds its sidecar (which installs the wrapper)
	// and wrapped command as it left them (defaulted by the API server) and
	// changes nothing; the added container gets no token.
	oidcProvider(t, ctx)
	if _, err := kube.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "oauth-secrets"},
		StringData: map[string]string{"my-app-client-secret": oidcSecret}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	main := taskContainer("main")
	main.Command = []string{"/task", "env", "EXTERNAL_API_ACCESS_TOKEN"}
	got, logs = runPod(t, ctx, taskPod(ns, "tokens", example4(false), true, main))
	if !strings.HasPrefix(logs["main"], "EXTERNAL_API_ACCESS_TOKEN = eyJ...") || logs["added"] != "HOSTNAME = tokens\n" {
		t.Errorf("tokens: main printed %q, added printed %q", logs["main"], logs["added"])
	}
	if n := len(got.Spec.InitContainers); n != 1 {
		t.Errorf("tokens: %d init containers, want secctx-sidecar once", n)
	}
	if c := got.Spec.Containers[1]; len(c.Env) != 0 || len(c.VolumeMounts) > 1 || len(c.Command) > 0 {
		t.Errorf("tokens: the container added after secctx got env %v, mounts %v, command %v", c.Env, c.VolumeMounts, c.Command)
	}

	// Named in secctx.dev/containers, the added container is a target.
	named := taskPod(ns, "named", sc, true, taskContainer("main", "-full", "env", "DB_PASSWORD"))
	named.Annotations["secctx.dev/containers"] = "main,added"
	named.Spec.Containers = append(named.Spec.Containers, taskContainer("added", "-full", "env", "DB_PASSWORD"))
	// The second webhook sees "added" there already and adds nothing; so
	// that secctx's first pass does not see it, it is removed here and the
	// second webhook adds it.
	named.Spec.Containers = named.Spec.Containers[:1]
	added.Args = []string{"-full", "env", "DB_PASSWORD"}
	_, logs = runPod(t, ctx, named)
	want = map[string]string{"main": "DB_PASSWORD = p4ssw0rd-e2e\n", "added": "DB_PASSWORD = p4ssw0rd-e2e\n"}
	if diff := cmp.Diff(want, logs); diff != "" {
		t.Errorf("named: container output (-want +got):\n%s", diff)
	}
}

// listenAddress is where the test's own webhook listens: the node address
// here; under kind, every address, since the gateway is not this process's.
func listenAddress() string {
	if *kubeconfig != "" {
		return "0.0.0.0"
	}
	return *hostAddress
}

// addContainer is the second webhook: it appends c to pods that lack it.
func addContainer(t *testing.T, w http.ResponseWriter, r *http.Request, c corev1.Container) {
	var review admissionv1.AdmissionReview
	body, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, "bad pod", http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	have := false
	for _, x := range pod.Spec.Containers {
		have = have || x.Name == c.Name
	}
	if !have {
		patch, _ := json.Marshal([]map[string]any{{"op": "add", "path": "/spec/containers/-", "value": c}})
		resp.Patch = patch
		resp.PatchType = ptr.To(admissionv1.PatchTypeJSONPatch)
	}
	review.Response, review.Request = resp, nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// TestFlytePropellerPod: a pod as flytepropeller makes it (Flyte's label and
// flyte.secrets/s<N> annotations from Flyte's own encoder, pyflyte-execute as
// the command) gets its secrets, found where flytekit looks. The fixture is
// the golden one; only what cannot run here changes: the image (no registry),
// the CPU request (the node has 2 CPUs) and the owner reference (there is no
// FlyteWorkflow, and the garbage collector would delete the pod).
func TestFlytePropellerPod(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, map[string]map[string]string{
		"my-credentials": {"db_password": "p4ssw0rd-flyte"},
		"my-certs":       {"tls.key": "key-material-flyte"},
	})
	b, err := os.ReadFile(filepath.Join(framework.Root(), "pkg/inject/testdata/pods/flyte-propeller-pod.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		t.Fatal(err)
	}
	pod.Namespace, pod.OwnerReferences = ns, nil
	c := &pod.Spec.Containers[0]
	c.Image, c.ImagePullPolicy = framework.TaskImage, corev1.PullNever
	c.Args = append([]string{"-full"}, c.Args...)
	c.Resources = corev1.ResourceRequirements{}
	got, logs := runPod(t, ctx, &pod)
	if _, ok := got.Labels[labelInject]; ok {
		t.Error("the pod has secctx's label; it must be admitted by Flyte's alone")
	}
	want := "env _FSEC_MY-CREDENTIALS_DB_PASSWORD = p4ssw0rd-flyte\n" +
		"file /etc/flyte/secrets/my-certs/tls.key = key-material-flyte\n"
	if logs[c.Name] != want {
		t.Errorf("pyflyte-execute found:\n%s\nwant:\n%s", logs[c.Name], want)
	}
	found := false
	for _, e := range got.Spec.Containers[0].Env {
		if e.Name == "DB_PASSWORD" {
			found = true
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != "my-credentials" || e.ValueFrom.SecretKeyRef.Key != "db_password" {
				t.Errorf("DB_PASSWORD: %+v", e)
			}
		}
	}
	if !found {
		t.Error("DB_PASSWORD is not set")
	}
}

// TestServiceAccountFollowed: a pod moved to another account is what it
// would be had it been created with it: no API token when the account opts
// out, a token when it moves away from a default that opts out, and the
// account's image pull secrets.
func TestServiceAccountFollowed(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	no := false
	createServiceAccounts(t, ctx, ns,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "no-token-sa"}, AutomountServiceAccountToken: &no},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "pull-sa"}, ImagePullSecrets: []corev1.LocalObjectReference{{Name: "regcred"}}})
	hasToken := func(p *corev1.Pod) bool {
		for _, m := range p.Spec.Containers[0].VolumeMounts {
			if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" {
				return true
			}
		}
		return false
	}

	// The account opts out: the token default's was given is taken away,
	// and the task finds none.
	pod := taskPod(ns, "no-token", `{"runAs": {"k8sServiceAccount": "no-token-sa"}}`, true, taskContainer("task", "whoami"))
	got, logs, err := framework.RunPod(ctx, kube, pod, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if hasToken(got) || got.Status.Phase != corev1.PodFailed || !strings.Contains(logs["task"], "no such file") {
		t.Errorf("no-token-sa: token mounted %v, phase %s, output %q; want no token", hasToken(got), got.Status.Phase, logs["task"])
	}
	for _, v := range got.Spec.Volumes {
		if strings.HasPrefix(v.Name, "kube-api-access-") {
			t.Errorf("no-token-sa: volume %s is still there", v.Name)
		}
	}

	// The account has an image pull secret: the pod gets it, and its
	// token is the account's.
	got, logs = runPod(t, ctx, taskPod(ns, "pull", `{"runAs": {"k8sServiceAccount": "pull-sa"}}`, true, taskContainer("task", "whoami")))
	if diff := cmp.Diff([]corev1.LocalObjectReference{{Name: "regcred"}}, got.Spec.ImagePullSecrets); diff != "" {
		t.Errorf("pull-sa: imagePullSecrets (-want +got):\n%s", diff)
	}
	if want := fmt.Sprintf("running as system:serviceaccount:%s:pull-sa\n", ns); logs["task"] != want {
		t.Errorf("pull-sa: %q, want %q", logs["task"], want)
	}

	// default opts out, so the ServiceAccount plugin mounted nothing; the
	// pod moves to an account that does not: it gets the token.
	def, err := kube.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	def.AutomountServiceAccountToken = &no
	if _, err := kube.Client.CoreV1().ServiceAccounts(ns).Update(ctx, def, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// secctx reads accounts from its cache: wait until a dry run shows the change.
	err = framework.Poll(ctx, 30*time.Second, func() (bool, error) {
		p, err := kube.Client.CoreV1().Pods(ns).Create(ctx, taskPod(ns, "probe", "", false, taskContainer("task", "whoami")), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && !hasToken(p), err
	})
	if err != nil {
		t.Fatal(err)
	}
	got, logs = runPod(t, ctx, taskPod(ns, "from-default", `{"runAs": {"k8sServiceAccount": "pull-sa"}}`, true, taskContainer("task", "whoami")))
	if want := fmt.Sprintf("running as system:serviceaccount:%s:pull-sa\n", ns); !hasToken(got) || logs["task"] != want {
		t.Errorf("from an opted-out default: token %v, output %q, want %q", hasToken(got), logs["task"], want)
	}
}

// TestPolicyGuard: with the webhook's registration deleted, the admission
// policy still refuses a labelled pod, which would otherwise start without
// its secrets. The registration then comes back.
func TestPolicyGuard(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	mwcs := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	saved, err := mwcs.Get(ctx, "secctx", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := mwcs.Delete(ctx, "secctx", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		saved.ResourceVersion, saved.UID = "", ""
		if _, err := mwcs.Create(ctx, saved, metav1.CreateOptions{}); err != nil {
			t.Errorf("restore the webhook configuration: %v", err)
			return
		}
		err := framework.Poll(ctx, 60*time.Second, func() (bool, error) {
			p, err := kube.Client.CoreV1().Pods(ns).Create(ctx, taskPod(ns, "back", "{}", true, taskContainer("task", "whoami")), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err == nil && p.Annotations[annotStatus] != "", nil
		})
		if err != nil {
			t.Errorf("secctx does not inject again after its registration came back: %v", err)
		}
	})
	sc := `{"secrets": [{"group": "db-creds", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`
	want := `ValidatingAdmissionPolicy 'secctx-opt-in' with binding 'secctx-opt-in' denied request: the pod is labelled secctx.dev/inject: "true" but secctx did not inject it`
	var last error
	// The API server drops the webhook asynchronously.
	err = framework.Poll(ctx, 30*time.Second, func() (bool, error) {
		_, last = kube.Client.CoreV1().Pods(ns).Create(ctx, taskPod(ns, "labelled", sc, true, taskContainer("task", "env", "DB_PASSWORD")), metav1.CreateOptions{})
		if last == nil {
			return false, errors.New("a labelled pod was admitted without secctx")
		}
		return strings.Contains(last.Error(), want), nil
	})
	if err != nil {
		t.Fatalf("%v; last answer: %v; want a refusal containing %q", err, last, want)
	}
}

// TestWebhookDown: with secctx stopped, labelled pods are refused (it fails
// closed) and unlabelled pods still start. Then secctx comes back.
func TestWebhookDown(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, map[string]map[string]string{"db-creds": {"password": "p4ssw0rd-e2e"}})
	if err := deployed.Scale(ctx, kube, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := deployed.Scale(context.Background(), kube, 2); err != nil {
			t.Errorf("bring secctx back: %v", err)
		}
	})
	sc := `{"secrets": [{"group": "db-creds", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`
	_, err := kube.Client.CoreV1().Pods(ns).Create(ctx, taskPod(ns, "labelled", sc, true, taskContainer("task", "env", "DB_PASSWORD")), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), `failed calling webhook "pods.secctx.dev"`) {
		t.Errorf("labelled pod with secctx down: got %v, want a refusal from pods.secctx.dev", err)
	}
	_, logs := runPod(t, ctx, taskPod(ns, "unlabelled", "", false, taskContainer("task", "-full", "env", "HOSTNAME")))
	if logs["task"] != "HOSTNAME = unlabelled\n" {
		t.Errorf("unlabelled pod output %q", logs["task"])
	}
}
