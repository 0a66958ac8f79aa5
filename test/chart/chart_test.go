package chart

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
)

const (
	releaseNS = "secctx-system"
	sc        = `{"secrets": [{"group": "db", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`
)

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// render renders the chart as `helm template` does, for namespace.
func render(t *testing.T, namespace string, vals map[string]any) string {
	t.Helper()
	ch, err := loader.Load(framework.Root() + "/charts/secctx")
	if err != nil {
		t.Fatal(err)
	}
	v, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: "secctx", Namespace: namespace, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	files, err := engine.Render(ch, v)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range files {
		if !strings.HasSuffix(n, "NOTES.txt") && strings.TrimSpace(files[n]) != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "---\n# %s\n%s\n", n, files[n])
	}
	return b.String()
}

// TestServerSideDryRun: every certificate mode, and the ServiceMonitor, as
// rendered, is accepted by the real API server (schemas, defaults,
// admission), without creating anything.
func TestServerSideDryRun(t *testing.T) {
	needCluster(t)
	ctx := testContext(t, 2*time.Minute)
	crds, err := os.ReadFile("testdata/crds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := kube.Kubectl(ctx, bytes.NewReader(crds), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kube.Kubectl(ctx, nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
		t.Fatal(err)
	}
	ns := "chart-dry-run"
	if err := kube.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	ca, err := cluster.NewCA("provided-ca")
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]map[string]any{
		"self":                  {},
		"self with monitor":     {"serviceMonitor": map[string]any{"enabled": true}},
		"cert-manager":          {"certificates": map[string]any{"mode": "cert-manager"}},
		"cert-manager + issuer": {"certificates": map[string]any{"mode": "cert-manager", "certManager": map[string]any{"issuerRef": map[string]any{"name": "corp", "kind": "ClusterIssuer"}}}},
		"provided":              {"certificates": map[string]any{"mode": "provided", "caBundle": b64(ca.CertPEM)}},
	}
	for name, vals := range modes {
		t.Run(name, func(t *testing.T) {
			manifest := render(t, ns, vals)
			out, _, err := kube.Kubectl(ctx, strings.NewReader(manifest), "apply", "--dry-run=server", "-n", ns, "-f", "-")
			if err != nil {
				t.Fatalf("%v\n%s", err, manifest)
			}
			if !strings.Contains(out, "deployment.apps/secctx created (server dry run)") {
				t.Errorf("dry run output:\n%s", out)
			}
		})
	}
	if _, err := kube.Client.AppsV1().Deployments(ns).Get(ctx, "secctx", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("dry run created the Deployment: %v", err)
	}
}

