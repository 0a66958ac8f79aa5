// Package cluster runs a real single-node Kubernetes cluster from local
// binaries, without Docker: etcd and kube-apiserver (ControlPlane mode), plus
// containerd, kube-controller-manager, kube-scheduler, kubelet and kube-proxy
// (Full mode), where pods really run.
//
// Every process is started by the harness and stopped by its PID. Teardown
// removes mounts, cgroups, network namespaces, the bridge and iptables
// chains, and restores the kernel settings the components changed. It needs
// root. docs/testing.md lists the flags that had to be found.
package cluster

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Mode says how much of a cluster to run.
type Mode int

const (
	// ControlPlane runs etcd and kube-apiserver only: objects are stored and
	// admitted (webhooks included), nothing is scheduled or run. It starts in
	// a few seconds. Namespaces made with CreateNamespace get their default
	// ServiceAccount from the harness, since no controller runs.
	ControlPlane Mode = iota
	// Full adds containerd, the controllers, the scheduler, kubelet and
	// kube-proxy: pods run, Services route, webhooks can be served from pods.
	Full
)

func (m Mode) String() string {
	if m == Full {
		return "full"
	}
	return "control-plane"
}

// Addresses of the one node. The bridge's gateway doubles as the node IP and
// the API server's address, because the API server refuses to advertise a
// loopback address. Nothing is routed off the machine.
const (
	Bridge      = "secctx0"
	NodeIP      = "10.88.0.1"
	PodCIDR     = "10.88.0.0/24"
	ServiceCIDR = "10.0.0.0/24"
	NodeName    = "secctx-node"
	// PauseImage is the sandbox image; it must be among Config.Images.
	PauseImage = "localhost/pause:secctx"

	// LockFile serialises clusters on one machine (test packages run in
	// parallel).
	LockFile = "/var/tmp/secctx-test-cluster.lock"

	apiserverPort = 6443
	etcdPort      = 23790
	etcdPeerPort  = 23800
)

// Config says what to run and where.
type Config struct {
	Mode Mode
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kube-proxy and kubectl (make tools).
	BinDir string
	// Dir holds all cluster state; it is wiped at Start. Keep its path short:
	// containerd's socket lives under it.
	Dir string
	// Images are image tarballs imported into containerd (Full mode).
	Images []string
	// Progress, when set, gets one line per step.
	Progress io.Writer
}

// Cluster is a running cluster.
type Cluster struct {
	cfg        Config
	dir        string
	procs      []*process
	host       *HostState
	lock       *os.File
	Kubeconfig string
	kubectl    string // set by Attach
	REST       *rest.Config
	Client     kubernetes.Interface
	// CA signed the API server's certificate.
	CA      *CA
	started time.Time
	// StartDuration is how long Start took.
	StartDuration time.Duration
}

//go:embed templates
var templates embed.FS

