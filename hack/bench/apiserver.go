package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"

	"github.com/secctx/secctx/test/framework"
)

func runtimeRaw(b []byte) runtime.RawExtension { return runtime.RawExtension{Raw: b} }

// apiResult is one way of creating the pods, the median of the rounds.
type apiResult struct {
	Name       string
	Throughput float64 // pods/s
	P50, P99   time.Duration
	Rounds     []float64
}

const mwcName = "secctx-bench"

// apiServer creates the pods through kube-apiserver with and without secctx
// registered, alternating, and reports each way's median round.
func (e *env) apiServer(ctx context.Context) ([]apiResult, int64, error) {
	// secctx runs unpinned here, as it would in a cluster; the API server,
	// etcd, secctx and the clients share both cores.
	p, _, err := e.startSecctx(false)
	if err != nil {
		return nil, 0, err
	}
	defer p.stop()
	ca, err := os.ReadFile(e.caFile)
	if err != nil {
		return nil, 0, err
	}
	pod, err := taskPod(framework.Root())
	if err != nil {
		return nil, 0, err
	}
	pod.Namespace, pod.Name, pod.GenerateName = "", "", "task-"
	// Never scheduled: there is no scheduler in control-plane mode.
	cfg := rest.CopyConfig(e.kube.REST)
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	clients := make([]kubernetes.Interface, 8)
	for i := range clients {
		c := rest.CopyConfig(cfg)
		c.UserAgent = fmt.Sprintf("bench-client-%d", i)
		if clients[i], err = kubernetes.NewForConfig(c); err != nil {
			return nil, 0, err
		}
	}
	// The no-op controller-runtime webhook, registered the same way, shows
	// what the API server pays to call any webhook at all.
	noop, err := startProc(false, e.servers, "serve-noop", noopPort, e.certDir)
	if err != nil {
		return nil, 0, err
	}
	defer noop.stop()
	if err := waitPort(noopPort); err != nil {
		return nil, 0, err
	}
	// The patch floor answers with secctx's own answer, recorded once from
	// secctx: the API server's work without the webhook's.
	floor, err := startProc(false, e.servers, "serve-floor", floorPort, e.certDir, "https://127.0.0.1:"+secctxPort+"/mutate-v1-pod", e.caFile)
	if err != nil {
		return nil, 0, err
	}
	defer floor.stop()
	if err := waitPort(floorPort); err != nil {
		return nil, 0, err
	}
	mwcFor := func(name, port string) *admissionregistrationv1.MutatingWebhookConfiguration {
		return &admissionregistrationv1.MutatingWebhookConfiguration{
			ObjectMeta: metav1.ObjectMeta{Name: mwcName},
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name:                    name,
				AdmissionReviewVersions: []string{"v1"},
				ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://127.0.0.1:" + port + "/mutate-v1-pod"), CABundle: ca},
				Rules: []admissionregistrationv1.RuleWithOperations{{
					Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
					Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
				}},
				ObjectSelector:     &metav1.LabelSelector{MatchLabels: map[string]string{"secctx.dev/inject": "true"}},
				FailurePolicy:      ptr.To(admissionregistrationv1.Fail),
				SideEffects:        ptr.To(admissionregistrationv1.SideEffectClassNone),
				TimeoutSeconds:     ptr.To[int32](5),
				ReinvocationPolicy: ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
				MatchPolicy:        ptr.To(admissionregistrationv1.Equivalent),
			}},
		}
	}
	admission := e.kube.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	injected := func(ns string) (bool, error) {
		got, err := e.kube.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, err
		}
		_, ok := got.Annotations["secctx.dev/status"]
		return ok, nil
	}
	// calls is how often the API server has called webhook name.
	calls := func(name string) float64 {
		b, err := e.kube.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			return 0
		}
		var total float64
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_count{") && strings.Contains(line, `name="`+name+`"`) {
				if v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
					total += v
				}
			}
		}
		return total
	}
	variants := []struct{ name, webhook, port string }{
		{"no webhook", "", ""},
		{"no-op controller-runtime webhook", "noop.bench.secctx.dev", noopPort},
		{"patch floor (secctx's patch, no webhook work)", "floor.bench.secctx.dev", floorPort},
		{"secctx registered", "pods.secctx.dev", secctxPort},
	}
	per := map[string][]apiResult{}
	for round := 1; round <= e.o.rounds+1; round++ {
		for i, v := range variants {
			ns := fmt.Sprintf("bench-%d-%d", i, round)
			if err := e.kube.CreateNamespace(ctx, ns, nil); err != nil {
				return nil, 0, err
			}
			// Register the variant's webhook (or none), then wait until
			// the API server calls it (or injects nothing).
			if err := admission.Delete(ctx, mwcName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return nil, 0, err
			}
			wantInjected := v.port == secctxPort || v.port == floorPort
			if v.webhook != "" {
				if _, err := admission.Create(ctx, mwcFor(v.webhook, v.port), metav1.CreateOptions{}); err != nil {
					return nil, 0, err
				}
			}
			before := calls(v.webhook)
			if err := framework.Poll(ctx, 30*time.Second, func() (bool, error) {
				ok, err := injected(ns)
				if err != nil || ok != wantInjected {
					return false, err
				}
				return v.webhook == "" || calls(v.webhook) > before, nil
			}); err != nil {
				return nil, 0, fmt.Errorf("%s not in effect: %w", v.name, err)
			}
			if e.o.profile != "" && wantInjected && round == 2 {
				name := "apiserver-with-secctx.pprof"
				if v.port == floorPort {
					name = "apiserver-with-floor.pprof"
				}
				go func() {
					b, err := e.kube.Client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").Param("seconds", "3").DoRaw(ctx)
					if err == nil {
						_ = os.MkdirAll(e.o.profile, 0o755)
						err = os.WriteFile(filepath.Join(e.o.profile, name), b, 0o644)
					}
					if err != nil {
						log("apiserver profile: " + err.Error())
					}
				}()
			}
			r, err := createPods(ctx, clients, ns, pod, e.o.pods, wantInjected)
			if err != nil {
				return nil, 0, err
			}
			r.Name = v.name
			log(fmt.Sprintf("  round %d %-34s %4d pods: %6.0f pods/s, p50 %s, p99 %s", round, v.name, e.o.pods, r.Throughput, r.P50, r.P99))
			if round > 1 { // the first round warms etcd and the API server up
				per[v.name] = append(per[v.name], r)
			}
		}
	}
	var out []apiResult
	for _, v := range variants {
		n := v.name
		rs := per[n]
		slices.SortFunc(rs, func(a, b apiResult) int {
			switch {
			case a.Throughput < b.Throughput:
				return -1
			case a.Throughput > b.Throughput:
				return 1
			}
			return 0
		})
		m := rs[(len(rs)-1)/2]
		for _, r := range rs {
			m.Rounds = append(m.Rounds, r.Throughput)
		}
		out = append(out, m)
	}
	rss, err := peakRSS(serverPID(p))
	return out, rss, err
}

// createPods creates n copies of pod from the clients, concurrently, and
// checks each came back injected (or not).
func createPods(ctx context.Context, clients []kubernetes.Interface, ns string, pod *corev1.Pod, n int, wantInjected bool) (apiResult, error) {
	work := make(chan int, n)
	for i := range n {
		work <- i
	}
	close(work)
	lat := make([]time.Duration, n)
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	t0 := time.Now()
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				s := time.Now()
				got, err := c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
				lat[i] = time.Since(s)
				if err == nil {
					if _, ok := got.Annotations["secctx.dev/status"]; ok != wantInjected {
						err = fmt.Errorf("pod %s injected=%v, want %v", got.Name, ok, wantInjected)
					}
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if firstErr != nil {
		return apiResult{}, firstErr
	}
	slices.Sort(lat)
	return apiResult{
		Throughput: float64(n) / elapsed.Seconds(),
		P50:        lat[n/2],
		P99:        lat[n*99/100],
	}, nil
}
