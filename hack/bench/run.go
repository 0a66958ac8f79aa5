package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
	"github.com/secctx/secctx/test/framework/image"
)

type options struct {
	goBench         bool
	out, profile    string
	rounds, seconds int
	pods            int
	// goBenchTime and goBenchCount are the Go benchmarks' -benchtime and
	// -count.
	goBenchTime  string
	goBenchCount int
	// only, when set, lists the sections to run (go, start, https, api);
	// the page is then not written, since it would be partial.
	only string
}

func (o options) runs(section string) bool {
	return o.only == "" || slices.Contains(strings.Split(o.only, ","), section)
}

// env is what the measurements share.
type env struct {
	o                       options
	dir, secctx, self       string
	servers                 string // the reference servers' binary
	scaffold                string // the no-op as kubebuilder scaffolds it, a binary of its own
	certDir, caFile, config string
	body                    []byte
	bodyFile                string
	kube                    *cluster.Cluster
}

const (
	secctxPort = "9443"
	noopPort   = "9444"
	barePort   = "9445"
	floorPort  = "9446"
	// scaffoldPort is the kubebuilder-scaffolded no-op's webhook; its
	// /metrics and probes take secctx's ports, which are free by then.
	scaffoldPort = "9447"
	probeAddr    = "127.0.0.1:8081"
)

// secCtx3 is the SecurityContext every load-test pod carries: three
// secrets, as in the handler benchmark's reference case.
const secCtx3 = `{"secrets":[{"group":"db-creds","key":"password","mountRequirement":"ENV_VAR","envVar":"DB_PASSWORD"},` +
	`{"group":"tls-certs","key":"tls.key","mountRequirement":"FILE","envVar":"TLS_KEY_PATH"},` +
	`{"group":"api","key":"token","mountRequirement":"ENV_VAR"}]}`

func run(o options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it starts the test cluster")
	}
	if runtime.NumCPU() < 2 {
		return errors.New("needs 2 cores: the server and the load generator get one each")
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("needs taskset (util-linux) to pin processes to cores")
	}
	ctx := context.Background()
	root := framework.Root()
	dir, err := os.MkdirTemp("", "secctx-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &env{o: o, dir: dir, secctx: filepath.Join(dir, "secctx"), servers: filepath.Join(dir, "servers"), scaffold: filepath.Join(dir, "scaffold")}
	if e.self, err = os.Executable(); err != nil {
		return err
	}
	if o.out != "" && !filepath.IsAbs(o.out) {
		o.out = filepath.Join(root, o.out)
		e.o.out = o.out
	}
	log("building secctx")
	if err := image.GoBuild(ctx, root, "./cmd/webhook", e.secctx, "-s -w"); err != nil {
		return err
	}
	log("building the reference servers and the scaffolded no-op")
	if err := image.GoBuild(ctx, filepath.Join(root, "hack"), "./bench/servers", e.servers, "-s -w"); err != nil {
		return err
	}
	if err := image.GoBuild(ctx, filepath.Join(root, "hack"), "./bench/scaffold", e.scaffold, "-s -w"); err != nil {
		return err
	}
	if err := e.writeFiles(root); err != nil {
		return err
	}
	res := &results{Machine: machine(), BodyBytes: len(e.body)}
	for path, size := range map[string]*int64{e.secctx: &res.BinaryBytes, e.servers: &res.ServersBytes, e.scaffold: &res.ScaffoldBytes} {
		if fi, err := os.Stat(path); err == nil {
			*size = fi.Size()
		}
	}

	if o.goBench && o.runs("go") {
		log("Go benchmarks of the handler")
		if res.Go, err = goBenchmarks(ctx, root, o.goBenchTime, o.goBenchCount); err != nil {
			return err
		}
	}

	log("starting a control-plane cluster")
	e.kube, err = framework.Up(ctx, framework.Options{Mode: cluster.ControlPlane, Progress: indent{}})
	if err != nil {
		return err
	}
	defer func() {
		if err := e.kube.Stop(); err != nil {
			log("stop cluster: " + err.Error())
		}
	}()
	if err := e.writeConfig(); err != nil {
		return err
	}

	if o.runs("start") {
		log("time from start to ready")
		for range 5 {
			p, d, err := e.startSecctx(true)
			if err != nil {
				return err
			}
			res.Ready = append(res.Ready, d)
			time.Sleep(time.Second)
			if m, err := peakRSS(serverPID(p)); err == nil {
				res.IdleRSS = m
			}
			p.stop()
		}
	}

	if o.runs("https") {
		log("HTTPS load")
		if res.HTTPS, res.RSS, err = e.https(); err != nil {
			return err
		}
	}

	if o.runs("api") {
		log("pod creation through kube-apiserver")
		if res.API, res.APIRSS, err = e.apiServer(ctx); err != nil {
			return err
		}
	}
	if o.only != "" {
		return nil // partial: the log lines above are the numbers
	}

	md := res.markdown(o)
	fmt.Println(md)
	if o.out != "" {
		return writeBetweenMarkers(o.out, md)
	}
	return nil
}