// TestInstall installs the chart with its defaults and checks, in order: two
// replicas serve; no labelled pod fails while the certificate is rotated,
// the Deployment restarts and a replica is lost; helm upgrade changes what
// it should and keeps the CA; helm uninstall leaves no webhook behind.
func TestInstall(t *testing.T) {
	needCluster(t)
	ctx := testContext(t, 8*time.Minute)
	deployed, h, err := framework.InstallChart(ctx, kube, framework.Prefix("chart: "))
	if err != nil {
		t.Fatal(err)
	}
	// The metrics are read as Prometheus would: with a service account
	// bound to the chart's metrics-reader ClusterRole.
	if metricsToken, err = serviceAccountToken(ctx, "default", "metrics-scraper", true); err != nil {
		t.Fatal(err)
	}
	uninstalled := false
	t.Cleanup(func() {
		if !uninstalled {
			_ = h.Uninstall()
		}
	})

	t.Run("one certificate for every replica", func(t *testing.T) {
		secret, err := kube.Client.CoreV1().Secrets(releaseNS).Get(ctx, "secctx-webhook-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mwc, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "secctx", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(secret.Data["ca.crt"]) == 0 || !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]) {
			t.Error("the webhook's caBundle is not the Secret's CA")
		}
		block, _ := pem.Decode(secret.Data["tls.crt"])
		if block == nil {
			t.Fatal("no tls.crt in the Secret")
		}
		pods, err := secctxPods(ctx, releaseNS)
		if err != nil || len(pods) != 2 {
			t.Fatalf("ready replicas: %d, %v", len(pods), err)
		}
		for _, p := range pods {
			got, err := servedCert(p.Status.PodIP)
			if err != nil || !bytes.Equal(got.Raw, block.Bytes) {
				t.Errorf("replica %s does not serve the Secret's certificate: %v", p.Name, err)
			}
		}
	})

	t.Run("one writer, high priority", func(t *testing.T) {
		pods, err := secctxPods(ctx, releaseNS)
		if err != nil || len(pods) != 2 {
			t.Fatalf("ready replicas: %d, %v", len(pods), err)
		}
		lease, err := kube.Client.CoordinationV1().Leases(releaseNS).Get(ctx, "secctx-webhook-tls-rotation", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("no rotation lease: %v", err)
		}
		holder := ptr.Deref(lease.Spec.HolderIdentity, "")
		if !strings.HasPrefix(holder, pods[0].Name+"_") && !strings.HasPrefix(holder, pods[1].Name+"_") {
			t.Errorf("the rotation lease is held by %q, not by a replica (%s, %s)", holder, pods[0].Name, pods[1].Name)
		}
		for _, p := range pods {
			if p.Spec.PriorityClassName != "system-cluster-critical" || ptr.Deref(p.Spec.Priority, 0) != 2000000000 {
				t.Errorf("replica %s: priority class %q (%d)", p.Name, p.Spec.PriorityClassName, ptr.Deref(p.Spec.Priority, 0))
			}
		}
	})

	t.Run("metrics only to authorized clients", func(t *testing.T) {
		pods, err := secctxPods(ctx, releaseNS)
		if err != nil || len(pods) == 0 {
			t.Fatalf("ready replicas: %d, %v", len(pods), err)
		}
		ip := pods[0].Status.PodIP
		if code, _, err := getMetrics(ip, ""); err != nil || code != http.StatusUnauthorized {
			t.Errorf("no token: %d %v, want 401", code, err)
		}
		other, err := serviceAccountToken(ctx, "default", "metrics-nobody", false)
		if err != nil {
			t.Fatal(err)
		}
		if code, _, err := getMetrics(ip, other); err != nil || code != http.StatusForbidden {
			t.Errorf("a token without the metrics-reader role: %d %v, want 403", code, err)
		}
		if code, body, err := getMetrics(ip, metricsToken); err != nil || code != http.StatusOK || !strings.Contains(body, "secctx_admission_decisions_total") {
			t.Errorf("a token with the metrics-reader role: %d %v, want 200 with secctx's series", code, err)
		}
	})

	t.Run("available through rotation, restart and loss", func(t *testing.T) {
		ns := "chart-load"
		if err := kube.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		load := startLoad(ctx, ns, 2)
		step := func(what string, f func() error) {
			t0 := time.Now()
			if err := f(); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			t.Logf("%s: %.1fs, %d pods created so far", what, time.Since(t0).Seconds(), load.created.Load())
		}
		time.Sleep(2 * time.Second)
		step("forced certificate rotation", func() error { return rotateCertificate(ctx, deployed.Namespace) })
		step("rolling restart", func() error {
			if _, _, err := kube.Kubectl(ctx, nil, "-n", deployed.Namespace, "rollout", "restart", "deployment/secctx"); err != nil {
				return err
			}
			_, _, err := kube.Kubectl(ctx, nil, "-n", deployed.Namespace, "rollout", "status", "deployment/secctx", "--timeout=120s")
			return err
		})
		step("loss of one replica", func() error {
			pods, err := secctxPods(ctx, deployed.Namespace)
			if err != nil {
				return err
			}
			if err := kube.Client.CoreV1().Pods(deployed.Namespace).Delete(ctx, pods[0].Name, metav1.DeleteOptions{}); err != nil {
				return err
			}
			return framework.Poll(ctx, 2*time.Minute, func() (bool, error) {
				ps, err := secctxPods(ctx, deployed.Namespace)
				return err == nil && len(ps) == 2 && ps[0].Name != pods[0].Name && ps[1].Name != pods[0].Name, nil
			})
		})
		step("both replicas answer", func() error { return bothReplicasServe(ctx, deployed.Namespace) })
		load.stop()
		t.Logf("%d labelled pods created during the run: %d refused or failed, %d admitted without injection",
			load.created.Load()+load.failed.Load(), load.failed.Load(), load.notInjected.Load())
		if load.failed.Load() > 0 || load.notInjected.Load() > 0 {
			t.Errorf("pods failed: %v", load.errors())
		}
		if load.created.Load() < 100 {
			t.Errorf("only %d pods created; the load did not run", load.created.Load())
		}
	})

	t.Run("upgrade", func(t *testing.T) {
		before, err := kube.Client.CoreV1().Secrets(releaseNS).Get(ctx, "secctx-webhook-tls", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vals := framework.LocalImage()
		vals["webhook"] = map[string]any{"timeoutSeconds": 7}
		vals["config"] = map[string]any{"inject": map[string]any{"envVarPrefix": "SECRET_"}}
		if err := h.Upgrade(ctx, vals); err != nil {
			t.Fatal(err)
		}
		mwc, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "secctx", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := *mwc.Webhooks[0].TimeoutSeconds; got != 7 {
			t.Errorf("timeoutSeconds after upgrade: %d, want 7", got)
		}
		if !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, before.Data["ca.crt"]) {
			t.Error("the upgrade changed or dropped the CA bundle")
		}
		after, err := kube.Client.CoreV1().Secrets(releaseNS).Get(ctx, "secctx-webhook-tls", metav1.GetOptions{})
		if err != nil || !bytes.Equal(after.Data["ca.crt"], before.Data["ca.crt"]) {
			t.Errorf("the upgrade changed the CA Secret: %v", err)
		}
		// The config change rolled the pods (checksum annotation); new pods
		// use the new prefix.
		err = framework.Poll(ctx, time.Minute, func() (bool, error) {
			p, err := dryRunPod(ctx, "default")
			return err == nil && hasEnv(p, "SECRET_DB_PASSWORD"), nil
		})
		if err != nil {
			t.Errorf("new envVarPrefix not in effect: %v", err)
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		uninstalled = true
		if err := h.Uninstall(); err != nil {
			t.Fatal(err)
		}
		if _, err := kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "secctx", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("webhook configuration after uninstall: %v", err)
		}
		for _, name := range []string{"secctx-opt-in"} {
			if _, err := kube.Client.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("admission policy %s after uninstall: %v", name, err)
			}
		}
		// Nothing rejects labelled pods any more: they are created as they
		// are, once the API server has dropped the policy (asynchronously).
		var p *corev1.Pod
		var last error
		err := framework.Poll(ctx, 30*time.Second, func() (bool, error) {
			p, last = dryRunPod(ctx, "default")
			return last == nil, nil
		})
		if err != nil {
			t.Errorf("labelled pod after uninstall: %v", last)
		} else if hasEnv(p, "DB_PASSWORD") {
			t.Error("a pod is still injected after uninstall")
		}
	})
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func labelledPod(ns string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "load-", Namespace: ns,
			Labels:      map[string]string{"secctx.dev/inject": "true"},
			Annotations: map[string]string{"secctx.dev/security-context": sc},
		},
		Spec: corev1.PodSpec{
			// Never scheduled: the test is about admission, not running pods.
			NodeSelector: map[string]string{"secctx.dev/test": "never"},
			Containers:   []corev1.Container{{Name: "task", Image: framework.TaskImage}},
		},
	}
}

