package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/test/framework"
)

// The test provider: a real OpenID Provider (zitadel/oidc, test/images/oidc)
// in a pod behind a Service at a fixed ClusterIP, with the resource server
// beside it. Its tokens last oidcLifetime.
const (
	oidcNamespace = "secctx-oidc"
	oidcClient    = "my-app-client-id"
	oidcSecret    = "e2e-client-secret-value"
	oidcLifetime  = 10 * time.Second
	oidcIssuer    = framework.OIDCIssuer
	apiURL        = "http://" + framework.OIDCIP + ":8081/"
)

var oidcOnce struct {
	sync.Once
	err error
}

// oidcProvider starts the provider once for the suite.
func oidcProvider(t *testing.T, ctx context.Context) {
	t.Helper()
	oidcOnce.Do(func() {
		oidcOnce.err = framework.StartOIDCProvider(ctx, kube, oidcNamespace, map[string]string{oidcClient: oidcSecret}, oidcLifetime)
	})
	if oidcOnce.err != nil {
		t.Fatalf("OpenID provider: %v", oidcOnce.err)
	}
}

// example4 is the reference example 4, with the provider's endpoints.
func example4(discovery bool) string {
	endpoint := `"tokenEndpoint": "` + oidcIssuer + `/oauth/token"`
	if discovery {
		endpoint = `"idpDiscoveryEndpoint": "` + oidcIssuer + `/.well-known/openid-configuration"`
	}
	return `{"tokens": [{"name": "external-api-access", "type": "CLIENT_CREDENTIALS",
	  "client": {"clientId": "` + oidcClient + `", "clientSecret": {"group": "oauth-secrets", "key": "my-app-client-secret"}}, ` + endpoint + `}]}`
}

// TestTokens: example 4's task reads its token from EXTERNAL_API_ACCESS_TOKEN
// (set by the exec wrapper) and from the file, the resource server accepts
// both, and after more than two token lifetimes the file's token is a
// renewed, valid one. The pod completes, the sidecar with it.
func TestTokens(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	oidcProvider(t, ctx)
	ns := namespace(t, ctx, map[string]map[string]string{"oauth-secrets": {"my-app-client-secret": oidcSecret}})
	task := taskContainer("task")
	task.Command = []string{"/task", "call-api", apiURL, "EXTERNAL_API_ACCESS_TOKEN", (2*oidcLifetime + 5*time.Second).String()}
	stop := make(chan struct{})
	rss := make(chan uint64, 1)
	go func() { rss <- sidecarRSS(ctx, ns, "example-4", stop) }()
	got, logs := runPod(t, ctx, taskPod(ns, "example-4", example4(true), true, task))
	close(stop)
	if max := <-rss; max == 0 {
		t.Log("the kubelet reported no memory for the sidecar")
	} else {
		// docs/performance.md records this; the bound is 15 MiB.
		t.Logf("token sidecar RSS (kubelet stats, the most seen): %.1f MiB", float64(max)/(1<<20))
		if max > 15<<20 {
			t.Errorf("token sidecar RSS %.1f MiB, want under 15 MiB", float64(max)/(1<<20))
		}
	}

	out := logs["task"]
	for _, want := range []string{
		"token from env EXTERNAL_API_ACCESS_TOKEN = eyJ...; the API says: 200 ok, client " + oidcClient,
		"token from file /etc/flyte/tokens/external-api-access = eyJ...; the API says: 200 ok, client " + oidcClient,
		"renewed token read from the file (3 so far)",
		"after 25s: token from file /etc/flyte/tokens/external-api-access = eyJ...; the API says: 200 ok",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("task output lacks %q:\n%s", want, out)
		}
	}
	for _, s := range got.Status.InitContainerStatuses {
		if s.Name == "secctx-sidecar" && (s.State.Terminated == nil || s.State.Terminated.ExitCode != 0) {
			t.Errorf("the token sidecar did not stop cleanly with the pod: %+v", s.State)
		}
	}
	// secctx's containers have an empty directory at the API token's path,
	// so the ServiceAccount plugin, run again after secctx, gave them no
	// token (and so did not change the pod, which would call secctx again).
	for _, c := range got.Spec.InitContainers {
		if !strings.HasPrefix(c.Name, "secctx-") {
			continue
		}
		for _, m := range c.VolumeMounts {
			if m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount" && m.Name != "secctx-no-api-token" {
				t.Errorf("%s mounts %s at the API token's path", c.Name, m.Name)
			}
		}
	}
	if strings.Contains(logs["secctx-sidecar"], oidcSecret) || strings.Contains(logs["secctx-sidecar"], "eyJ") {
		t.Errorf("the sidecar's log holds the client secret or a token:\n%s", logs["secctx-sidecar"])
	}
	for _, c := range got.Spec.Containers {
		for _, e := range c.Env {
			if strings.Contains(e.Value, oidcSecret) {
				t.Errorf("container %s env %s holds the client secret", c.Name, e.Name)
			}
		}
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(m.Name, "secctx-client-") {
				t.Errorf("container %s mounts the client secret volume %s", c.Name, m.Name)
			}
		}
	}
}

