package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
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
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/secctx/secctx/test/framework"
)

// Pod start-up latency (TestStartup): what secctx's init containers add to
// the time a task waits for its process, against a pod secctx leaves alone.
// The numbers go in the docs; nothing here asserts on a time, since a
// shared 2-core machine makes any bound either loose or flaky.
const (
	// startupConcurrency pods of a case run at once: per-pod latency on
	// the 2-core node, not a burst that measures the node's queue.
	startupConcurrency = 2
	// startupPodTimeout is how long one pod may take to finish; well above
	// any start-up here, so that a slow run still reports instead of failing.
	startupPodTimeout = 2 * time.Minute
	// startupLabel holds a pod's round.
	startupLabel = "e2e.secctx.dev/startup-round"
)

// startupCase is one pod spec whose start-up is measured. The pod's app
// container is named "task" and does almost nothing (prints what it was
// given and exits), so that the pod's time is its start-up.
type startupCase struct {
	name string
	pod  func(ns, name string) *corev1.Pod
}

// TestStartup measures pod start-up latency for each case: SECCTX_STARTUP_PODS
// pods (5 in make test; make startup runs 20) after one warm-up pod that is not counted (the first
// fetch from kumo, the first token from the provider, the first pod of a
// SecurityContext in secctx's cache). The cases are interleaved: each round
// runs one pod of every case, startupConcurrency at a time, and deletes them
// before the next round, so that the node holds no finished pods. The 2
// cores are shared with the cluster's own components and with whatever else
// runs on the machine (a build, another suite); interleaved, a busy minute
// falls on every case alike instead of on the one that ran then, and the
// cases stay comparable within a run.
//
// Every time is seen through a watch (an informer on the namespace) and
// taken when the event arrives, from the Create call's return: the API's
// container timestamps have a resolution of 1 s, too coarse for steps of a
// few hundred milliseconds. What the containers log is timestamped by the
// container runtime to the nanosecond, and gives when the fetch wrote its
// files, when the sidecar wrote the token and when the task ran. It prints
// a table (and writes it as markdown to SECCTX_STARTUP_REPORT when set) and
// fails only if a pod does not reach Succeeded.
func TestStartup(t *testing.T) {
	needCluster(t)
	n := 5 // make startup: 20
	if s := os.Getenv("SECCTX_STARTUP_PODS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("SECCTX_STARTUP_PODS=%q: want a positive number", s)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	t.Cleanup(cancel)

	// One installation serves every case: Secrets Manager ARNs go to aws
	// (kumo), every other group stays a Kubernetes Secret. backend: aws
	// (framework.WithBackend) would send the token's client secret to aws
	// too, which secctx refuses (docs/backends.md, Client secrets).
	kumo := startStore(t, ctx, framework.StartKumo)
	sm := kumoAdmin(kumo)
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("db-password"), SecretString: aws.String("aws-s3cr3t")})
	if err != nil {
		t.Fatal(err)
	}
	group, key, _ := strings.Cut(*created.ARN, ":secret:")
	group += ":secret"
	configure(t, ctx, framework.WithStores(settings(t, map[string]any{
		"backends": []any{map[string]any{"store": "aws"}},
		"aws":      map[string]any{"secretsManagerEndpoint": kumo.URL, "stsEndpoint": kumo.URL},
	}), kumo.Addr), `{"secrets": [{"group": "arn:aws:secretsmanager:us-east-1:000000000000:secret", "key": "probe", "mountRequirement": "FILE"}]}`)
	oidcProvider(t, ctx)
	ns := namespace(t, ctx, map[string]map[string]string{
		"db-creds":      {"password": "p4ssw0rd-e2e"},
		"certs":         {"tls.key": "key-material-e2e"},
		"oauth-secrets": {"my-app-client-secret": oidcSecret},
	})
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "task-sa"}})

	awsSC := fmt.Sprintf(`{"runAs": {"iamRole": "arn:aws:iam::123456789012:role/e2e", "k8sServiceAccount": "task-sa"},
	  "secrets": [{"group": %q, "key": %q, "mountRequirement": "FILE", "envVar": "DB_PASSWORD_PATH"},
	              {"group": %q, "key": %q, "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`, group, key, group, key)
	tokenAWSSC := mergeSecurityContexts(t, awsSC, example4(false))
	// A container that gets an ENV_VAR secret from a fetched store or a
	// token through the exec wrapper needs an explicit command.
	task := func(command ...string) corev1.Container {
		c := taskContainer("task")
		c.Command = append([]string{"/task"}, command...)
		return c
	}
	cases := []startupCase{
		{"none", func(ns, name string) *corev1.Pod {
			return taskPod(ns, name, "", false, taskContainer("task", "env", "HOSTNAME"))
		}},
		{"kubernetes", func(ns, name string) *corev1.Pod {
			sc := `{"secrets": [
			  {"group": "db-creds", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"},
			  {"group": "certs", "key": "tls.key", "mountRequirement": "FILE", "envVar": "TLS_KEY_PATH"}]}`
			return taskPod(ns, name, sc, true, taskContainer("task", "env", "DB_PASSWORD", "TLS_KEY_PATH"))
		}},
		{"aws", func(ns, name string) *corev1.Pod {
			return taskPod(ns, name, awsSC, true, task("env", "DB_PASSWORD", "DB_PASSWORD_PATH"))
		}},
		{"token", func(ns, name string) *corev1.Pod {
			return taskPod(ns, name, example4(false), true, task("env", "EXTERNAL_API_ACCESS_TOKEN"))
		}},
		{"token+aws", func(ns, name string) *corev1.Pod {
			return taskPod(ns, name, tokenAWSSC, true,
				task("env", "EXTERNAL_API_ACCESS_TOKEN", "DB_PASSWORD", "DB_PASSWORD_PATH"))
		}},
	}

	rec := watchStartups(t, ns)
	var results []startupResult
	loads := []float64{loadAverage()}
	run := func(cases []startupCase, first int) {
		rs := make([]startupResult, len(cases))
		for i, c := range cases {
			rs[i].name = c.name
		}
		for round := range n + 1 {
			got := runStartupRound(t, ctx, rec, ns, cases, first+round)
			loads = append(loads, loadAverage())
			for i, p := range got {
				switch {
				case p == nil:
				case round == 0:
					t.Logf("warm-up (not counted): %s", p.summary())
				default:
					t.Log(p.summary())
					rs[i].pods = append(rs[i].pods, p)
				}
			}
		}
		results = append(results, rs...)
	}
	run(cases, 0)
	// Refresh is the installation's (inject.refresh): its cases run after
	// the others, with it on. The secrets are those of aws and token+aws;
	// their FILE secret is then kept fresh by the sidecar.
	restore := reconfigured(t, func() (func(context.Context) error, error) {
		return deployed.Reconfigure(ctx, kube, framework.WithRefresh(300),
			func(ctx context.Context) error { return waitSidecar(ctx, ns, awsSC) },
			func(ctx context.Context) error { return deployed.WaitReady(ctx, kube, 2) })
	})
	run([]startupCase{
		{"aws+refresh", cases[2].pod},
		{"token+aws+refresh", cases[4].pod},
	}, n+1)
	// inject.agent.fetchIn: sidecar, refresh off again: the same secrets,
	// fetched by the sidecar, with no init container to wait for.
	if err := restore(ctx); err != nil {
		t.Fatal(err)
	}
	reconfigured(t, func() (func(context.Context) error, error) {
		return deployed.Reconfigure(ctx, kube, framework.WithFetchIn("sidecar"),
			func(ctx context.Context) error { return waitSidecar(ctx, ns, awsSC) },
			func(ctx context.Context) error { return deployed.WaitReady(ctx, kube, 2) })
	})
	run([]startupCase{
		{"aws+fetch-in-sidecar", cases[2].pod},
		{"token+aws+fetch-in-sidecar", cases[4].pod},
	}, 2*(n+1))
	report := startupReport(results, n, loads)
	t.Logf("pod start-up latency:\n%s", report)
	if path := os.Getenv("SECCTX_STARTUP_REPORT"); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			t.Error(err)
		}
	}
}