func dryRunPod(ctx context.Context, ns string) (*corev1.Pod, error) {
	return kube.Client.CoreV1().Pods(ns).Create(ctx, labelledPod(ns), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
}

func hasEnv(p *corev1.Pod, name string) bool {
	for _, e := range p.Spec.Containers[0].Env {
		if e.Name == name {
			return true
		}
	}
	return false
}

// load creates labelled pods from several workers until stopped, counting
// what came back.
type load struct {
	created, failed, notInjected atomic.Int64
	mu                           sync.Mutex
	errs                         []string
	cancel                       context.CancelFunc
	wg                           sync.WaitGroup
}

func startLoad(ctx context.Context, ns string, workers int) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				p, err := kube.Client.CoreV1().Pods(ns).Create(ctx, labelledPod(ns), metav1.CreateOptions{})
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					l.mu.Unlock()
				case !hasEnv(p, "DB_PASSWORD"):
					l.notInjected.Add(1)
				default:
					l.created.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) stop() { l.cancel(); l.wg.Wait() }

func (l *load) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.errs...)
}

func secctxPods(ctx context.Context, ns string) ([]corev1.Pod, error) {
	list, err := kube.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=secctx"})
	if err != nil {
		return nil, err
	}
	var ready []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = append(ready, p)
			}
		}
	}
	return ready, nil
}

