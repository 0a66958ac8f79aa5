package framework

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/test/framework/cluster"
)

// Server is a real server the secret stores' tests run on this machine
// (kumo, Vault), as a host process on an address the cluster's pods reach
// (the bridge's, cluster.NodeIP).
type Server struct {
	// Addr is host:port, URL its http URL.
	Addr, URL string
	cmd       *exec.Cmd
	logs      *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Logs is what the server printed.
func (s *Server) Logs() string {
	s.logs.mu.Lock()
	defer s.logs.mu.Unlock()
	return s.logs.b.String()
}

// Stop kills the server.
func (s *Server) Stop() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// StartServer runs bin/<name> (built by hack/tools) with args and waits
// until addr accepts connections.
func StartServer(ctx context.Context, name, addr string, args ...string) (*Server, error) {
	bin := filepath.Join(Root(), "bin", name)
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w; build it with make tools", err)
	}
	s := &Server{Addr: addr, URL: "http://" + addr, logs: &lockedBuffer{}}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	// Nothing of this machine's environment: no AWS or Vault settings.
	s.cmd.Env = []string{"HOME=" + os.TempDir(), "PATH=/usr/bin:/bin"}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	err := Poll(ctx, 60*time.Second, func() (bool, error) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		return true, nil
	})
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("%s on %s: %w\n%s", name, addr, err, s.Logs())
	}
	return s, nil
}