// waitSidecar waits until secctx, restarted, gives a pod asking for sc a
// sidecar (inject.refresh on), 10 answers in a row.
func waitSidecar(ctx context.Context, ns, sc string) error {
	if err := deployed.WaitReady(ctx, kube, 2); err != nil {
		return err
	}
	pod := taskPod(ns, "probe", sc, true, taskContainer("task"))
	pod.Spec.Containers[0].Command = []string{"/task"}
	inARow := 0
	return framework.Poll(ctx, 2*time.Minute, func() (bool, error) {
		got, err := kube.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return false, nil
		}
		if slices.ContainsFunc(got.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == "secctx-sidecar" }) {
			inARow++
		} else {
			inARow = 0
		}
		return inARow >= 10, nil
	})
}

// mergeSecurityContexts is one SecurityContext with the top-level fields of
// each (runAs and secrets from one, tokens from another).
func mergeSecurityContexts(t *testing.T, scs ...string) string {
	t.Helper()
	merged := map[string]json.RawMessage{}
	for _, sc := range scs {
		if err := json.Unmarshal([]byte(sc), &merged); err != nil {
			t.Fatalf("SecurityContext %s: %v", sc, err)
		}
	}
	b, err := json.Marshal(merged)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// podStartup is what was seen of one pod, and when; zero times were not
// seen. The watch fields are set by the recorder, under its lock, until
// finished is closed.
type podStartup struct {
	name string
	// createCall is how long the Create call took (admission, secctx
	// included); created is when it returned, the origin of every other time.
	createCall time.Duration
	created    time.Time
	// scheduled and initialized: the conditions first seen True; running:
	// the phase Running or an app container first seen running or
	// terminated (a task may end before the kubelet reports it running);
	// done: Succeeded or Failed first seen.
	scheduled, initialized, running, done time.Time
	phase                                 corev1.PodPhase
	inits                                 map[string]*initSeen
	final                                 *corev1.Pod
	finished                              chan struct{}

	// From the containers' logs, with the runtime's timestamps: the fetch
	// wrote its last file (fetchSeconds after it started), the sidecar
	// started, wrote the token and was told to stop, the task printed.
	fetchWritten                                          time.Time
	fetchSeconds                                          float64
	sidecarUp, tokenWritten, sidecarStopping, taskPrinted time.Time
	initNames                                             []string
}

// initSeen is one init container as the watch saw it: first running,
// first started (a sidecar: its startup probe passed) and first terminated;
// and the API's own timestamps, to the second.
type initSeen struct {
	running, started, terminated time.Time
	apiStarted, apiFinished      time.Time
}

// done is when an init container's part of the start-up ended: a sidecar
// is done when it has started (its startup probe passed), any other when it
// has terminated.
func (s *initSeen) done(sidecar bool) time.Time {
	if sidecar {
		return s.started
	}
	return s.terminated
}

// startupRecorder keeps, for the pods it tracks, what the watch saw.
type startupRecorder struct {
	mu   sync.Mutex
	pods map[string]*podStartup
}

// watchStartups starts an informer on ns that feeds a recorder, until the
// test ends.
func watchStartups(t *testing.T, ns string) *startupRecorder {
	t.Helper()
	rec := &startupRecorder{pods: map[string]*podStartup{}}
	factory := informers.NewSharedInformerFactoryWithOptions(kube.Client, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().Pods().Informer()
	observe := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			rec.observe(p, time.Now())
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	factory.Start(stop)
	t.Cleanup(func() {
		close(stop)
		factory.Shutdown()
	})
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		t.Fatal("the pod watch did not sync")
	}
	return rec
}

// track starts recording pod name; call it before the pod is created.
func (r *startupRecorder) track(name string) *podStartup {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &podStartup{name: name, inits: map[string]*initSeen{}, finished: make(chan struct{})}
	r.pods[name] = s
	return s
}

// observe records what is seen for the first time in p, a tracked pod as
// the watch delivered it at now, until the pod has finished.
func (r *startupRecorder) observe(p *corev1.Pod, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.pods[p.Name]
	if s == nil || !s.done.IsZero() {
		return
	}
	first := func(at *time.Time) {
		if at.IsZero() {
			*at = now
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case corev1.PodScheduled:
			first(&s.scheduled)
		case corev1.PodInitialized:
			first(&s.initialized)
		}
	}
	if p.Status.Phase == corev1.PodRunning || slices.ContainsFunc(p.Status.ContainerStatuses, func(c corev1.ContainerStatus) bool {
		return c.State.Running != nil || c.State.Terminated != nil
	}) {
		first(&s.running)
	}
	for _, c := range p.Status.InitContainerStatuses {
		seen := s.inits[c.Name]
		if seen == nil {
			seen = &initSeen{}
			s.inits[c.Name] = seen
		}
		if st := c.State.Running; st != nil {
			first(&seen.running)
			seen.apiStarted = st.StartedAt.Time
		}
		if c.Started != nil && *c.Started {
			first(&seen.started)
		}
		if st := c.State.Terminated; st != nil {
			first(&seen.terminated)
			seen.apiStarted, seen.apiFinished = st.StartedAt.Time, st.FinishedAt.Time
		}
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		s.done, s.phase, s.final = now, p.Status.Phase, p
		close(s.finished)
	}
}

// startupResult is one case's pods that succeeded.
type startupResult struct {
	name string
	pods []*podStartup
}

// loadAverage is the machine's 1-minute load average: the cluster shares
// the 2 cores with whatever else runs there, which shows in the tail.
func loadAverage() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return math.NaN()
	}
	l, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return math.NaN()
	}
	return l
}

