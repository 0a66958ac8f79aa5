// Package e2e runs secctx as users do: the binary on the command line, and
// the webhook deployed from config/ into a real single-node cluster where
// task pods run. `go test -short` runs only the command-line tests.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
)

var (
	// secctx is the binary the CLI tests run.
	secctx string
	// kube and deployed are the cluster and the secctx in it; nil in -short.
	kube     *cluster.Cluster
	deployed *framework.Secctx

	keepCluster = flag.Bool("keep-cluster", false, "leave the cluster running after the suite (stop it with the next run)")
	kubeconfig  = flag.String("kubeconfig", "", "run against this cluster (e.g. kind) instead of starting one; images must be loaded")
	kubectl     = flag.String("kubectl", "kubectl", "kubectl to use with -kubeconfig")
	// hostAddress is where the cluster's API server reaches a webhook served
	// by the test process: the node bridge here, the Docker network's
	// gateway under kind.
	hostAddress = flag.String("host-address", cluster.NodeIP, "address of this machine as the API server sees it")
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "secctx-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	secctx = filepath.Join(dir, "secctx")
	build := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/secctx/secctx/pkg/version.Version=v0.0.0-e2e", "-o", secctx, "./cmd/webhook")
	build.Dir = framework.Root() // the main module, not the test module
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build secctx: %v\n%s", err, out)
		return 1
	}
	if testing.Short() {
		return m.Run()
	}

	opts := framework.Options{Mode: cluster.Full, Kubeconfig: *kubeconfig, Kubectl: *kubectl}
	return framework.WithCluster("e2e", opts, *keepCluster, func(ctx context.Context, c *cluster.Cluster) int {
		kube = c
		var err error
		if deployed, err = framework.DeploySecctx(ctx, kube, framework.Prefix("e2e: ")); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: deploy secctx: %v\n", err)
			return 1
		}
		t1 := time.Now()
		code := m.Run()
		fmt.Fprintf(os.Stderr, "e2e: tests ran in %.1fs\n", time.Since(t1).Seconds())
		return code
	})
}

// needCluster skips cluster tests in -short mode.
func needCluster(t *testing.T) {
	t.Helper()
	if kube == nil {
		t.Skip("-short: no cluster")
	}
}
