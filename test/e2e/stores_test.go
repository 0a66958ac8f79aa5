package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	vault "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/test/framework"
)

// stsRecorder stands between the pods and kumo, which checks no web
// identity: it keeps each AssumeRoleWithWebIdentity's role and token, so
// that the test can have the API server check the token the agent sent.
type stsRecorder struct {
	mu    sync.Mutex
	calls []url.Values
}

func (r *stsRecorder) serve(t *testing.T, kumo *framework.Server) string {
	t.Helper()
	target, _ := url.Parse(kumo.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", net.JoinHostPort(*hostAddress, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Action") == "AssumeRoleWithWebIdentity" {
			r.mu.Lock()
			r.calls = append(r.calls, form)
			r.mu.Unlock()
		}
		proxy.ServeHTTP(w, req)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// kumoAdmin is a Secrets Manager client straight to kumo, for the test to
// put and change secrets (kumo accepts any credentials).
func kumoAdmin(kumo *framework.Server) *secretsmanager.Client {
	return secretsmanager.New(secretsmanager.Options{Region: "us-east-1", BaseEndpoint: aws.String(kumo.URL),
		Credentials: credentials.NewStaticCredentialsProvider("admin", "admin", "")})
}

// startStore starts a store on this machine's address as the cluster sees
// it (-host-address).
func startStore(t *testing.T, ctx context.Context, start func(context.Context, string) (*framework.Server, error)) *framework.Server {
	t.Helper()
	s, err := start(ctx, *hostAddress)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server logs:\n%s", s.Logs())
		}
		s.Stop()
	})
	return s
}

// configure switches secctx to another backend for one test.
func configure(t *testing.T, ctx context.Context, edit func(string) string, probe string) {
	t.Helper()
	reconfigured(t, func() (func(context.Context) error, error) { return deployed.Configure(ctx, kube, edit, probe) })
}

// reconfigured applies a change of secctx's config (apply returns how to
// put it back) for the rest of the test; restore puts it back earlier, and
// the test's end does it only when restore was not called.
func reconfigured(t *testing.T, apply func() (func(context.Context) error, error)) (restore func(context.Context) error) {
	t.Helper()
	undo, err := apply()
	if err != nil {
		t.Fatal(err)
	}
	done := false
	restore = func(ctx context.Context) error {
		if done {
			return nil
		}
		done = true
		return undo(ctx)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := restore(ctx); err != nil {
			t.Errorf("restore secctx's config: %v", err)
		}
	})
	return restore
}