func log(msg string) { fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), msg) }

type indent struct{}

func (indent) Write(b []byte) (int, error) {
	fmt.Fprint(os.Stderr, "        "+string(b))
	return len(b), nil
}

// writeFiles makes the certificate every server uses and the review
// every request sends.
func (e *env) writeFiles(root string) error {
	ca, err := cluster.NewCA("secctx-bench-ca")
	if err != nil {
		return err
	}
	crt, key, err := ca.Issue("bench", "127.0.0.1", "localhost", cluster.NodeIP)
	if err != nil {
		return err
	}
	e.certDir = filepath.Join(e.dir, "certs")
	e.caFile = filepath.Join(e.dir, "ca.crt")
	if err := os.MkdirAll(e.certDir, 0o700); err != nil {
		return err
	}
	for p, b := range map[string][]byte{filepath.Join(e.certDir, "tls.crt"): crt, filepath.Join(e.certDir, "tls.key"): key, e.caFile: ca.CertPEM} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
	}
	pod, err := taskPod(root)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		return err
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("9f3c2a1b-0000-4000-8000-000000000001"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: "default", Operation: admissionv1.Create,
			Object: runtimeRaw(raw),
		},
	}
	if e.body, err = json.Marshal(review); err != nil {
		return err
	}
	e.bodyFile = filepath.Join(e.dir, "review.json")
	return os.WriteFile(e.bodyFile, e.body, 0o600)
}

// taskPod is the handler benchmark's reference pod (a Flyte task pod, two
// containers) with the 3-secret SecurityContext and the opt-in label.
func taskPod(root string) (*corev1.Pod, error) {
	b, err := os.ReadFile(filepath.Join(root, "pkg/webhook/testdata/task-pod.yaml"))
	if err != nil {
		return nil, err
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(b, &pod); err != nil {
		return nil, err
	}
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Labels["secctx.dev/inject"] = "true"
	pod.Annotations["secctx.dev/security-context"] = secCtx3
	return &pod, nil
}

func (e *env) writeConfig() error {
	e.config = filepath.Join(e.dir, "config.yaml")
	cfg := fmt.Sprintf("apiVersion: config.secctx.dev/v1alpha1\nkind: SecctxConfiguration\nport: %s\ncertDir: %s\nmetricsBindAddress: \"0\"\nhealthProbeBindAddress: %q\nlogLevel: error\n", secctxPort, e.certDir, probeAddr)
	if e.o.profile != "" {
		cfg += "pprofBindAddress: 127.0.0.1:6060\n"
	}
	return os.WriteFile(e.config, []byte(cfg), 0o600)
}

// proc is a server process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(pinned bool, name string, args ...string) (*proc, error) {
	if pinned {
		args = append([]string{"-c", "0", name}, args...)
		name = "taskset"
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// startSecctx starts `secctx serve` and returns once /readyz answers 200,
// with the time that took.
func (e *env) startSecctx(pinned bool) (*proc, time.Duration, error) {
	t0 := time.Now()
	p, err := startProc(pinned, e.secctx, "serve", "--config", e.config, "--kubeconfig", e.kube.Kubeconfig)
	if err != nil {
		return nil, 0, err
	}
	client := &http.Client{Timeout: time.Second}
	for time.Since(t0) < 30*time.Second {
		select {
		case <-p.done:
			return nil, 0, errors.New("secctx serve exited")
		default:
		}
		if resp, err := client.Get("http://" + probeAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, time.Since(t0), nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	p.stop()
	return nil, 0, errors.New("secctx serve not ready after 30s")
}

// saveProfile fetches a pprof profile into the profile directory.
func (e *env) saveProfile(url, name string) {
	resp, err := http.Get(url)
	if err != nil {
		log("profile: " + err.Error())
		return
	}
	defer resp.Body.Close()
	_ = os.MkdirAll(e.o.profile, 0o755)
	f, err := os.Create(filepath.Join(e.o.profile, name))
	if err != nil {
		log("profile: " + err.Error())
		return
	}
	defer f.Close()
	_, _ = f.ReadFrom(resp.Body)
	log("profile written: " + f.Name())
}

// waitPort waits for a TLS server on port; it completes a handshake so that
// the server logs no half-open connection.
func waitPort(port string) error {
	d := &net.Dialer{Timeout: time.Second}
	for i := 0; i < 500; i++ {
		if c, err := tls.DialWithDialer(d, "tcp", "127.0.0.1:"+port, &tls.Config{InsecureSkipVerify: true}); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", port)
}

// cpuTime is the user+system CPU a process has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / ticks, nil
}

// rssParts is a process's resident memory now, by kind: anonymous (heap,
// stacks), and the binary's pages by mapping (code r-x, read-only data and
// the function tables r--), for the log.
func rssParts(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return err.Error()
	}
	kb := map[string]int{}
	var name string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 5 && strings.Contains(f[0], "-") && len(f[1]) == 4:
			name = "anon"
			if len(f) >= 6 && strings.HasPrefix(f[5], "/") {
				name = f[1]
			}
		case len(f) == 3 && f[0] == "Rss:":
			n, _ := strconv.Atoi(f[1])
			kb[name] += n
		}
	}
	return fmt.Sprintf("anon %d kB, code %d kB, read-only %d kB, data %d kB", kb["anon"], kb["r-xp"], kb["r--p"], kb["rw-p"])
}

// peakRSS is a process's VmHWM.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmHWM")
}