// FreeAddr is a free port on ip.
func FreeAddr(ip string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartKumo runs kumo, the AWS emulator (Secrets Manager and STS), on ip,
// an address of this machine that the cluster's pods reach (cluster.NodeIP
// for the local cluster).
func StartKumo(ctx context.Context, ip string) (*Server, error) {
	addr, err := FreeAddr(ip)
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	return StartServer(ctx, "kumo", addr, "--host", host, "--port", port)
}

// StartVault runs Vault in dev mode (root token "root") on ip, as
// StartKumo.
func StartVault(ctx context.Context, ip string) (*Server, error) {
	addr, err := FreeAddr(ip)
	if err != nil {
		return nil, err
	}
	return StartServer(ctx, "vault", addr, "server", "-dev", "-dev-root-token-id=root", "-dev-listen-address="+addr)
}

// Configure changes secctx's config (the config.yaml of ConfigMap
// secctx-config) with edit, restarts secctx and waits until every answer
// admits a pod asking for probe, a SecurityContext only the new config
// admits; restore puts the config back the same way, and waits until every
// answer refuses the probe again.
func (s *Secctx) Configure(ctx context.Context, c *cluster.Cluster, edit func(string) string, probe string) (restore func(context.Context) error, err error) {
	return s.Reconfigure(ctx, c, edit,
		func(ctx context.Context) error { return s.WaitAdmits(ctx, c, 2, probe, 20) },
		func(ctx context.Context) error {
			if err := s.WaitReady(ctx, c, 2); err != nil {
				return err
			}
			return s.waitRefuses(ctx, c, probe)
		})
}

// ConfigureRefusing is Configure for a config that refuses probe where the
// old one admits it (a stricter policy mode).
func (s *Secctx) ConfigureRefusing(ctx context.Context, c *cluster.Cluster, edit func(string) string, probe string) (restore func(context.Context) error, err error) {
	return s.Reconfigure(ctx, c, edit,
		func(ctx context.Context) error {
			if err := s.WaitReady(ctx, c, 2); err != nil {
				return err
			}
			return s.waitRefuses(ctx, c, probe)
		},
		func(ctx context.Context) error { return s.WaitAdmits(ctx, c, 2, probe, 20) })
}

// Reconfigure is Configure with the waits given: applied after the change,
// restored after the restore.
func (s *Secctx) Reconfigure(ctx context.Context, c *cluster.Cluster, edit func(string) string, applied, restored func(context.Context) error) (func(context.Context) error, error) {
	cms := c.Client.CoreV1().ConfigMaps(s.Namespace)
	cm, err := cms.Get(ctx, "secctx-config", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	old := cm.Data["config.yaml"]
	set := func(ctx context.Context, config string, wait func(context.Context) error) error {
		cm, err := cms.Get(ctx, "secctx-config", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cm.Data["config.yaml"] = config
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			return err
		}
		if _, _, err := c.Kubectl(ctx, nil, "-n", s.Namespace, "rollout", "restart", "deployment/secctx"); err != nil {
			return err
		}
		return wait(ctx)
	}
	changed := edit(old)
	if changed == old {
		return nil, errors.New("configure secctx: the edit changed nothing")
	}
	if err := set(ctx, changed, applied); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return set(ctx, old, restored) }, nil
}

// WithPolicyMode is an edit for Configure: policy.mode set to mode.
func WithPolicyMode(mode string) func(string) string {
	return func(config string) string {
		return strings.Replace(config, "policy:\n  mode: \"off\"\n", "policy:\n  mode: \""+mode+"\"\n", 1)
	}
}

// WithReferenceChecks is an edit for Configure: referenceChecks set to mode.
func WithReferenceChecks(mode string) func(string) string {
	return func(config string) string {
		return strings.Replace(config, "\nreferenceChecks: \"off\"\n", "\nreferenceChecks: \""+mode+"\"\n", 1)
	}
}

// WithBackend is an edit for Configure: backend b with the given settings
// (YAML at the level of inject's fields, e.g. "aws:\n  stsEndpoint: ..."),
// and the extra hosts that may be reached over plain http. The settings of
// the vault backend replace the default vault block. An edit that does not
// apply (the config's text changed) leaves the config as it is, which
// Configure refuses.
func WithBackend(b, settings string, httpHosts ...string) func(string) string {
	return func(config string) string {
		orig := config
		replace := func(old, new string) bool {
			c := strings.Replace(config, old, new, 1)
			ok := c != config
			config = c
			return ok
		}
		ok := b != "vault" || replace("  vault:\n    mode: injector\n    role: \"flyte\"\n    kvVersion: \"2\"\n    mounts: [\"secret\",\"kv\",\"database\"]\n", "")
		ok = ok && replace("  backend: kubernetes\n", "  backend: "+b+"\n"+indent(settings, "  "))
		if len(httpHosts) > 0 {
			ok = ok && replace(`httpHosts: ["`+OIDCHost+`"]`, `httpHosts: ["`+OIDCHost+`", "`+strings.Join(httpHosts, `", "`)+`"]`)
		}
		if !ok {
			return orig
		}
		return config
	}
}

// WithStores is an edit for Configure: inject.backend stays kubernetes,
// the default vault block (injector mode) goes, and settings (YAML at the
// level of inject's fields: backends, and each store's block) are added,
// with the extra hosts that may be reached over plain http.
func WithStores(settings string, httpHosts ...string) func(string) string {
	return func(config string) string {
		orig := config
		c := strings.Replace(config, "  vault:\n    mode: injector\n    role: \"flyte\"\n    kvVersion: \"2\"\n    mounts: [\"secret\",\"kv\",\"database\"]\n", "", 1)
		c2 := strings.Replace(c, "  backend: kubernetes\n", "  backend: kubernetes\n"+indent(settings, "  "), 1)
		if c == config || c2 == c {
			return orig
		}
		config = c2
		if len(httpHosts) > 0 {
			config = strings.Replace(config, `httpHosts: ["`+OIDCHost+`"]`, `httpHosts: ["`+OIDCHost+`", "`+strings.Join(httpHosts, `", "`)+`"]`, 1)
		}
		return config
	}
}

// WithRefresh is an edit for Configure: inject.refresh every seconds, the
// jitter left as it is (config/'s, 0.1). Edits compose: WithRefresh(10)
// applied to WithStores(...)'s result.
func WithRefresh(seconds int) func(string) string {
	return func(config string) string {
		return strings.Replace(config, "  refresh:\n    intervalSeconds: 0\n", fmt.Sprintf("  refresh:\n    intervalSeconds: %d\n", seconds), 1)
	}
}

// WithFetchIn sets inject.agent.fetchIn (init or sidecar) in secctx's
// config.
func WithFetchIn(where string) func(string) string {
	return func(config string) string {
		return strings.Replace(config, "    fetchIn: init\n", "    fetchIn: "+where+"\n", 1)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(s, "\n") {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	if !strings.HasSuffix(b.String(), "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

// waitRefuses waits until a dry-run pod asking for securityContext is
// refused 20 times in a row.
func (s *Secctx) waitRefuses(ctx context.Context, c *cluster.Cluster, securityContext string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-", Labels: map[string]string{"secctx.dev/inject": "true"},
			Annotations: map[string]string{"secctx.dev/security-context": securityContext}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: TaskImage}}},
	}
	inARow := 0
	return Poll(ctx, 60*time.Second, func() (bool, error) {
		if _, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			inARow++
		} else {
			inARow = 0
		}
		return inARow >= 20, nil
	})
}
