package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	vault "github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/test/framework"
)

// storeGate stands between the pods and kumo: it counts the calls by
// action, as AWS would bill them, and can take the store down (every call
// answered 503) and bring it back, or throttle it for a while (429).
type storeGate struct {
	down  atomic.Bool
	mu    sync.Mutex
	calls map[string]int
	// throttleFor is how long throttling lasts from the first call after
	// throttle; until is when it ends; refused counts the calls answered
	// 429 meanwhile.
	throttleFor time.Duration
	until       time.Time
	refused     map[string]int
}

func (g *storeGate) serve(t *testing.T, kumo *framework.Server) string {
	t.Helper()
	target, _ := url.Parse(kumo.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	ln, err := net.Listen("tcp", net.JoinHostPort(*hostAddress, "0"))
	if err != nil {
		t.Fatal(err)
	}
	g.calls = map[string]int{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		action := req.Header.Get("X-Amz-Target")
		if action == "" { // STS is a query API
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(strings.NewReader(string(body)))
			form, _ := url.ParseQuery(string(body))
			action = form.Get("Action")
		}
		g.mu.Lock()
		g.calls[action]++
		g.mu.Unlock()
		if g.throttled(w, action) {
			return
		}
		if g.down.Load() {
			http.Error(w, `{"__type":"ServiceUnavailable","message":"the store is down (test)"}`, http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, req)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func (g *storeGate) count() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for k, v := range g.calls {
		out[k] = v
	}
	return out
}

// TestRefresh: inject.refresh on a long-running task. The task rereads
// three FILE secrets every 20 ms: one from Secrets Manager (kumo), one from
// Vault (KV v2, with a login token of 10 s TTL and 25 s max TTL) and a
// Kubernetes Secret. New values arrive: the stores' within the interval
// plus jitter, the Secret's when the kubelet syncs the pod; no read ever
// fails or finds an empty file. With Secrets Manager down the last value
// stays and the sidecar says why; once it is back the newest value
// arrives. The Vault login outlives its max TTL several times. The task
// ends, the sidecar exits 0, the pod is Succeeded.
func TestRefresh(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	ns := namespace(t, ctx, map[string]map[string]string{"app-config": {"api-key": "k8s-v1"}})
	v := vaultForCluster(t, ctx, ns)
	root, _ := vault.NewClient(&vault.Config{Address: v.URL})
	root.SetToken("root")
	if _, err := root.Logical().WriteWithContext(ctx, "auth/kubernetes/role/task", map[string]any{
		"bound_service_account_names": []string{"task-sa"}, "bound_service_account_namespaces": []string{ns},
		"token_policies": []string{"read-my-app"}, "token_ttl": "10s", "token_max_ttl": "25s",
	}); err != nil {
		t.Fatal(err)
	}
	putVault := func(value string) {
		t.Helper()
		if _, err := root.Logical().WriteWithContext(ctx, "secret/data/my-app", map[string]any{"data": map[string]any{"db_password": value}}); err != nil {
			t.Fatal(err)
		}
	}
	putVault("vault-v1")
	kumo := startStore(t, ctx, framework.StartKumo)
	gate := &storeGate{}
	gateAddr := gate.serve(t, kumo)
	sm := kumoAdmin(kumo)
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("refresh-db"), SecretString: aws.String("aws-v1")})
	if err != nil {
		t.Fatal(err)
	}
	putAWS := func(value string) {
		t.Helper()
		if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: created.ARN, SecretString: aws.String(value)}); err != nil {
			t.Fatal(err)
		}
	}
	group, key, _ := strings.Cut(*created.ARN, ":secret:")
	group += ":secret"
	const interval = 10
	stores := framework.WithStores(fmt.Sprintf(`backends:
- store: aws
- group: secret/*
  store: vault
aws:
  secretsManagerEndpoint: http://%[1]s
  stsEndpoint: http://%[1]s
vault:
  mode: agent
  role: task
  kvVersion: "2"
  address: %[2]s
`, gateAddr, v.URL), gateAddr, v.Addr)
	configure(t, ctx, func(c string) string { return framework.WithRefresh(interval)(stores(c)) },
		`{"secrets": [{"group": "arn:aws:secretsmanager:us-east-1:000000000000:secret", "key": "probe", "mountRequirement": "FILE"}]}`)
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "task-sa"}})

	awsFile := strings.ToLower(group) + "/" + strings.ToLower(key)
	files := []string{awsFile, "secret/my-app/db_password", "app-config/api-key"}
	sc := fmt.Sprintf(`{"runAs": {"k8sServiceAccount": "task-sa", "iamRole": "arn:aws:iam::123456789012:role/refresh"},
	  "secrets": [{"group": %q, "key": %q, "mountRequirement": "FILE"},
	              {"group": "secret/my-app", "key": "db_password", "mountRequirement": "FILE"},
	              {"group": "app-config", "key": "api-key", "mountRequirement": "FILE"}]}`, group, key)
	task := taskContainer("main")
	const runFor = 150 * time.Second
	task.Command = append([]string{"/task", "-full", "watch", runFor.String()}, files...)
	p := taskPod(ns, "refresh", sc, true, task)
	p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: aws.Int64(1000), RunAsGroup: aws.Int64(1000)}
	pods := kube.Client.CoreV1().Pods(ns)
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	logs := func(container string) string {
		b, _ := pods.GetLogs(p.Name, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
		return string(b)
	}
	// seen waits until the task has printed each want, and says how long
	// that took from since.
	seen := func(what string, since time.Time, timeout time.Duration, want ...string) time.Duration {
		t.Helper()
		err := framework.Poll(ctx, timeout, func() (bool, error) {
			l := logs("main")
			for _, w := range want {
				if !strings.Contains(l, w) {
					return false, nil
				}
			}
			return true, nil
		})
		if err != nil {
			t.Fatalf("%s: %v\ntask:\n%s\nsidecar:\n%s", what, err, logs("main"), logs("secctx-sidecar"))
		}
		d := time.Since(since)
		t.Logf("%s: %.1fs", what, d.Seconds())
		return d
	}
	seen("first values", started, 90*time.Second, awsFile+" = aws-v1", "secret/my-app/db_password = vault-v1", "app-config/api-key = k8s-v1")

	changed := time.Now()
	putAWS("aws-v2")
	putVault("vault-v2")
	sec, err := kube.Client.CoreV1().Secrets(ns).Get(ctx, "app-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{"api-key": []byte("k8s-v2")}
	if _, err := kube.Client.CoreV1().Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The interval plus its jitter, and the poll of the logs.
	bound := time.Duration(interval*1.1*float64(time.Second)) + 3*time.Second
	if d := seen("new store values", changed, 30*time.Second, awsFile+" = aws-v2", "secret/my-app/db_password = vault-v2"); d > bound {
		t.Errorf("the new values took %s, more than the interval plus jitter (%s)", d, bound)
	}

	// Secrets Manager down: the last value stays, the sidecar says why.
	gate.down.Store(true)
	putAWS("aws-v3")
	time.Sleep(2*interval*time.Second + 5*time.Second)
	if l := logs("main"); strings.Contains(l, "aws-v3") {
		t.Errorf("a value arrived while the store was down:\n%s", l)
	}
	if l := logs("secctx-sidecar"); !strings.Contains(l, "secret not refreshed") || !strings.Contains(l, "the last good values are kept") {
		t.Errorf("the sidecar does not say that the refresh fails:\n%s", l)
	}
	back := time.Now()
	gate.down.Store(false)
	seen("the value after the store came back", back, 30*time.Second, awsFile+" = aws-v3")
	// By now the Vault login has passed its 25 s max TTL at least twice.
	putVault("vault-v3")
	seen("vault after two max TTLs", time.Now(), 30*time.Second, "secret/my-app/db_password = vault-v3")
	seen("the Kubernetes Secret (the kubelet's sync)", changed, 150*time.Second, "app-config/api-key = k8s-v2")

	var final *corev1.Pod
	if err := framework.Poll(ctx, runFor+time.Minute, func() (bool, error) {
		final, err = pods.Get(ctx, p.Name, metav1.GetOptions{})
		return err == nil && (final.Status.Phase == corev1.PodSucceeded || final.Status.Phase == corev1.PodFailed), err
	}); err != nil {
		t.Fatal(err)
	}
	lived := time.Since(started)
	taskLog, side := logs("main"), logs("secctx-sidecar")
	if final.Status.Phase != corev1.PodSucceeded {
		t.Errorf("phase %s, want Succeeded", final.Status.Phase)
	}
	for _, s := range final.Status.InitContainerStatuses {
		if s.Name == "secctx-sidecar" && (s.State.Terminated == nil || s.State.Terminated.ExitCode != 0) {
			t.Errorf("the sidecar did not exit 0: %+v", s.State)
		}
	}
	if !strings.Contains(taskLog, ", failed 0\n") {
		t.Errorf("reads failed or found an empty file while the sets were replaced:\n%s", taskLog)
	}
	for _, w := range []string{"vault logged in again", "secrets refreshed", "vault login token revoked"} {
		if !strings.Contains(side, w) {
			t.Errorf("the sidecar's log has no %q:\n%s", w, side)
		}
	}
	for _, v := range []string{"aws-v", "vault-v"} {
		if strings.Contains(side, v) || strings.Contains(logs("secctx-fetch"), v) {
			t.Errorf("a value is in the agent's logs")
		}
	}
	calls := gate.count()
	hours := lived.Hours()
	t.Logf("pod lived %.0fs; store calls: %v; per hour at a %ds interval: DescribeSecret %.0f, GetSecretValue %.0f, AssumeRoleWithWebIdentity %.0f",
		lived.Seconds(), calls, interval, float64(calls["secretsmanager.DescribeSecret"])/hours,
		float64(calls["secretsmanager.GetSecretValue"])/hours, float64(calls["AssumeRoleWithWebIdentity"])/hours)
	t.Logf("task:\n%s", taskLog)
}