// serverPID is the server's own PID: taskset execs it, so it is the same.
func serverPID(p *proc) int { return p.cmd.Process.Pid }

// target is one server in the HTTPS comparison.
type target struct {
	Name string
	port string
}

// httpsResult is one target's numbers, the median of the rounds.
type httpsResult struct {
	Name        string
	Saturation  float64       // req/s
	CPUPerReq   time.Duration // server CPU per request at saturation
	P50         time.Duration // at 500 req/s
	P99         time.Duration
	P999        time.Duration
	RoundsSat   []float64
	Errors      []string
	SuccessRate float64
	RSS         int64 // the highest peak of the rounds
}

func (e *env) https() ([]httpsResult, int64, error) {
	targets := []target{{"secctx serve", secctxPort}, {"no-op controller-runtime Defaulter", noopPort}, {"bare net/http TLS", barePort}, {scaffoldName, scaffoldPort}}
	per := map[string][]httpsResult{}
	var rss int64
	for round := 1; round <= e.o.rounds; round++ {
		for _, t := range targets {
			var p *proc
			var err error
			switch t.port {
			case secctxPort:
				p, _, err = e.startSecctx(true)
			case noopPort:
				p, err = startProc(true, e.servers, "serve-noop", noopPort, e.certDir)
			case barePort:
				p, err = startProc(true, e.servers, "serve-bare", barePort, e.certDir)
			case scaffoldPort:
				p, err = startProc(true, e.scaffold, "--kubeconfig", e.kube.Kubeconfig, "--webhook-port", scaffoldPort, "--webhook-cert-path", e.certDir, "--zap-log-level", "info")
			}
			if err == nil {
				err = waitPort(t.port)
			}
			if err != nil {
				return nil, 0, fmt.Errorf("%s: %w", t.Name, err)
			}
			url := "https://127.0.0.1:" + t.port + "/mutate-v1-pod"
			r, err := e.measure(p, url)
			parts := rssParts(serverPID(p)) + "; of the binary resident: " + residentSections(serverPID(p))
			if m, err := peakRSS(serverPID(p)); err == nil {
				r.RSS = m
				if t.port == secctxPort {
					rss = max(rss, m)
				}
			}
			p.stop()
			if err != nil {
				return nil, 0, fmt.Errorf("%s: %w", t.Name, err)
			}
			r.Name = t.Name
			log(fmt.Sprintf("  round %d %-36s saturation %6.0f req/s, %4.0f µs CPU/req; at 500 req/s p50 %s p99 %s p99.9 %s; peak RSS %.1f MiB (at the end: %s)",
				round, t.Name, r.Saturation, float64(r.CPUPerReq.Microseconds()), r.P50, r.P99, r.P999, float64(r.RSS)/(1<<20), parts))
			per[t.Name] = append(per[t.Name], r)
		}
	}
	var out []httpsResult
	for _, t := range targets {
		out = append(out, median(per[t.Name]))
	}
	return out, rss, nil
}

