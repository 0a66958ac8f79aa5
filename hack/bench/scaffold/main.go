// Command scaffold is the fourth comparison server of hack/bench: a no-op pod
// Defaulter wired the way `kubebuilder init` + `kubebuilder create webhook`
// scaffold cmd/main.go (kubebuilder v4): a manager with an API client and
// cache, /metrics over HTTPS behind controller-runtime's authentication and
// authorization filter, health probes, the webhook's certificate watched.
// It is a binary of its own because the resident pages of a Go binary grow
// with everything linked into it: built into the reference servers' binary,
// it would have made the plain no-op look bigger.
//
// Usage: scaffold --kubeconfig FILE --webhook-port PORT --webhook-cert-path DIR
// [--metrics-bind-address :8443] [--health-probe-bind-address :8081]
//
// The bench leaves /metrics off, as it does for secctx: the filter is linked
// either way, and no client would scrape during the measurement.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
}

// podDefaulter changes nothing, like the reference servers' no-op.
type podDefaulter struct{}

func (podDefaulter) Default(context.Context, *corev1.Pod) error { return nil }

func main() {
	var metricsAddr, probeAddr, webhookCertPath string
	var webhookPort int
	var secureMetrics, enableLeaderElection bool
	flag.StringVar(&metricsAddr, "metrics-bind-address", "0", `the address /metrics is served on; "0", the scaffold's default, turns it off (its kustomize patch sets :8443)`)
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "the address the probe endpoint binds to")
	flag.BoolVar(&secureMetrics, "metrics-secure", true, "serve /metrics over HTTPS behind authentication and authorization")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false, "leader election (off: the bench runs one replica out of cluster)")
	flag.StringVar(&webhookCertPath, "webhook-cert-path", "", "the directory of tls.crt and tls.key")
	flag.IntVar(&webhookPort, "webhook-port", 9443, "the webhook's port")
	opts := zap.Options{Development: true}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	// HTTP/2 off, as the scaffold has it (CVE-2023-44487, CVE-2023-39325).
	tlsOpts := []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }}

	watcher, err := certwatcher.New(filepath.Join(webhookCertPath, "tls.crt"), filepath.Join(webhookCertPath, "tls.key"))
	if err != nil {
		setupLog.Error(err, "webhook certificate watcher")
		os.Exit(1)
	}
	webhookTLSOpts := append(tlsOpts, func(c *tls.Config) { c.GetCertificate = watcher.GetCertificate })
	webhookServer := webhook.NewServer(webhook.Options{Port: webhookPort, TLSOpts: webhookTLSOpts})

	metrics := metricsserver.Options{BindAddress: metricsAddr, SecureServing: secureMetrics, TLSOpts: tlsOpts}
	if secureMetrics {
		metrics.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metrics,
		WebhookServer:          webhookServer,
		HealthProbeBindAddress: probeAddr,
		LeaderElection:         enableLeaderElection,
		LeaderElectionID:       "bench.secctx.dev",
	})
	if err != nil {
		setupLog.Error(err, "unable to start manager")
		os.Exit(1)
	}
	// The bench sends every server to /mutate-v1-pod; the builder's own path
	// for core pods would be /mutate--v1-pod.
	if err := ctrl.NewWebhookManagedBy(mgr, &corev1.Pod{}).WithDefaulter(podDefaulter{}).WithDefaulterCustomPath("/mutate-v1-pod").Complete(); err != nil {
		setupLog.Error(err, "unable to create webhook", "webhook", "Pod")
		os.Exit(1)
	}
	if err := mgr.Add(watcher); err != nil {
		setupLog.Error(err, "unable to add webhook certificate watcher to manager")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "unable to set up ready check")
		os.Exit(1)
	}
	setupLog.Info("starting manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "problem running manager")
		os.Exit(1)
	}
}
