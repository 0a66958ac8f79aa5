package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/inject"
)

// NewWebhookServer returns the HTTPS server with the pod webhook registered.
// It serves CertDir's tls.crt and tls.key and reloads them when they change.
func NewWebhookServer(cfg Config, mutator *PodMutator) webhook.Server {
	srv := webhook.NewServer(webhook.Options{
		Port:    cfg.Port,
		CertDir: cfg.CertDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.MinVersion = tls.VersionTLS12
			if !cfg.EnableHTTP2 {
				// As kubebuilder scaffolds: HTTP/2 stays off unless asked
				// for (CVE-2023-44487, CVE-2023-39325).
				c.NextProtos = []string{"http/1.1"}
			}
		}},
	})
	srv.Register(MutatePath, mutator)
	return srv
}

// Run serves the webhook until ctx is done, then shuts down gracefully:
// the HTTPS server stops taking connections and finishes the requests it has.
func Run(ctx context.Context, cfg Config, restCfg *rest.Config, log logr.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	ctrl.SetLogger(log)
	// Only the groups secctx reads and writes through the manager: service
	// accounts, namespaces, Secrets and events; its webhook configuration
	// (self-managed certificates); the lease; SecurityContextPolicies. All of
	// client-go's groups were a second copy of its global scheme's tables,
	// half a megabyte of heap for nothing.
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, admissionregistrationv1.AddToScheme, coordinationv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(scheme); err != nil {
			return fmt.Errorf("build scheme: %w", err)
		}
	}
	metrics := metricsserver.Options{BindAddress: cfg.MetricsBindAddress}
	if cfg.MetricsSecure {
		// HTTPS, with the client's token checked by a TokenReview and its
		// right to GET /metrics by a SubjectAccessReview, as kubebuilder
		// projects do. The certificate is made at start.
		metrics.SecureServing = true
		metrics.FilterProvider = MetricsAuth
	}
	opts := ctrl.Options{
		Scheme: scheme,
		Logger: log,
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.ServiceAccount{}: {Transform: trimServiceAccount},
		}},
		Metrics:                metrics,
		HealthProbeBindAddress: cfg.HealthProbeBindAddress,
		PprofBindAddress:       cfg.PprofBindAddress,
	}
	if cfg.Certificates.Mode == CertModeSelf {
		// One replica rotates the certificate (see addSelfManagedCerts);
		// the others serve. The lease is given up on shutdown, so that a
		// rolling restart hands it over at once.
		opts.LeaderElection = true
		opts.LeaderElectionID = cfg.Certificates.SecretName + "-rotation"
		opts.LeaderElectionNamespace = cfg.Certificates.Namespace
		opts.LeaderElectionReleaseOnCancel = true
	}
	if cfg.Policy.Mode == PolicyAudit || cfg.Policy.Mode == PolicyEnforce {
		opts.Cache.ByObject[&corev1.Namespace{}] = cache.ByObject{Transform: trimNamespace}
	}
	mgr, err := ctrl.NewManager(restCfg, opts)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	// Service accounts are cached trimmed to what injection reads.
	saInformer, err := mgr.GetCache().GetInformer(ctx, &corev1.ServiceAccount{})
	if err != nil {
		return fmt.Errorf("watch service accounts: %w", err)
	}
	if cfg.Inject.Agent.NativeSidecars == inject.NativeSidecarsAuto || cfg.Inject.Agent.NativeSidecars == "" {
		cfg.Inject.Agent.NativeSidecars, err = nativeSidecars(restCfg)
		if err != nil {
			return err
		}
		log.Info("native sidecars", "supported", cfg.Inject.Agent.NativeSidecars)
	}
	injector, err := inject.New(cfg.Inject, &ServiceAccountLookup{Cache: mgr.GetCache(), API: mgr.GetAPIReader()})
	if err != nil {
		return err
	}
	mutator, err := NewPodMutator(injector, log.WithName("pod-mutator"), ctrlmetrics.Registry)
	if err != nil {
		return err
	}
	// Policies and namespaces are watched only when policies apply: with
	// mode off the CRD need not be installed.
	var policyInformers []cache.Informer
	if cfg.Policy.Mode == PolicyAudit || cfg.Policy.Mode == PolicyEnforce {
		for _, obj := range []client.Object{&v1alpha1.SecurityContextPolicy{}, &corev1.Namespace{}} {
			inf, err := mgr.GetCache().GetInformer(ctx, obj)
			if err != nil {
				return fmt.Errorf("watch %T: %w", obj, err)
			}
			policyInformers = append(policyInformers, inf)
		}
		mutator.WithPolicy(cfg.Policy.Mode, CachedPolicies{Reader: mgr.GetCache()})
		// Bounds are limits, not allowances: audit mode applies them too.
		injector.WithRefreshBounds(PolicyRefreshBounds{Source: CachedPolicies{Reader: mgr.GetCache()}})
		log.Info("SecurityContextPolicies apply", "mode", cfg.Policy.Mode)
	}
	// Secrets are read on demand, never cached (APISecretKeys).
	if cfg.ReferenceChecks == RefChecksWarn || cfg.ReferenceChecks == RefChecksDeny {
		mutator.WithReferenceChecks(cfg.ReferenceChecks, APISecretKeys{Reader: mgr.GetAPIReader()})
		log.Info("Secret references are checked", "referenceChecks", cfg.ReferenceChecks)
	}
	// The mutator needs the manager's cache, so the server is added after
	// the manager is made; the manager starts it before the caches.
	srv := NewWebhookServer(cfg, mutator)
	var runnable manager.Runnable = srv
	certsReady := healthz.Checker(healthz.Ping)
	if cfg.Certificates.Mode == CertModeSelf {
		var written <-chan struct{}
		if written, certsReady, err = addSelfManagedCerts(mgr, cfg, log.WithName("certificates")); err != nil {
			return err
		}
		runnable = gatedServer{Server: srv, ready: written}
	}
	if err := mgr.Add(runnable); err != nil {
		return fmt.Errorf("add webhook server: %w", err)
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("certificates", certsReady); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", srv.StartedChecker()); err != nil {
		return err
	}
	var synced atomic.Bool
	if err := mgr.AddReadyzCheck("serviceaccounts", func(*http.Request) error {
		if synced.Load() || saInformer.HasSynced() {
			synced.Store(true)
			return nil
		}
		return errors.New("service account cache not synced")
	}); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("policies", func(*http.Request) error {
		for _, inf := range policyInformers {
			if !inf.HasSynced() {
				return errors.New("SecurityContextPolicy and namespace caches not synced")
			}
		}
		return nil
	}); err != nil {
		return err
	}
	log.Info("starting", "port", cfg.Port, "certDir", cfg.CertDir, "path", MutatePath, "certificates", cfg.Certificates.Mode)
	return mgr.Start(ctx)
}

// nativeSidecars asks the API server's version: init containers with
// restartPolicy: Always are on by default from Kubernetes 1.29. An older
// server drops the field, and the token sidecar would then block the pod.
func nativeSidecars(restCfg *rest.Config) (string, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(restCfg)
	if err != nil {
		return "", fmt.Errorf("discovery client: %w", err)
	}
	v, err := dc.ServerVersion()
	if err != nil {
		return "", fmt.Errorf("get the API server's version: %w", err)
	}
	sv, err := version.ParseGeneric(v.GitVersion)
	if err != nil {
		return "", fmt.Errorf("parse the API server's version %q: %w", v.GitVersion, err)
	}
	if sv.AtLeast(version.MajorMinor(1, 29)) {
		return inject.NativeSidecarsTrue, nil
	}
	return inject.NativeSidecarsFalse, nil
}
