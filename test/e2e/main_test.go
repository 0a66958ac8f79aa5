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
	"os/signal"
	"path/filepath"
	"syscall"
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

func run(m *testing.M) (code int) {
	dir, err := os.MkdirTemp("", "secctx-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	secctx = filepath.Join(dir, "secctx")
	build := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/secctx/secctx/pkg/version.Version=v0.0.0-e2e", "-o", secctx, "../../cmd/webhook")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build secctx: %v\n%s", err, out)
		return 1
	}
	if testing.Short() {
		return m.Run()
	}

	// SIGINT or SIGTERM (Ctrl-C, a CI cancel) still tears the cluster down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	kube, err = framework.Up(ctx, framework.Options{
		Mode: cluster.Full, Progress: prefixed("e2e: "), Kubeconfig: *kubeconfig, Kubectl: *kubectl,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start cluster: %v\n", err)
		return 1
	}
	defer func() {
		if code != 0 {
			dst := filepath.Join(framework.Root(), "_artifacts", "e2e-"+time.Now().Format("20060102-150405"))
			if err := kube.CollectArtifacts(context.Background(), dst); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: collect artifacts: %v\n", err)
			}
			fmt.Fprintf(os.Stderr, "e2e: logs of every component are in %s\n", dst)
		}
		if *keepCluster {
			fmt.Fprintf(os.Stderr, "e2e: cluster left running; kubeconfig %s\n", kube.Kubeconfig)
			return
		}
		// Stop fails if the machine is not as Start found it.
		if err := kube.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stop cluster: %v\n", err)
			code = 1
		}
		fmt.Fprintf(os.Stderr, "e2e: whole suite with cluster up and down: %.1fs\n", time.Since(t0).Seconds())
	}()
	deployed, err = framework.DeploySecctx(ctx, kube, prefixed("e2e: "))
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: deploy secctx: %v\n", err)
		return 1
	}
	t1 := time.Now()
	code = m.Run()
	fmt.Fprintf(os.Stderr, "e2e: tests ran in %.1fs\n", time.Since(t1).Seconds())
	return code
}

type prefixWriter string

func (p prefixWriter) Write(b []byte) (int, error) {
	fmt.Fprint(os.Stderr, string(p)+string(b))
	return len(b), nil
}

func prefixed(p string) prefixWriter { return prefixWriter(p) }

// needCluster skips cluster tests in -short mode.
func needCluster(t *testing.T) {
	t.Helper()
	if kube == nil {
		t.Skip("-short: no cluster")
	}
}