// runStartupRound runs one pod of every case, startupConcurrency at a time
// in an order drawn for the round (so that no case always runs beside the
// same one), and deletes them once they have finished: the next round
// starts on a node without them. It returns each case's pod, nil for one
// that did not succeed.
func runStartupRound(t *testing.T, ctx context.Context, rec *startupRecorder, ns string, cases []startupCase, round int) []*podStartup {
	got := make([]*podStartup, len(cases))
	next := make(chan int)
	var wg sync.WaitGroup
	for range startupConcurrency {
		wg.Go(func() {
			for i := range next {
				p := cases[i].pod(ns, fmt.Sprintf("%s-%d", strings.ReplaceAll(cases[i].name, "+", "-"), round))
				p.Labels[startupLabel] = strconv.Itoa(round)
				got[i] = runStartupPod(t, ctx, rec, p)
			}
		})
	}
	for _, i := range rand.Perm(len(cases)) {
		next <- i
	}
	close(next)
	wg.Wait()

	sel := metav1.ListOptions{LabelSelector: startupLabel + "=" + strconv.Itoa(round)}
	pods := kube.Client.CoreV1().Pods(ns)
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		t.Fatalf("delete round %d's pods: %v", round, err)
	}
	err := framework.Poll(ctx, 2*time.Minute, func() (bool, error) {
		l, err := pods.List(ctx, sel)
		return err == nil && len(l.Items) == 0, err
	})
	if err != nil {
		t.Fatalf("round %d's pods are not gone: %v", round, err)
	}
	return got
}

