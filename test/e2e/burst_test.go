package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/test/framework"
)

// TestBurst: a map task's burst. SECCTX_BURST_PODS pods (100) are created
// at once, each reading two AWS secrets through secctx's fetch, while the
// store answers every call 429 ThrottlingException for 20 seconds from
// the first call (not from the creation: on a cold machine the first
// fetch runs minutes after it). Every pod starts and succeeds; once the throttling ends the
// store serves exactly what the pods need, one AssumeRoleWithWebIdentity
// and one GetSecretValue per secret per pod, however often each pod was
// throttled before.
func TestBurst(t *testing.T) {
	needCluster(t)
	n := 100
	if s := os.Getenv("SECCTX_BURST_PODS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("SECCTX_BURST_PODS %q: %v", s, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	t.Cleanup(cancel)
	kumo := startStore(t, ctx, framework.StartKumo)
	gate := &storeGate{}
	gateAddr := gate.serve(t, kumo)
	sm := kumoAdmin(kumo)
	var arns []string
	for _, name := range []string{"burst-db", "burst-api"} {
		out, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(name), SecretString: aws.String(name + "-value")})
		if err != nil {
			t.Fatal(err)
		}
		arns = append(arns, *out.ARN)
	}
	group, _, _ := strings.Cut(arns[0], ":secret:")
	group += ":secret"
	configure(t, ctx, framework.WithBackend("aws", "aws:\n  secretsManagerEndpoint: http://"+gateAddr+"\n  stsEndpoint: http://"+gateAddr+"\n", gateAddr),
		`{"secrets": [{"group": "arn:aws:secretsmanager:us-east-1:000000000000:secret", "key": "probe", "mountRequirement": "FILE"}]}`)
	ns := namespace(t, ctx, nil)
	var keys, refs []string
	for _, arn := range arns {
		_, key, _ := strings.Cut(arn, ":secret:")
		keys = append(keys, fmt.Sprintf(`{"group": %q, "key": %q, "mountRequirement": "FILE"}`, group, key))
		refs = append(refs, group+"/"+key)
	}
	sc := `{"runAs": {"iamRole": "arn:aws:iam::123456789012:role/burst"}, "secrets": [` + strings.Join(keys, ", ") + `]}`

	gate.throttle(20 * time.Second)
	created := map[string]time.Time{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			task := taskContainer("main")
			task.Command = append([]string{"/task", "-full", "flytekit"}, refs...)
			p := taskPod(ns, fmt.Sprintf("burst-%03d", i), sc, true, task)
			if _, err := kube.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
				t.Errorf("create %s: %v", p.Name, err)
				return
			}
			mu.Lock()
			created[p.Name] = time.Now()
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Logf("%d pods created", len(created))
	done := map[string]time.Duration{}
	var failed []string
	err := framework.Poll(ctx, 12*time.Minute, func() (bool, error) {
		pods, err := kube.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if _, ok := done[p.Name]; ok {
				continue
			}
			switch p.Status.Phase {
			case corev1.PodSucceeded:
				done[p.Name] = time.Since(created[p.Name])
			case corev1.PodFailed:
				done[p.Name] = -1
				failed = append(failed, p.Name+": "+podFailure(&p))
			}
		}
		return len(done) == len(created), nil
	})
	if err != nil {
		t.Fatalf("%d of %d pods finished: %v", len(done), len(created), err)
	}
	if len(failed) > 0 {
		t.Errorf("%d pods failed:\n%s", len(failed), strings.Join(failed, "\n"))
	}
	var times []time.Duration
	for _, d := range done {
		if d > 0 {
			times = append(times, d)
		}
	}
	slices.Sort(times)
	calls, throttled := gate.count(), gate.throttledCount()
	served := func(action string) int { return calls[action] - throttled[action] }
	t.Logf("create → Succeeded: p50 %.1fs, p95 %.1fs, last %.1fs; calls %v; answered 429: %v",
		nearestRank(times, 50).Seconds(), nearestRank(times, 95).Seconds(), times[len(times)-1].Seconds(), calls, throttled)
	if throttled["secretsmanager.GetSecretValue"]+throttled["AssumeRoleWithWebIdentity"] == 0 {
		t.Error("no call was throttled: the burst did not meet the 429s")
	}
	if got, want := served("AssumeRoleWithWebIdentity"), len(created); got != want {
		t.Errorf("AssumeRoleWithWebIdentity served %d times for %d pods, want one per pod", got, want)
	}
	if got, want := served("secretsmanager.GetSecretValue"), 2*len(created); got != want {
		t.Errorf("GetSecretValue served %d times for %d pods of 2 secrets, want %d", got, len(created), want)
	}
}

// podFailure says why a pod failed: its containers' termination messages.
func podFailure(p *corev1.Pod) string {
	var why []string
	for _, s := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		if s.State.Terminated != nil && s.State.Terminated.ExitCode != 0 {
			why = append(why, s.Name+": "+s.State.Terminated.Message)
		}
	}
	return strings.Join(why, "; ")
}

// nearestRank is the nearest-rank percentile of sorted.
func nearestRank(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted)+99)/100 - 1
	return sorted[max(i, 0)]
}

// throttle makes the gate answer every call 429 ThrottlingException for d
// from the next call on.
func (g *storeGate) throttle(d time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.throttleFor, g.until = d, time.Time{}
}

// throttled answers req 429 when the gate throttles, and counts it.
func (g *storeGate) throttled(w http.ResponseWriter, action string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.throttleFor > 0 {
		g.until, g.throttleFor = time.Now().Add(g.throttleFor), 0
	}
	if time.Now().After(g.until) {
		return false
	}
	if g.refused == nil {
		g.refused = map[string]int{}
	}
	g.refused[action]++
	if strings.HasPrefix(action, "secretsmanager.") {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"__type":"ThrottlingException","message":"Rate exceeded (test)"}`)
		return true
	}
	// STS is a query API: its errors are XML.
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusTooManyRequests)
	fmt.Fprint(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded (test)</Message></Error><RequestId>test</RequestId></ErrorResponse>`)
	return true
}

func (g *storeGate) throttledCount() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]int{}
	for k, v := range g.refused {
		out[k] = v
	}
	return out
}
