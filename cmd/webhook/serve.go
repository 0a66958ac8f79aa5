package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/secctx/secctx/pkg/webhook"
)

func newServeCommand() *cobra.Command {
	def := webhook.DefaultConfig()
	var (
		configPath, kubeconfig string
		flags                  = def
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the mutating admission webhook",
		Long: `Serve the pod webhook over HTTPS at /mutate-v1-pod, with /healthz and /readyz
on the health probe address and Prometheus /metrics on the metrics address.
The serving certificate is read from --cert-dir (tls.crt, tls.key) and reloaded
when it changes. Settings come from --config (YAML, strict); flags override it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(configPath)
			if err != nil {
				return err
			}
			fs := cmd.Flags()
			for name, apply := range map[string]func(){
				"port":                      func() { cfg.Port = flags.Port },
				"cert-dir":                  func() { cfg.CertDir = flags.CertDir },
				"metrics-bind-address":      func() { cfg.MetricsBindAddress = flags.MetricsBindAddress },
				"health-probe-bind-address": func() { cfg.HealthProbeBindAddress = flags.HealthProbeBindAddress },
				"log-level":                 func() { cfg.LogLevel = flags.LogLevel },
				"enable-http2":              func() { cfg.EnableHTTP2 = flags.EnableHTTP2 },
				"metrics-secure":            func() { cfg.MetricsSecure = flags.MetricsSecure },
				"flyte":                     func() { cfg.Inject.Flyte.Enabled = flags.Inject.Flyte.Enabled },
				"agent-image":               func() { cfg.Inject.Agent.Image = flags.Inject.Agent.Image },
			} {
				if fs.Changed(name) {
					apply()
				}
			}
			if err := cfg.Validate(); err != nil {
				return fmt.Errorf("config: %w", err)
			}
			log, err := webhook.NewLogger(cfg.LogLevel, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			restCfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			return webhook.Run(ctrl.SetupSignalHandler(), cfg, restCfg, log)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&configPath, "config", "", "YAML config file (see docs/configuration.md)")
	fs.IntVar(&flags.Port, "port", def.Port, "HTTPS port of the webhook")
	fs.StringVar(&flags.CertDir, "cert-dir", def.CertDir, "directory with tls.crt and tls.key")
	fs.StringVar(&flags.MetricsBindAddress, "metrics-bind-address", def.MetricsBindAddress, `address of /metrics; "0" turns it off`)
	fs.StringVar(&flags.HealthProbeBindAddress, "health-probe-bind-address", def.HealthProbeBindAddress, `address of /healthz and /readyz; "0" turns them off`)
	fs.StringVar(&flags.LogLevel, "log-level", def.LogLevel, "debug, info or error")
	fs.BoolVar(&flags.EnableHTTP2, "enable-http2", def.EnableHTTP2, "offer HTTP/2 to the API server")
	fs.BoolVar(&flags.MetricsSecure, "metrics-secure", def.MetricsSecure, "serve /metrics over HTTPS to authorized clients only (false: plain HTTP)")
	fs.BoolVar(&flags.Inject.Flyte.Enabled, "flyte", def.Inject.Flyte.Enabled, `Flyte mode: honour flyte.secrets/s<N> annotations on pods labelled inject-flyte-secrets: "true"`)
	fs.StringVar(&flags.Inject.Agent.Image, "agent-image", def.Inject.Agent.Image, "secctx's own image, run as the token sidecar in pods with tokens (config inject.agent.image)")
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig to use outside a cluster (default: in-cluster, then $KUBECONFIG, then ~/.kube/config)")
	return cmd
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	c, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("find the cluster: %w", err)
	}
	return c, nil
}