// runStartupPod creates pod, waits until the watch sees it finish, and
// reads its containers' logs; nil (and the test failed) if it did not
// succeed.
//
// It first waits a random part of a second. The kubelet looks at the
// containers once a second (its PLEG relist) and moves a pod on to its next
// container only then, and a pod created as soon as the last one was seen
// to finish, which was seen at such a look, would start in step with them:
// every pod would meet the kubelet at the same point of its second, and a
// step that ends just after a look would always cost a whole second, or
// never. Started at random points, the pods sample the whole second, as
// pods in a cluster do.
func runStartupPod(t *testing.T, ctx context.Context, rec *startupRecorder, pod *corev1.Pod) *podStartup {
	select {
	case <-time.After(rand.N(time.Second)):
	case <-ctx.Done():
		t.Errorf("pod %s: %v", pod.Name, ctx.Err())
		return nil
	}
	s := rec.track(pod.Name)
	t0 := time.Now()
	if _, err := kube.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Errorf("create pod %s: %v", pod.Name, err)
		return nil
	}
	created := time.Now()
	rec.mu.Lock()
	s.createCall, s.created = created.Sub(t0), created
	rec.mu.Unlock()
	select {
	case <-s.finished:
	case <-time.After(startupPodTimeout):
		t.Errorf("pod %s did not finish in %s", pod.Name, startupPodTimeout)
		return nil
	case <-ctx.Done():
		t.Errorf("pod %s: %v", pod.Name, ctx.Err())
		return nil
	}
	// finished is closed: the recorder writes s no more.
	for _, c := range s.final.Spec.InitContainers {
		s.initNames = append(s.initNames, c.Name)
	}
	logs := map[string][]logLine{}
	for _, c := range append(slices.Clone(s.final.Spec.InitContainers), s.final.Spec.Containers...) {
		b, err := kube.Client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: c.Name, Timestamps: true}).DoRaw(ctx)
		if err != nil {
			t.Errorf("logs of %s container %s: %v", pod.Name, c.Name, err)
			continue
		}
		logs[c.Name] = parseLogLines(b)
	}
	if s.phase != corev1.PodSucceeded {
		t.Errorf("pod %s: phase %s, want Succeeded; statuses %+v; logs %v", pod.Name, s.phase, s.final.Status, logs)
		return nil
	}
	// The fetch's last line, in its init container or in the sidecar
	// (inject.agent.fetchIn: sidecar).
	for _, l := range slices.Concat(logs["secctx-fetch"], logs["secctx-sidecar"]) {
		var entry struct {
			Msg     string  `json:"msg"`
			Seconds float64 `json:"seconds"`
		}
		if json.Unmarshal([]byte(l.text), &entry) == nil && entry.Msg == "all secrets written" {
			s.fetchWritten, s.fetchSeconds = l.at, entry.Seconds
		}
	}
	for _, l := range logs["secctx-sidecar"] {
		var entry struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal([]byte(l.text), &entry) != nil {
			continue
		}
		switch {
		case entry.Msg == "token sidecar started" && s.sidecarUp.IsZero():
			s.sidecarUp = l.at
		case entry.Msg == "token renewed" && s.tokenWritten.IsZero():
			s.tokenWritten = l.at
		case entry.Msg == "sidecar stopping: the pod is ending":
			s.sidecarStopping = l.at
		}
	}
	if l := logs["task"]; len(l) > 0 {
		s.taskPrinted = l[0].at
	}
	return s
}

