package framework

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/cli-runtime/pkg/genericclioptions"

	"github.com/secctx/secctx/test/framework/cluster"
)

// Helm installs charts/secctx with Helm's Go SDK, as `helm install` would.
type Helm struct {
	cfg       *action.Configuration
	chart     *chart.Chart
	Namespace string
	Release   string
}

// NewHelm prepares Helm for the release "secctx" in namespace.
func NewHelm(c *cluster.Cluster, namespace string) (*Helm, error) {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &c.Kubeconfig
	flags.Namespace = &namespace
	cfg := new(action.Configuration)
	if err := cfg.Init(flags, namespace, "secret", func(string, ...any) {}); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	ch, err := loader.Load(filepath.Join(Root(), "charts", "secctx"))
	if err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	return &Helm{cfg: cfg, chart: ch, Namespace: namespace, Release: "secctx"}, nil
}

// LocalImage are the values that point the chart at the image the harness
// imported.
func LocalImage() map[string]any {
	repo, tag, _ := strings.Cut(SecctxImage, ":")
	return map[string]any{"image": map[string]any{"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"}}
}

// Install runs `helm install --create-namespace --wait`.
func (h *Helm) Install(ctx context.Context, vals map[string]any) error {
	i := action.NewInstall(h.cfg)
	i.ReleaseName, i.Namespace, i.CreateNamespace = h.Release, h.Namespace, true
	i.Wait, i.Timeout = true, 3*time.Minute
	if _, err := i.RunWithContext(ctx, h.chart, vals); err != nil {
		return fmt.Errorf("helm install: %w", err)
	}
	return nil
}

// Upgrade runs `helm upgrade --wait` with vals (not reusing the old ones).
func (h *Helm) Upgrade(ctx context.Context, vals map[string]any) error {
	u := action.NewUpgrade(h.cfg)
	u.Namespace, u.Wait, u.Timeout = h.Namespace, true, 3*time.Minute
	if _, err := u.RunWithContext(ctx, h.Release, h.chart, vals); err != nil {
		return fmt.Errorf("helm upgrade: %w", err)
	}
	return nil
}

// Uninstall runs `helm uninstall --wait`.
func (h *Helm) Uninstall() error {
	u := action.NewUninstall(h.cfg)
	u.Wait, u.Timeout = true, 2*time.Minute
	if _, err := u.Run(h.Release); err != nil {
		return fmt.Errorf("helm uninstall: %w", err)
	}
	return nil
}

// InstallChart installs secctx from charts/secctx with its defaults (self
// certificates, 2 replicas) and the local image, and waits until the webhook
// answers.
func InstallChart(ctx context.Context, c *cluster.Cluster, progress io.Writer) (*Secctx, *Helm, error) {
	return InstallChartWith(ctx, c, progress, LocalImage())
}

// InstallChartWith is InstallChart with these values.
func InstallChartWith(ctx context.Context, c *cluster.Cluster, progress io.Writer, vals map[string]any) (*Secctx, *Helm, error) {
	t0 := time.Now()
	h, err := NewHelm(c, "secctx-system")
	if err != nil {
		return nil, nil, err
	}
	if err := h.Install(ctx, vals); err != nil {
		return nil, nil, err
	}
	s := &Secctx{Namespace: h.Namespace}
	if err := s.WaitReady(ctx, c, 2); err != nil {
		return nil, nil, err
	}
	if progress != nil {
		fmt.Fprintf(progress, "secctx installed with helm (charts/secctx) and answering in %.1fs\n", time.Since(t0).Seconds())
	}
	return s, h, nil
}