// rotateCertificate forces a new serving certificate by removing it from
// the Secret (the CA stays), then waits until every replica serves it.
func rotateCertificate(ctx context.Context, ns string) error {
	s, err := kube.Client.CoreV1().Secrets(ns).Get(ctx, "secctx-webhook-tls", metav1.GetOptions{})
	if err != nil {
		return err
	}
	old := s.Data["tls.crt"]
	delete(s.Data, "tls.crt")
	delete(s.Data, "tls.key")
	if _, err := kube.Client.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return err
	}
	var fresh []byte
	err = framework.Poll(ctx, time.Minute, func() (bool, error) {
		s, err := kube.Client.CoreV1().Secrets(ns).Get(ctx, "secctx-webhook-tls", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		fresh = s.Data["tls.crt"]
		return len(fresh) > 0 && !bytes.Equal(fresh, old), nil
	})
	if err != nil {
		return fmt.Errorf("secctx did not issue a new certificate: %w", err)
	}
	block, _ := pem.Decode(fresh)
	if block == nil {
		return fmt.Errorf("new tls.crt is not PEM")
	}
	want, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return err
	}
	return framework.Poll(ctx, time.Minute, func() (bool, error) {
		pods, err := secctxPods(ctx, ns)
		if err != nil || len(pods) != 2 {
			return false, err
		}
		for _, p := range pods {
			if got, err := servedCert(p.Status.PodIP); err != nil || !got.Equal(want) {
				return false, nil
			}
		}
		return true, nil
	})
}

// servedCert connects to a replica directly (pod IPs are reachable from
// the node) and returns the certificate it serves.
func servedCert(ip string) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", net.JoinHostPort(ip, "9443"), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0], nil
}

// bothReplicasServe waits until each ready replica has answered admission
// requests, read from its own /metrics: the Service spreads the load.
func bothReplicasServe(ctx context.Context, ns string) error {
	return framework.Poll(ctx, 30*time.Second, func() (bool, error) {
		pods, err := secctxPods(ctx, ns)
		if err != nil || len(pods) != 2 {
			return false, err
		}
		for _, p := range pods {
			if n, err := admissions(p.Status.PodIP); err != nil || n == 0 {
				return false, nil
			}
		}
		return true, nil
	})
}

// metricsToken is a token allowed to read /metrics (TestInstall).
var metricsToken string

// serviceAccountToken makes a service account in ns and returns a token of
// it; bound, it may read secctx's metrics.
func serviceAccountToken(ctx context.Context, ns, name string, bound bool) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := kube.Client.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	if bound {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "secctx-metrics-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		}
		if _, err := kube.Client.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", err
		}
	}
	tr, err := kube.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// getMetrics reads a replica's /metrics over HTTPS (its certificate is
// self-made, as a ServiceMonitor with insecureSkipVerify reads it), with
// token when it is not empty.
func getMetrics(ip, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(ip, "8443")+"/metrics", nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}

func admissions(ip string) (float64, error) {
	code, body, err := getMetrics(ip, metricsToken)
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: %d", code)
	}
	var total float64
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "secctx_admission_decisions_total{") {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	return total, sc.Err()
}