// logLine is a line of a container's log and when the runtime read it.
type logLine struct {
	at   time.Time
	text string
}

// parseLogLines reads a log fetched with timestamps (RFC 3339 with
// nanoseconds, a space, the line).
func parseLogLines(b []byte) []logLine {
	var lines []logLine
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		ts, text, ok := strings.Cut(sc.Text(), " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if ok && err == nil {
			lines = append(lines, logLine{at, text})
		}
	}
	return lines
}

// since is the time from the Create call's return to at, in ms; "-" for a
// time not seen.
func (s *podStartup) since(at time.Time) string {
	if at.IsZero() {
		return "-"
	}
	return strconv.FormatInt(at.Sub(s.created).Milliseconds(), 10)
}

// summary is one pod's times in ms after the Create call returned, and the
// API's timestamps of its init containers (to the second).
func (s *podStartup) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: create call %d ms; scheduled %s, initialized %s, running %s, %s %s",
		s.name, s.createCall.Milliseconds(), s.since(s.scheduled), s.since(s.initialized), s.since(s.running), s.phase, s.since(s.done))
	for _, name := range s.initNames {
		seen := s.inits[name]
		if seen == nil {
			continue
		}
		fmt.Fprintf(&b, "; %s running %s started %s terminated %s (API %s-%s)", name, s.since(seen.running), s.since(seen.started),
			s.since(seen.terminated), seen.apiStarted.Format("15:04:05"), seen.apiFinished.Format("15:04:05"))
	}
	if !s.fetchWritten.IsZero() {
		fmt.Fprintf(&b, "; fetch wrote %s (%.0f ms in process)", s.since(s.fetchWritten), 1000*s.fetchSeconds)
	}
	if !s.tokenWritten.IsZero() {
		fmt.Fprintf(&b, "; sidecar up %s, token written %s, stopping %s", s.since(s.sidecarUp), s.since(s.tokenWritten), s.since(s.sidecarStopping))
	}
	fmt.Fprintf(&b, "; task printed %s", s.since(s.taskPrinted))
	return b.String()
}

