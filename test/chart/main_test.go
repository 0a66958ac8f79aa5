// Package chart installs charts/secctx into a real cluster with Helm's Go
// SDK: server-side dry runs of every mode, availability while certificates
// rotate and replicas restart, upgrade and uninstall.
package chart

import (
	"context"
	"flag"
	"os"
	"testing"

	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
)

var kube *cluster.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testing.Short() {
		return m.Run()
	}
	return framework.WithCluster("chart", framework.Options{Mode: cluster.Full}, false, func(_ context.Context, c *cluster.Cluster) int {
		kube = c
		return m.Run()
	})
}

func needCluster(t *testing.T) {
	t.Helper()
	if kube == nil {
		t.Skip("-short: no cluster")
	}
}