// TestAWSSecretsManager: example 5 with an AWS secret. The pod gets its
// projected token; the fetch init container assumes the role at the
// (emulated) STS with that token and reads the secret from Secrets Manager;
// the task reads it through flytekit's lookup, from the file and from the
// env var the exec wrapper sets. The API server checks the token the agent
// sent: the audience is STS's and the subject the pod's final account.
func TestAWSSecretsManager(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	kumo := startStore(t, ctx, framework.StartKumo)
	rec := &stsRecorder{}
	sts := rec.serve(t, kumo)
	sm := kumoAdmin(kumo)
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("db-password"), SecretString: aws.String("aws-s3cr3t")})
	if err != nil {
		t.Fatal(err)
	}
	group, key, _ := strings.Cut(*created.ARN, ":secret:")
	group += ":secret"
	apiKey, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("api-key"), SecretString: aws.String("aws-api-k3y")})
	if err != nil {
		t.Fatal(err)
	}
	_, key2, _ := strings.Cut(*apiKey.ARN, ":secret:")
	configure(t, ctx, framework.WithBackend("aws", "aws:\n  secretsManagerEndpoint: "+kumo.URL+"\n  stsEndpoint: http://"+sts+"\n", kumo.Addr, sts),
		`{"secrets": [{"group": "arn:aws:secretsmanager:us-east-1:000000000000:secret", "key": "probe", "mountRequirement": "FILE"}]}`)

	ns := namespace(t, ctx, nil)
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "data-processing-sa"}})
	const role = "arn:aws:iam::123456789012:role/my-workflow-role"
	sc := fmt.Sprintf(`{"runAs": {"iamRole": %q, "k8sServiceAccount": "data-processing-sa"},
	  "secrets": [{"group": %q, "key": %q, "mountRequirement": "FILE", "envVar": "DB_PASSWORD_PATH"},
	              {"group": %q, "key": %q, "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"},
	              {"group": %q, "key": %q}]}`, role, group, key, group, key, group, key2)
	// Every target gets the ENV_VAR secret through the exec wrapper, so
	// each has an explicit command.
	file := taskContainer("file")
	file.Command = []string{"/task", "-full", "file-from-env", "DB_PASSWORD_PATH"}
	env := taskContainer("env")
	env.Command = []string{"/task", "-full", "env", "DB_PASSWORD"}
	lookup := taskContainer("flytekit")
	lookup.Command = []string{"/task", "-full", "flytekit", group + "/" + key, group + "/" + key2}
	// Each container its own user, all in fsGroup 2000: the files are
	// 0440 in that group.
	for i, c := range []*corev1.Container{&file, &env, &lookup} {
		c.SecurityContext = &corev1.SecurityContext{RunAsUser: aws.Int64(int64(1001 + i))}
	}
	p := taskPod(ns, "aws-secret", sc, true, file, env, lookup)
	p.Spec.SecurityContext = &corev1.PodSecurityContext{FSGroup: aws.Int64(2000)}
	pod, logs := runPod(t, ctx, p)
	if !slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == "secctx-fetch" && slices.Contains(c.Args, "--mode=0440")
	}) {
		t.Errorf("the fetch did not write 0440 files for fsGroup 2000: %v", pod.Spec.InitContainers)
	}

	path := "/etc/flyte/secrets/" + strings.ToLower(group) + "/" + key
	for name, want := range map[string]string{
		"file": "DB_PASSWORD_PATH = " + path + " = aws-s3cr3t\n",
		"env":  "DB_PASSWORD = aws-s3cr3t\n",
		// The ENV_VAR secret from its env var, the ANY one (a file) from
		// its file.
		"flytekit": group + "/" + key + " from env " + "_FSEC_" + strings.ToUpper(group) + "_" + strings.ToUpper(key) + " = aws-s3cr3t\n" +
			group + "/" + key2 + " from file /etc/flyte/secrets/" + strings.ToLower(group) + "/" + strings.ToLower(key2) + " = aws-api-k3y\n",
	} {
		if logs[name] != want {
			t.Errorf("%s: got %q, want %q", name, logs[name], want)
		}
	}
	if strings.Contains(logs["secctx-fetch"], "aws-s3cr3t") {
		t.Errorf("the fetch logged the value:\n%s", logs["secctx-fetch"])
	}
	for _, c := range pod.Spec.InitContainers {
		for _, e := range c.Env {
			if strings.Contains(e.Value, "aws-s3cr3t") {
				t.Errorf("the value is in the spec: init container %s env %s", c.Name, e.Name)
			}
		}
	}

	rec.mu.Lock()
	calls := rec.calls
	rec.mu.Unlock()
	if len(calls) == 0 {
		t.Fatalf("the agent never called AssumeRoleWithWebIdentity; fetch logs:\n%s", logs["secctx-fetch"])
	}
	if got := calls[0].Get("RoleArn"); got != role {
		t.Errorf("AssumeRoleWithWebIdentity for role %q, want %q", got, role)
	}
	review, err := kube.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: calls[0].Get("WebIdentityToken"), Audiences: []string{"sts.amazonaws.com"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := review.Status; !st.Authenticated || st.User.Username != "system:serviceaccount:"+ns+":data-processing-sa" {
		t.Errorf("TokenReview of the token the agent sent to STS: authenticated %v as %q (%s); want data-processing-sa for sts.amazonaws.com",
			st.Authenticated, st.User.Username, st.Error)
	}
}