func (e *env) measure(p *proc, url string) (httpsResult, error) {
	var r httpsResult
	if _, err := e.attack(url, 0, 3); err != nil { // warm-up
		return r, err
	}
	c0, err := cpuTime(serverPID(p))
	if err != nil {
		return r, err
	}
	if e.o.profile != "" && strings.Contains(url, ":"+secctxPort+"/") {
		go e.saveProfile("http://127.0.0.1:6060/debug/pprof/profile?seconds="+strconv.Itoa(e.o.seconds-1), "secctx-https.pprof")
	}
	sat, err := e.attack(url, 0, e.o.seconds)
	if err != nil {
		return r, err
	}
	c1, err := cpuTime(serverPID(p))
	if err != nil {
		return r, err
	}
	if e.o.profile != "" && strings.Contains(url, ":"+secctxPort+"/") {
		e.saveProfile("http://127.0.0.1:6060/debug/pprof/heap?gc=1", "secctx-heap.pprof")
	}
	fixed, err := e.attack(url, 500, e.o.seconds)
	if err != nil {
		return r, err
	}
	r.Saturation = sat.Throughput
	if sat.Requests > 0 {
		r.CPUPerReq = (c1 - c0) / time.Duration(sat.Requests)
	}
	r.P50, r.P99, r.P999 = fixed.P50, fixed.P99, fixed.P999
	r.SuccessRate = min(sat.Success, fixed.Success)
	r.Errors = append(sat.Errors, fixed.Errors...)
	if r.SuccessRate < 1 {
		return r, fmt.Errorf("not every request succeeded (%.2f%%): %v", r.SuccessRate*100, r.Errors)
	}
	return r, nil
}

// attack runs the load generator pinned to core 1.
func (e *env) attack(url string, rate, seconds int) (attackResult, error) {
	cmd := exec.Command("taskset", "-c", "1", e.self, "attack", url, e.caFile, e.bodyFile, strconv.Itoa(rate), strconv.Itoa(seconds))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return attackResult{}, fmt.Errorf("attack: %w", err)
	}
	var r attackResult
	return r, json.Unmarshal(out, &r)
}

func median(rs []httpsResult) httpsResult {
	sort.Slice(rs, func(i, j int) bool { return rs[i].Saturation < rs[j].Saturation })
	m := rs[len(rs)/2]
	if len(rs)%2 == 0 {
		m = rs[len(rs)/2-1] // the lower of the middle two: no flattering
	}
	pick := func(f func(httpsResult) time.Duration) time.Duration {
		ds := make([]time.Duration, len(rs))
		for i, r := range rs {
			ds[i] = f(r)
		}
		slices.Sort(ds)
		return ds[(len(ds)-1)/2] // the lower median
	}
	for _, r := range rs {
		m.RoundsSat = append(m.RoundsSat, r.Saturation)
		m.RSS = max(m.RSS, r.RSS)
	}
	m.CPUPerReq = pick(func(r httpsResult) time.Duration { return r.CPUPerReq })
	m.P50 = pick(func(r httpsResult) time.Duration { return r.P50 })
	m.P99 = pick(func(r httpsResult) time.Duration { return r.P99 })
	m.P999 = pick(func(r httpsResult) time.Duration { return r.P999 })
	return m
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(?:\s+[\d.]+ MB/s)?\s+(\d+) B/op\s+(\d+) allocs/op`)

// goBench is one Go benchmark's median.
type goBench struct {
	Name          string
	NsOp          float64
	Runs          []float64
	BytesOp, Allc int64
}

func goBenchmarks(ctx context.Context, root, benchtime string, count int) ([]goBench, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "./pkg/webhook/", "-run", "^$", "-bench", "BenchmarkServeHTTP|BenchmarkControllerRuntimeAdmission",
		"-benchmem", "-benchtime", benchtime, "-count", strconv.Itoa(count))
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	by := map[string]*goBench{}
	var order []string
	for _, line := range strings.Split(string(out), "\n") {
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ns, _ := strconv.ParseFloat(m[2], 64)
		bo, _ := strconv.ParseInt(m[3], 10, 64)
		al, _ := strconv.ParseInt(m[4], 10, 64)
		g := by[m[1]]
		if g == nil {
			g = &goBench{Name: m[1]}
			by[m[1]] = g
			order = append(order, m[1])
		}
		g.Runs = append(g.Runs, ns)
		g.BytesOp, g.Allc = bo, al
	}
	var res []goBench
	for _, n := range order {
		g := by[n]
		s := slices.Clone(g.Runs)
		slices.Sort(s)
		g.NsOp = s[len(s)/2]
		res = append(res, *g)
	}
	return res, nil
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%d cores, %s, %s %s/%s", runtime.NumCPU(), model, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
