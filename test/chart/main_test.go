// Package chart installs charts/secctx into a real cluster with Helm's Go
// SDK: server-side dry runs of every mode, availability while certificates
// rotate and replicas restart, upgrade and uninstall.
package chart

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
)

var kube *cluster.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) (code int) {
	if testing.Short() {
		return m.Run()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	kube, err = framework.Up(ctx, framework.Options{Mode: cluster.Full, Progress: prefix("chart: ")})
	if err != nil {
		fmt.Fprintf(os.Stderr, "chart: start cluster: %v\n", err)
		return 1
	}
	defer func() {
		if code != 0 {
			dst := filepath.Join(framework.Root(), "_artifacts", "chart-"+time.Now().Format("20060102-150405"))
			_ = kube.CollectArtifacts(context.Background(), dst)
			fmt.Fprintf(os.Stderr, "chart: logs of every component are in %s\n", dst)
		}
		if err := kube.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "chart: stop cluster: %v\n", err)
			code = 1
		}
	}()
	return m.Run()
}

type prefix string

func (p prefix) Write(b []byte) (int, error) {
	fmt.Fprint(os.Stderr, string(p)+string(b))
	return len(b), nil
}

func needCluster(t *testing.T) {
	t.Helper()
	if kube == nil {
		t.Skip("-short: no cluster")
	}
}