// vaultForCluster starts Vault with KV v2 at secret/ holding my-app, a
// policy that reads it, and the Kubernetes auth method pointed at the
// cluster's API server, which checks each pod's token with a TokenReview;
// role "task" allows only service account task-sa in ns.
func vaultForCluster(t *testing.T, ctx context.Context, ns string) *framework.Server {
	t.Helper()
	v := startStore(t, ctx, framework.StartVault)
	c, err := vault.NewClient(&vault.Config{Address: v.URL})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("root")
	must := func(_ *vault.Secret, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Logical().WriteWithContext(ctx, "secret/data/my-app", map[string]any{"data": map[string]any{"db_password": "vault-s3cr3t"}}))
	if err := c.Sys().PutPolicyWithContext(ctx, "read-my-app", `path "secret/data/my-app" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vault.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	// Vault's own account for TokenReviews: system:auth-delegator.
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "vault-reviewer"}})
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ns + "-vault-reviewer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vault-reviewer", Namespace: ns}}}
	if _, err := kube.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), crb.Name, metav1.DeleteOptions{})
	})
	tr, err := kube.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "vault-reviewer", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: aws.Int64(3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ca := kube.REST.TLSClientConfig.CAData
	if len(ca) == 0 && kube.REST.TLSClientConfig.CAFile != "" {
		if ca, err = os.ReadFile(kube.REST.TLSClientConfig.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	must(c.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host": kube.REST.Host, "kubernetes_ca_cert": string(ca), "token_reviewer_jwt": tr.Status.Token,
	}))
	must(c.Logical().WriteWithContext(ctx, "auth/kubernetes/role/task", map[string]any{
		"bound_service_account_names": []string{"task-sa"}, "bound_service_account_namespaces": []string{ns},
		"token_policies": []string{"read-my-app"}, "token_ttl": "5m",
	}))
	return v
}

// TestVaultAgentMode: the fetch init container logs in to Vault with the
// Kubernetes auth method as the pod's service account, which Vault checks
// against the API server, and reads KV v2; the task reads the secret from
// the file and from the env var. A pod whose account the role does not
// allow never starts its task, and the init container says why.
func TestVaultAgentMode(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	ns := namespace(t, ctx, nil)
	v := vaultForCluster(t, ctx, ns)
	configure(t, ctx, framework.WithBackend("vault", "vault:\n  mode: agent\n  role: task\n  kvVersion: \"2\"\n  address: "+v.URL+"\n", v.Addr),
		`{"secrets": [{"group": "secret/probe", "key": "k", "mountRequirement": "FILE"}]}`)
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "task-sa"}})

	const secrets = `[{"group": "secret/my-app", "key": "db_password", "mountRequirement": "FILE", "envVar": "DB_PASSWORD_PATH"},
	                  {"group": "secret/my-app", "key": "db_password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]`
	file := taskContainer("file")
	file.Command = []string{"/task", "-full", "file-from-env", "DB_PASSWORD_PATH"}
	env := taskContainer("env")
	env.Command = []string{"/task", "-full", "env", "DB_PASSWORD"}
	// The pod runs as user 1000: the fetch runs as that user too, and the
	// files are 0400.
	ok := taskPod(ns, "vault-secret", `{"runAs": {"k8sServiceAccount": "task-sa"}, "secrets": `+secrets+`}`, true, file, env)
	ok.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: aws.Int64(1000), RunAsGroup: aws.Int64(1000)}
	okPod, logs := runPod(t, ctx, ok)
	for _, c := range okPod.Spec.InitContainers {
		if c.Name == "secctx-fetch" && (!slices.Contains(c.Args, "--mode=0400") || c.SecurityContext == nil || c.SecurityContext.RunAsUser == nil || *c.SecurityContext.RunAsUser != 1000) {
			t.Errorf("the fetch does not run as user 1000 with 0400 files: %v %+v", c.Args, c.SecurityContext)
		}
	}
	for name, want := range map[string]string{
		"file": "DB_PASSWORD_PATH = /etc/flyte/secrets/secret/my-app/db_password = vault-s3cr3t\n",
		"env":  "DB_PASSWORD = vault-s3cr3t\n",
	} {
		if logs[name] != want {
			t.Errorf("%s: got %q, want %q", name, logs[name], want)
		}
	}

	// The default account: the role refuses it.
	pod := taskPod(ns, "vault-refused", `{"secrets": `+secrets+`}`, true, file)
	if _, err := kube.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	err := framework.Poll(ctx, 90*time.Second, func() (bool, error) {
		var err error
		got, err = kube.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && (got.Status.Phase == corev1.PodFailed || got.Status.Phase == corev1.PodSucceeded), err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.PodFailed {
		t.Fatalf("pod with an account the role refuses: phase %s, want Failed", got.Status.Phase)
	}
	var msg string
	for _, s := range got.Status.InitContainerStatuses {
		if s.Name == "secctx-fetch" && s.State.Terminated != nil {
			msg = s.State.Terminated.Message
		}
	}
	t.Logf("the fetch's termination message: %s", msg)
	for _, w := range []string{`vault login at auth/kubernetes as role "task"`, "system:serviceaccount:" + ns + ":default", "denied"} {
		if !strings.Contains(msg, w) {
			t.Errorf("the fetch's termination message does not say %q:\n%s", w, msg)
		}
	}
	for _, s := range got.Status.ContainerStatuses {
		if s.State.Terminated != nil && s.State.Terminated.ExitCode == 0 {
			t.Errorf("container %s ran without its secret", s.Name)
		}
	}
}