// Start brings a cluster up. A cluster left behind by a run that crashed is
// torn down first. Only one cluster runs on a machine at a time: Start waits
// for a lock that Stop releases.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the test cluster needs root (it makes a bridge, mounts and cgroups)")
	}
	for _, b := range binaries(cfg.Mode) {
		if _, err := os.Stat(filepath.Join(cfg.BinDir, b)); err != nil {
			return nil, fmt.Errorf("%s is missing from %s: run `make tools` first", b, cfg.BinDir)
		}
	}
	if cfg.Mode == Full {
		for _, b := range []string{"containerd", "ctr", "runc", "iptables", "conntrack", "/usr/lib/cni/bridge"} {
			if _, err := exec.LookPath(b); err != nil {
				return nil, fmt.Errorf("%s is missing: run `make tools`, which installs containerd, runc, the CNI plugins, iptables and conntrack", b)
			}
		}
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errors.New("ip (iproute2) is missing: run `make tools`")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	// c, not the named result, is what the deferred Stop sees: an error
	// return sets the result to nil.
	c := &Cluster{cfg: cfg, dir: dir, started: time.Now()}
	if err := c.acquireLock(ctx); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Stop())
		}
	}()
	if err := cleanStale(dir, cfg.BinDir); err != nil {
		return nil, fmt.Errorf("clean up the previous cluster: %w", err)
	}
	c.host = SnapshotHost()
	for _, d := range []string{"logs", "pids", "pki", "kubelet/root", "kubelet/pki", "kubelet/logs", "kubelet/pods", "run", "cni/conf", "containerd"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := c.host.save(filepath.Join(dir, "host-state.json")); err != nil {
		return nil, err
	}
	if err := c.writeFiles(); err != nil {
		return nil, err
	}
	c.progress("files and certificates written")
	if err := run("ip", "link", "add", Bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	if err := run("ip", "addr", "add", NodeIP+"/24", "dev", Bridge); err != nil {
		return nil, err
	}
	if err := run("ip", "link", "set", Bridge, "up"); err != nil {
		return nil, err
	}
	if cfg.Mode == Full {
		if err := c.startContainerd(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.startControlPlane(ctx); err != nil {
		return nil, err
	}
	if cfg.Mode == Full {
		if err := c.startNode(ctx); err != nil {
			return nil, err
		}
	}
	c.StartDuration = time.Since(c.started)
	c.progress(fmt.Sprintf("cluster up (%s mode) in %.1fs", cfg.Mode, c.StartDuration.Seconds()))
	return c, nil
}

func binaries(m Mode) []string {
	bs := []string{"etcd", "kube-apiserver", "kubectl"}
	if m == Full {
		bs = append(bs, "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
	}
	return bs
}

func (c *Cluster) progress(msg string) {
	if c.cfg.Progress != nil {
		fmt.Fprintf(c.cfg.Progress, "%6.1fs  %s\n", time.Since(c.started).Seconds(), msg)
	}
}

func (c *Cluster) acquireLock(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(c.dir), 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(LockFile), 0o755); err != nil {
		return err
	}
	// One lock per machine, not per directory: every cluster uses the same
	// bridge and ports.
	f, err := os.OpenFile(LockFile, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			c.lock = f
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		if first {
			c.progress("waiting for another test cluster on this machine to stop")
		}
		select {
		case <-ctx.Done():
			f.Close()
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// cleanStale tears down what a previous run left in dir.
func cleanStale(dir, binDir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	killStale(dir, binDir)
	killShims(dir)
	var errs []error
	if hs, err := loadHostState(filepath.Join(dir, "host-state.json")); err == nil {
		errs = append(errs, hs.restore(Bridge))
		cleanupKubeProxy(binDir)
	}
	unmountUnder(dir)
	errs = append(errs, os.RemoveAll(dir))
	return errors.Join(errs...)
}

type templateData struct {
	Dir, NodeIP, PodCIDR, ServiceCIDR, Bridge, PauseImage string
}

func (c *Cluster) writeFiles() error {
	ca, err := NewCA("secctx-test-cluster-ca")
	if err != nil {
		return err
	}
	c.CA = ca
	hosts := []string{"127.0.0.1", NodeIP, "10.0.0.1", "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	crt, key, err := ca.Issue("kube-apiserver", hosts...)
	if err != nil {
		return err
	}
	saKey, saPub, err := newSigningKey()
	if err != nil {
		return err
	}
	adminToken, nodeToken := randomToken(), randomToken()
	files := map[string][]byte{
		"pki/ca.crt":        ca.CertPEM,
		"pki/apiserver.crt": crt,
		"pki/apiserver.key": key,
		"pki/sa.key":        saKey,
		"pki/sa.pub":        saPub,
		"pki/tokens.csv": fmt.Appendf(nil, "%s,admin,admin-uid,\"system:masters\"\n%s,system:node:%s,node-uid,\"system:nodes\"\n",
			adminToken, nodeToken, NodeName),
		"kubeconfig":         kubeconfig(c.dir, "admin", adminToken),
		"kubelet.kubeconfig": kubeconfig(c.dir, "node", nodeToken),
	}
	data := templateData{Dir: c.dir, NodeIP: NodeIP, PodCIDR: PodCIDR, ServiceCIDR: ServiceCIDR, Bridge: Bridge, PauseImage: PauseImage}
	for src, dst := range map[string]string{
		"templates/containerd.toml": "containerd/config.toml",
		"templates/kubelet.yaml":    "kubelet/config.yaml",
		"templates/bridge.conflist": "cni/conf/10-secctx-bridge.conflist",
	} {
		t, err := template.ParseFS(templates, src)
		if err != nil {
			return err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return err
		}
		files[dst] = b.Bytes()
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(c.dir, name), b, 0o600); err != nil {
			return err
		}
	}
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	c.REST, err = clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	c.REST.QPS, c.REST.Burst = 200, 400
	c.Client, err = kubernetes.NewForConfig(c.REST)
	return err
}

func kubeconfig(dir, user, token string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: secctx-test
  cluster:
    server: https://%s:%d
    certificate-authority: %s/pki/ca.crt
users:
- name: %s
  user:
    token: %s
contexts:
- name: secctx-test
  context: {cluster: secctx-test, user: %s}
current-context: secctx-test
`, NodeIP, apiserverPort, dir, user, token, user)
}

func randomToken() string {
	return fmt.Sprintf("%x%x", serial(), serial())
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.cfg.BinDir, name) }

func (c *Cluster) ctr(args ...string) *exec.Cmd {
	return exec.Command("ctr", append([]string{"-a", filepath.Join(c.dir, "run/containerd.sock"), "-n", "k8s.io"}, args...)...)
}

func (c *Cluster) startContainerd(ctx context.Context) error {
	p, err := c.start("containerd", "containerd", "--config", filepath.Join(c.dir, "containerd/config.toml"))
	if err != nil {
		return err
	}
	if err := poll(ctx, 30*time.Second, p, func() bool { return c.ctr("version").Run() == nil }); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	for _, img := range c.cfg.Images {
		if out, err := c.ctr("images", "import", img).CombinedOutput(); err != nil {
			return fmt.Errorf("import %s: %v: %s", img, err, out)
		}
	}
	c.progress(fmt.Sprintf("containerd up, %d images imported", len(c.cfg.Images)))
	return nil
}

// ImportImage adds an image tarball to a running Full cluster.
func (c *Cluster) ImportImage(tarball string) error {
	if out, err := c.ctr("images", "import", tarball).CombinedOutput(); err != nil {
		return fmt.Errorf("import %s: %v: %s", tarball, err, out)
	}
	return nil
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	d := c.dir
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeerPort)
	etcd, err := c.start("etcd", c.bin("etcd"), "--name", "secctx", "--data-dir", filepath.Join(d, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "secctx="+peerURL, "--unsafe-no-fsync", "--log-level", "warn")
	if err != nil {
		return err
	}
	apiserver, err := c.start("kube-apiserver", c.bin("kube-apiserver"),
		"--etcd-servers="+etcdURL,
		"--bind-address="+NodeIP, "--advertise-address="+NodeIP, fmt.Sprintf("--secure-port=%d", apiserverPort),
		"--tls-cert-file="+d+"/pki/apiserver.crt", "--tls-private-key-file="+d+"/pki/apiserver.key",
		"--client-ca-file="+d+"/pki/ca.crt",
		"--service-cluster-ip-range="+ServiceCIDR,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+d+"/pki/sa.pub", "--service-account-signing-key-file="+d+"/pki/sa.key",
		"--token-auth-file="+d+"/pki/tokens.csv", "--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,ResourceQuota,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
		"--allow-privileged=true", "--enable-aggregator-routing=true", "--kubelet-preferred-address-types=InternalIP",
		"--v=1")
	if err != nil {
		return err
	}
	ready := func() bool {
		if etcd.exited() != nil {
			return false
		}
		body, err := c.Client.CoreV1().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok"
	}
	if err := poll(ctx, 90*time.Second, apiserver, ready); err != nil {
		return errors.Join(fmt.Errorf("kube-apiserver: %w", err), etcd.exited())
	}
	c.progress("etcd and kube-apiserver ready")
	return nil
}

func (c *Cluster) startNode(ctx context.Context) error {
	d := c.dir
	kcm, err := c.start("kube-controller-manager", c.bin("kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig, "--bind-address=127.0.0.1", "--secure-port=10257", "--leader-elect=false",
		"--service-account-private-key-file="+d+"/pki/sa.key", "--root-ca-file="+d+"/pki/ca.crt",
		"--use-service-account-credentials=false", "--controllers=*,-nodeipam")
	if err != nil {
		return err
	}
	if _, err := c.start("kube-scheduler", c.bin("kube-scheduler"),
		"--kubeconfig="+c.Kubeconfig, "--bind-address=127.0.0.1", "--secure-port=10259", "--leader-elect=false"); err != nil {
		return err
	}
	kubelet, err := c.start("kubelet", c.bin("kubelet"),
		"--config="+d+"/kubelet/config.yaml", "--kubeconfig="+d+"/kubelet.kubeconfig",
		"--root-dir="+d+"/kubelet/root", "--cert-dir="+d+"/kubelet/pki",
		"--hostname-override="+NodeName, "--node-ip="+NodeIP, "--v=1")
	if err != nil {
		return err
	}
	proxy, err := c.start("kube-proxy", c.bin("kube-proxy"),
		"--kubeconfig="+c.Kubeconfig, "--proxy-mode=iptables", "--hostname-override="+NodeName,
		"--cluster-cidr="+PodCIDR, "--bind-address=127.0.0.1", "--healthz-bind-address=127.0.0.1:10256",
		"--metrics-bind-address=127.0.0.1:10249", "--nodeport-addresses="+NodeIP+"/32", "--conntrack-max-per-core=0")
	if err != nil {
		return err
	}
	nodeReady := func() bool {
		for _, p := range []*process{kcm, proxy} {
			if p.exited() != nil {
				return false
			}
		}
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil || len(n.Spec.Taints) > 0 {
			return false
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue
			}
		}
		return false
	}
	if err := poll(ctx, 120*time.Second, kubelet, nodeReady); err != nil {
		return errors.Join(fmt.Errorf("node %s ready: %w", NodeName, err), kcm.exited(), proxy.exited())
	}
	c.progress("node ready")
	if err := c.waitNamespace(ctx, "default"); err != nil {
		return err
	}
	return nil
}

// Attach uses a cluster someone else runs (kind, a CI cluster) through its
// kubeconfig. Stop does nothing to it; images must already be loaded.
func Attach(kubeconfigPath, kubectl string) (*Cluster, error) {
	c := &Cluster{cfg: Config{Mode: Full}, Kubeconfig: kubeconfigPath, kubectl: kubectl, started: time.Now()}
	var err error
	if c.REST, err = clientcmd.BuildConfigFromFlags("", kubeconfigPath); err != nil {
		return nil, err
	}
	c.REST.QPS, c.REST.Burst = 200, 400
	if c.Client, err = kubernetes.NewForConfig(c.REST); err != nil {
		return nil, err
	}
	return c, nil
}

// CreateNamespace makes a namespace that pods can be created in at once: in
// Full mode it waits for the controllers to add the default ServiceAccount
// and kube-root-ca.crt; in ControlPlane mode it creates the ServiceAccount.
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	if c.cfg.Mode == ControlPlane {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
		_, err := c.Client.CoreV1().ServiceAccounts(name).Create(ctx, sa, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create service account %s/default: %w", name, err)
		}
		return nil
	}
	return c.waitNamespace(ctx, name)
}

func (c *Cluster) waitNamespace(ctx context.Context, ns string) error {
	ready := func() bool {
		if _, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{}); err != nil {
			return false
		}
		_, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		return err == nil
	}
	if err := poll(ctx, 60*time.Second, nil, ready); err != nil {
		return fmt.Errorf("namespace %s: default service account and kube-root-ca.crt: %w", ns, err)
	}
	return nil
}

// Kubectl runs the kubectl built with the cluster's version against it.
func (c *Cluster) Kubectl(ctx context.Context, stdin io.Reader, args ...string) (stdout, stderr string, err error) {
	kubectl := c.kubectl
	if kubectl == "" {
		kubectl = c.bin("kubectl")
	}
	cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errOut
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), errOut.String(), err
}

// Stop tears the cluster down and leaves the machine as Start found it; it
// returns an error naming anything that is not.
func (c *Cluster) Stop() error {
	if c.kubectl != "" {
		return nil // attached, not ours
	}
	var errs []error
	byName := map[string]*process{}
	for _, p := range c.procs {
		byName[p.name] = p
	}
	t0 := time.Now()
	step := func(what string) { c.progress(fmt.Sprintf("stop: %s (%.1fs)", what, time.Since(t0).Seconds())) }
	for _, n := range []string{"kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager"} {
		if p := byName[n]; p != nil {
			p.stop(10 * time.Second)
		}
	}
	step("node components stopped")
	if p := byName["containerd"]; p != nil && c.host != nil {
		c.removeContainers()
		step("containers removed")
	}
	for _, n := range []string{"kube-apiserver", "etcd", "containerd"} {
		if p := byName[n]; p != nil {
			p.stop(10 * time.Second)
		}
	}
	killShims(c.dir)
	step("control plane stopped")
	if c.host != nil {
		errs = append(errs, c.host.restore(Bridge))
	}
	if c.cfg.Mode == Full {
		cleanupKubeProxy(c.cfg.BinDir)
	}
	unmountUnder(c.dir)
	if c.host != nil {
		errs = append(errs, os.RemoveAll(c.dir))
		if d := c.host.Diff(SnapshotHost()); len(d) > 0 {
			errs = append(errs, fmt.Errorf("the machine is not as the cluster found it:\n  %s", strings.Join(d, "\n  ")))
		}
	}
	step("machine restored")
	if c.lock != nil {
		_ = syscall.Flock(int(c.lock.Fd()), syscall.LOCK_UN)
		c.lock.Close()
		c.lock = nil
	}
	return errors.Join(errs...)
}

// removeContainers kills every pod's processes through the pod cgroups
// kubelet made, then the shims. containerd's records of them go with its
// state directory; asking it to delete each task takes seconds per pod.
func (c *Cluster) removeContainers() {
	for _, h := range cgroupHierarchies() {
		for _, r := range cgroupRoots {
			if root := filepath.Join(h, r); !c.host.Cgroups[root] {
				killCgroup(root)
			}
		}
	}
	killShims(c.dir)
}

// killShims kills containerd shims serving this cluster's containerd, found
// by the socket path on their command line; they outlive containerd.
func killShims(dir string) {
	sock := filepath.Join(dir, "run/containerd.sock")
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(sock)) {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(p, "/proc/%d/cmdline", &pid); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func cleanupKubeProxy(binDir string) {
	_ = exec.Command(filepath.Join(binDir, "kube-proxy"), "--cleanup").Run()
}

// CollectArtifacts copies every component's log, the pods' container logs
// and the cluster's objects and events into dst, for a failed run.
func (c *Cluster) CollectArtifacts(ctx context.Context, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	var errs []error
	if c.dir != "" {
		errs = append(errs, copyTree(filepath.Join(c.dir, "logs"), dst))
		errs = append(errs, copyTree(filepath.Join(c.dir, "kubelet/logs"), filepath.Join(dst, "pods")))
	}
	for name, args := range map[string][]string{
		"objects.yaml": {"get", "all,serviceaccounts,mutatingwebhookconfigurations,endpointslices", "-A", "-o", "yaml"},
		"events.txt":   {"get", "events", "-A", "--sort-by=.lastTimestamp"},
		"describe.txt": {"describe", "pods", "-A"},
	} {
		out, _, err := c.Kubectl(ctx, nil, args...)
		errs = append(errs, err, os.WriteFile(filepath.Join(dst, name), []byte(out), 0o644))
	}
	return errors.Join(errs...)
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		// Pod log directories hold symlinks and files; follow them.
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		return os.WriteFile(target, b, 0o644)
	})
}

// poll calls ok every 100 ms until it is true, the timeout passes, or p (if
// set) exits.
func poll(ctx context.Context, timeout time.Duration, p *process, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return nil
		}
		if p != nil {
			if err := p.exited(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func run(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}
