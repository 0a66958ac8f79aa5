// Command bench is `make bench`: it measures secctx on this machine and
// writes the results into docs/performance.md, between the bench:start and
// bench:end markers.
//
//  1. Go benchmarks of the admission handler (1, 3 and 20 secrets).
//  2. HTTPS load with vegeta's library: `secctx serve`, a no-op
//     controller-runtime Defaulter webhook, a bare net/http TLS handler and
//     the same no-op as kubebuilder scaffolds it (manager, API client,
//     secure metrics; ./scaffold), each pinned to core 0 with the load
//     generator pinned to core 1, same certificate, keep-alive, HTTP/1.1.
//     Saturation throughput, server CPU per request, p50/p99/p99.9 at a
//     fixed 500 req/s, and each server's peak RSS.
//  3. Pod creation through a real kube-apiserver (the harness's control-plane
//     mode): 1,000 labelled pods from 8 concurrent clients with no webhook,
//     the no-op, the patch floor and secctx registered.
//  4. secctx's peak RSS under that load, and its time from start to ready.
//
// It needs root (the cluster) and at least 2 cores.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if child() {
		return
	}
	var o options
	flag.StringVar(&o.out, "out", "docs/performance.md", "the page to write the results into")
	flag.IntVar(&o.rounds, "rounds", 3, "HTTPS and API-server rounds per target")
	flag.IntVar(&o.seconds, "seconds", 10, "length of each HTTPS measurement")
	flag.IntVar(&o.pods, "pods", 1000, "pods per API-server run")
	flag.BoolVar(&o.goBench, "gobench", true, "run the Go benchmarks of the handler")
	flag.StringVar(&o.goBenchTime, "gobench-time", "1s", "-benchtime of the Go benchmarks")
	flag.IntVar(&o.goBenchCount, "gobench-count", 6, "-count of the Go benchmarks (the median is reported)")
	flag.StringVar(&o.profile, "profile", "", "write CPU profiles of secctx (HTTPS saturation) and kube-apiserver (pods with secctx) into this directory")
	flag.StringVar(&o.only, "only", "", "run only these sections (comma-separated: go, start, https, api) and print them instead of writing the page")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// child runs the load generator, which bench starts as a process of its own
// binary so that it can be pinned to a core. It reports whether os.Args
// asked for it. The reference servers are a binary of their own
// (./servers), and the scaffolded no-op another (./scaffold), built at start.
func child() bool {
	if len(os.Args) < 2 {
		return false
	}
	var err error
	switch os.Args[1] {
	case "attack":
		err = attack(os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6])
	default:
		return false
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	return true
}
