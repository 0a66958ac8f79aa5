package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/client-go/rest"

	"github.com/secctx/secctx/pkg/securityctx"
)

const saJSON = `{"kind":"ServiceAccount","apiVersion":"v1",` +
	`"metadata":{"name":"data-processing-sa","namespace":"flytesnacks-development","resourceVersion":"7"}}`

// fakeAPIServer answers the few calls secctx makes: discovery, a list and
// watch of service accounts, and a get of one. It knows one account,
// flytesnacks-development/data-processing-sa. (The real-cluster suites in
// test/ run secctx against a real kube-apiserver; this one checks the
// program's wiring in a second.)
func fakeAPIServer(t *testing.T) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	var unknown []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch p := r.URL.Path; {
		case p == "/api":
			fmt.Fprint(w, `{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1"}]}`)
		case p == "/apis":
			fmt.Fprint(w, `{"kind":"APIGroupList","apiVersion":"v1","groups":[]}`)
		case p == "/api/v1":
			fmt.Fprint(w, `{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"serviceaccounts","singularName":"serviceaccount","namespaced":true,"kind":"ServiceAccount","verbs":["get","list","watch"]}]}`)
		case p == "/api/v1/serviceaccounts" && r.URL.Query().Get("watch") == "true":
			// client-go lists by watching: the initial events, then a
			// bookmark that marks their end.
			w.WriteHeader(http.StatusOK)
			if r.URL.Query().Get("sendInitialEvents") == "true" {
				fmt.Fprintln(w, `{"type":"ADDED","object":`+saJSON+`}`)
				fmt.Fprintln(w, `{"type":"BOOKMARK","object":{"kind":"ServiceAccount","apiVersion":"v1",`+
					`"metadata":{"resourceVersion":"7","annotations":{"k8s.io/initial-events-end":"true"}}}}`)
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case p == "/api/v1/serviceaccounts":
			fmt.Fprint(w, `{"kind":"ServiceAccountList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[`+saJSON+`]}`)
		case strings.HasPrefix(p, "/api/v1/namespaces/") && strings.Contains(p, "/serviceaccounts/"):
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"serviceaccounts not found"}`)
		default:
			mu.Lock()
			unknown = append(unknown, r.Method+" "+r.URL.String())
			mu.Unlock()
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
		}
	}))
	t.Cleanup(func() {
		srv.Close()
		mu.Lock()
		defer mu.Unlock()
		if len(unknown) > 0 {
			t.Logf("the fake API server was asked for: %v", unknown)
		}
	})
	return srv
}

// TestRun serves the whole program as `secctx serve` does: it becomes ready,
// answers pods over HTTPS with the service-account check, exposes health and
// metrics, logs denials as JSON, and stops cleanly when its context ends.
func TestRun(t *testing.T) {
	api := fakeAPIServer(t)
	dir := t.TempDir()
	ca := writeServingCert(t, dir, 1)
	cfg := DefaultConfig()
	cfg.CertDir = dir
	cfg.Port = freePort(t)
	cfg.MetricsBindAddress = "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg.MetricsSecure = false // the secure endpoint needs TokenReviews: test/chart checks it in a cluster
	cfg.HealthProbeBindAddress = "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg.Inject.Agent.NativeSidecars = "true" // the fake API server has no /version: the cluster suites ask a real one
	var logs syncBuffer
	log, err := NewLogger("info", &logs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, &rest.Config{Host: api.URL}, log) }()

	get := func(url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	probes := "http://" + cfg.HealthProbeBindAddress
	waitFor(t, 20*time.Second, "/readyz", func() bool { c, _ := get(probes + "/readyz"); return c == http.StatusOK })
	if c, body := get(probes + "/healthz"); c != http.StatusOK {
		t.Errorf("/healthz: %d %s", c, body)
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	admit := func(sa string) *admissionv1.AdmissionResponse {
		pod := fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{%q:"true"},"annotations":{%q:%q}},"spec":{"containers":[{"name":"c","image":"i"}]}}`,
			securityctx.LabelInject, securityctx.AnnotationSecurityContext, `{"runAs":{"k8sServiceAccount":"`+sa+`"},"secrets":[{"group":"g","key":"k"}]}`)
		resp, err := client.Post("https://"+net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))+MutatePath, "application/json",
			bytes.NewReader(reviewBytes(t, pod, admissionv1.Create)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ar admissionv1.AdmissionReview
		if err := json.NewDecoder(resp.Body).Decode(&ar); err != nil {
			t.Fatal(err)
		}
		return ar.Response
	}
	if r := admit("data-processing-sa"); !r.Allowed || !strings.Contains(string(r.Patch), `"/spec/serviceAccountName","value":"data-processing-sa"`) {
		t.Errorf("existing account: %+v", r)
	}
	if r := admit("missing-sa"); r.Allowed || r.Result.Code != http.StatusForbidden ||
		!strings.Contains(r.Result.Message, "service account flytesnacks-development/missing-sa not found") {
		t.Errorf("missing account: %+v", r.Result)
	}

	_, metrics := get("http://" + cfg.MetricsBindAddress + "/metrics")
	for _, want := range []string{
		`secctx_admission_decisions_total{decision="mutated",reason="injected"} 1`,
		`secctx_admission_decisions_total{decision="denied",reason="invalid"} 1`,
		`secctx_injected_secrets_total{backend="kubernetes",mount="ANY"} 1`,
		`secctx_admission_duration_seconds_count 2`,
		`controller_runtime_webhook_requests_total{code="200",webhook="/mutate-v1-pod"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	var denial map[string]any
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"pod denied"`) {
			if err := json.Unmarshal([]byte(line), &denial); err != nil {
				t.Errorf("log line is not JSON: %s", line)
			}
		}
	}
	if denial["namespace"] != "flytesnacks-development" || !strings.Contains(fmt.Sprint(denial["reason"]), "missing-sa") {
		t.Errorf("denial log line: %v\nall logs:\n%s", denial, logs.String())
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)), time.Second); err == nil {
		conn.Close()
		t.Error("webhook port still open after shutdown")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}
