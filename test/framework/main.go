package framework

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/secctx/secctx/test/framework/cluster"
)

// Prefix writes progress lines to stderr, each after a prefix.
type Prefix string

func (p Prefix) Write(b []byte) (int, error) {
	fmt.Fprint(os.Stderr, string(p)+string(b))
	return len(b), nil
}

// WithCluster is the body of a cluster suite's TestMain: it brings a cluster
// up (o.Progress defaults to name as a prefix), calls tests with it, and on
// the way out copies every component's log to _artifacts/<name>-<time>/ if
// tests returned non-zero, then stops the cluster (unless keep) and fails if
// the machine was not left as it was found. SIGINT and SIGTERM still tear
// the cluster down. It returns the exit code.
func WithCluster(name string, o Options, keep bool, tests func(ctx context.Context, c *cluster.Cluster) int) (code int) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.Progress == nil {
		o.Progress = Prefix(name + ": ")
	}
	t0 := time.Now()
	c, err := Up(ctx, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: start cluster: %v\n", name, err)
		return 1
	}
	defer func() {
		if code != 0 {
			dst := filepath.Join(Root(), "_artifacts", name+"-"+time.Now().Format("20060102-150405"))
			if err := c.CollectArtifacts(context.Background(), dst); err != nil {
				fmt.Fprintf(os.Stderr, "%s: collect artifacts: %v\n", name, err)
			}
			fmt.Fprintf(os.Stderr, "%s: logs of every component are in %s\n", name, dst)
		}
		if keep {
			fmt.Fprintf(os.Stderr, "%s: cluster left running; kubeconfig %s\n", name, c.Kubeconfig)
			return
		}
		// Stop fails if the machine is not as Start found it.
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "%s: stop cluster: %v\n", name, err)
			code = 1
		}
		fmt.Fprintf(os.Stderr, "%s: whole suite with cluster up and down: %.1fs\n", name, time.Since(t0).Seconds())
	}()
	return tests(ctx, c)
}