// TestTokensWrongSecret: with a wrong client secret the task does not
// start; the sidecar, stopped when its postStart hook gives up, says why
// in its last state (kubectl describe), and logs it.
func TestTokensWrongSecret(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	oidcProvider(t, ctx)
	ns := namespace(t, ctx, map[string]map[string]string{"oauth-secrets": {"my-app-client-secret": "wrong"}})
	task := taskContainer("task")
	task.Command = []string{"/task", "env", "EXTERNAL_API_ACCESS_TOKEN"}
	pod := taskPod(ns, "wrong-secret", example4(false), true, task)
	if _, err := kube.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The sidecar's postStart hook gives up after 30 s; the kubelet stops
	// the sidecar, which leaves what is wrong as its termination message,
	// and starts it again.
	var msg string
	err := framework.Poll(ctx, 2*time.Minute, func() (bool, error) {
		p, err := kube.Client.CoreV1().Pods(ns).Get(ctx, "wrong-secret", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, s := range p.Status.InitContainerStatuses {
			if t := s.LastTerminationState.Terminated; s.Name == "secctx-sidecar" && t != nil && strings.Contains(t.Message, "invalid_client") {
				msg = t.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the sidecar's last state does not say invalid_client: %v", err)
	}
	if !strings.Contains(msg, "check the client id and the client secret") {
		t.Errorf("termination message: %s", msg)
	}
	evs, err := kube.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=wrong-secret"})
	if err != nil || !slices.ContainsFunc(evs.Items, func(e corev1.Event) bool { return e.Reason == "FailedPostStartHook" }) {
		t.Errorf("no FailedPostStartHook event: %v", err)
	}
	p, err := kube.Client.CoreV1().Pods(ns).Get(ctx, "wrong-secret", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Waiting == nil {
			t.Errorf("container %s started without its token: %+v", s.Name, s.State)
		}
	}
	logs, err := kube.Client.CoreV1().Pods(ns).GetLogs("wrong-secret", &corev1.PodLogOptions{Container: "secctx-sidecar"}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "invalid_client") {
		t.Errorf("sidecar log:\n%s", logs)
	}
}

// sidecarRSS polls the kubelet's stats summary for the token sidecar of
// pod until stop, and returns the largest RSS it saw.
func sidecarRSS(ctx context.Context, ns, pod string, stop <-chan struct{}) uint64 {
	var max uint64
	for {
		select {
		case <-stop:
			return max
		case <-time.After(2 * time.Second):
		}
		p, err := kube.Client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil || p.Spec.NodeName == "" {
			continue
		}
		b, err := kube.Client.CoreV1().RESTClient().Get().AbsPath("/api/v1/nodes", p.Spec.NodeName, "proxy", "stats", "summary").DoRaw(ctx)
		if err != nil {
			continue
		}
		var summary struct {
			Pods []struct {
				PodRef     struct{ Name, Namespace string }
				Containers []struct {
					Name   string
					Memory struct {
						RSSBytes *uint64 `json:"rssBytes"`
					}
				}
			}
		}
		if json.Unmarshal(b, &summary) != nil {
			continue
		}
		for _, sp := range summary.Pods {
			if sp.PodRef.Name != pod || sp.PodRef.Namespace != ns {
				continue
			}
			for _, c := range sp.Containers {
				if c.Name == "secctx-sidecar" && c.Memory.RSSBytes != nil && *c.Memory.RSSBytes > max {
					max = *c.Memory.RSSBytes
				}
			}
		}
	}
}