// between is b-a, when both were seen.
func between(a, b time.Time) (time.Duration, bool) {
	return b.Sub(a), !a.IsZero() && !b.IsZero()
}

// percentile is the nearest-rank percentile p (0-100) of ds, in ms; "-"
// without samples.
func percentile(ds []time.Duration, p float64) string {
	if len(ds) == 0 {
		return "-"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	return strconv.FormatInt(ds[max(rank, 1)-1].Milliseconds(), 10)
}

// median is the middle of xs (the upper one of an even count).
func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

// collect is f over the pods, where f has a value.
func collect(pods []*podStartup, f func(*podStartup) (time.Duration, bool)) []time.Duration {
	var ds []time.Duration
	for _, p := range pods {
		if d, ok := f(p); ok {
			ds = append(ds, d)
		}
	}
	return ds
}

// startupReport is the markdown tables of the results.
func startupReport(results []startupResult, n int, loads []float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Pod start-up latency (TestStartup), %s: %d pods per case after 1 warm-up pod, in rounds of one pod of each case, %d at a time. "+
		"The cases marked +refresh run after the others, in rounds of their own, with inject.refresh on (300 s). "+
		"Each pod is created at a random point of a second (the kubelet's relist period). "+
		"Times in ms from the Create call's return, as a watch on the namespace saw them; percentiles are nearest-rank. "+
		"The machine's 1-minute load average after each round: %.2f to %.2f (median %.2f).\n\n",
		time.Now().UTC().Format("2006-01-02"), n, startupConcurrency, slices.Min(loads), slices.Max(loads), median(loads))

	b.WriteString("| case | pods | create call p50 | → Running p50 | → Running p95 | → Succeeded p50 | → Succeeded p95 | created → scheduled p50 | scheduled → initialized p50 | initialized → running p50 | running → succeeded p50 |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		toRunning := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.created, p.running) })
		toDone := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.created, p.done) })
		step := func(a, b func(*podStartup) time.Time) string {
			return percentile(collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(a(p), b(p)) }), 50)
		}
		createCall := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return p.createCall, true })
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.name, len(r.pods), percentile(createCall, 50),
			percentile(toRunning, 50), percentile(toRunning, 95), percentile(toDone, 50), percentile(toDone, 95),
			step(func(p *podStartup) time.Time { return p.created }, func(p *podStartup) time.Time { return p.scheduled }),
			step(func(p *podStartup) time.Time { return p.scheduled }, func(p *podStartup) time.Time { return p.initialized }),
			step(func(p *podStartup) time.Time { return p.initialized }, func(p *podStartup) time.Time { return p.running }),
			step(func(p *podStartup) time.Time { return p.running }, func(p *podStartup) time.Time { return p.done }))
	}

	b.WriteString("\nsecctx's init containers, p50 in ms. *Seen running* and *seen done* are from the Create call's return " +
		"(done: terminated; for the token sidecar, started, i.e. its startup probe passed). *Running → done* is over the pods " +
		"where the watch saw it running at all (n), since a container that ends between two of the kubelet's looks (1 s apart) is only seen terminated. " +
		"*Step* is from the previous step seen done (PodScheduled for the first) to this one seen done: the steps and " +
		"*initialized → running* and *running → succeeded* add up to the pod's time.\n\n")
	b.WriteString("| case | container | seen running | seen done | running → done (n) | step |\n|---|---|---:|---:|---:|---:|\n")
	for _, r := range results {
		if len(r.pods) == 0 {
			continue
		}
		for i, name := range r.pods[0].initNames {
			sidecar := name == "secctx-sidecar"
			at := func(p *podStartup, f func(*initSeen) time.Time) time.Time {
				if s := p.inits[name]; s != nil {
					return f(s)
				}
				return time.Time{}
			}
			running := func(s *initSeen) time.Time { return s.running }
			done := func(s *initSeen) time.Time { return s.done(sidecar) }
			seenRunning := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.created, at(p, running)) })
			seenDone := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.created, at(p, done)) })
			runToDone := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(at(p, running), at(p, done)) })
			stepDur := collect(r.pods, func(p *podStartup) (time.Duration, bool) {
				prev := p.scheduled
				if i > 0 {
					prevName := r.pods[0].initNames[i-1]
					if s := p.inits[prevName]; s != nil {
						prev = s.done(prevName == "secctx-sidecar")
					} else {
						prev = time.Time{}
					}
				}
				return between(prev, at(p, done))
			})
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s (%d) | %s |\n", r.name, name, percentile(seenRunning, 50), percentile(seenDone, 50),
				percentile(runToDone, 50), len(runToDone), percentile(stepDur, 50))
		}
	}

	b.WriteString("\nFrom the containers' logs (the runtime's timestamps, to the nanosecond), p50 in ms: the fetch's own time " +
		"(start to last file written) and from its last file to the watch seeing it terminated; the sidecar's process start " +
		"to the token written, and from the token written to the watch seeing the sidecar started (the startup probe, " +
		"period 1 s, and the kubelet's report) and to the task's first line; the task's first line, from the Create call, to the watch seeing Succeeded " +
		"and to the sidecar told to stop (SIGTERM, once the kubelet has seen the task exit).\n\n")
	b.WriteString("| case | fetch in process | fetch written → seen terminated | sidecar up → token written | token written → seen started | token written → task printed | task printed | task printed → seen Succeeded | task printed → sidecar stopping |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		fetchProc := collect(r.pods, func(p *podStartup) (time.Duration, bool) {
			return time.Duration(p.fetchSeconds * float64(time.Second)), !p.fetchWritten.IsZero()
		})
		fetchLag := collect(r.pods, func(p *podStartup) (time.Duration, bool) {
			if s := p.inits["secctx-fetch"]; s != nil {
				return between(p.fetchWritten, s.terminated)
			}
			return 0, false
		})
		tokenFetch := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.sidecarUp, p.tokenWritten) })
		probe := collect(r.pods, func(p *podStartup) (time.Duration, bool) {
			if s := p.inits["secctx-sidecar"]; s != nil {
				return between(p.tokenWritten, s.started)
			}
			return 0, false
		})
		tokenToTask := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.tokenWritten, p.taskPrinted) })
		printed := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.created, p.taskPrinted) })
		printedToDone := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.taskPrinted, p.done) })
		printedToStop := collect(r.pods, func(p *podStartup) (time.Duration, bool) { return between(p.taskPrinted, p.sidecarStopping) })
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.name, percentile(fetchProc, 50), percentile(fetchLag, 50),
			percentile(tokenFetch, 50), percentile(probe, 50), percentile(tokenToTask, 50), percentile(printed, 50), percentile(printedToDone, 50),
			percentile(printedToStop, 50))
	}
	return b.String()
}
