package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/pkg/inject"
)

// Config is secctx's whole configuration. It is read strictly from YAML
// (unknown or repeated keys are errors); flags then override single fields.
type Config struct {
	// Port is the webhook's HTTPS port.
	Port int `json:"port"`
	// CertDir holds tls.crt and tls.key; they are reloaded when they change.
	CertDir string `json:"certDir"`
	// MetricsBindAddress serves /metrics; "0" turns it off.
	MetricsBindAddress string `json:"metricsBindAddress"`
	// HealthProbeBindAddress serves /healthz and /readyz; "0" turns it off.
	HealthProbeBindAddress string `json:"healthProbeBindAddress"`
	// EnableHTTP2 offers HTTP/2 to clients; off by default, as kubebuilder
	// projects do since the HTTP/2 rapid-reset advisories.
	EnableHTTP2 bool `json:"enableHTTP2"`
	// LogLevel is debug, info or error.
	LogLevel string `json:"logLevel"`
	// Inject is the layout of what is injected.
	Inject inject.Config `json:"inject"`
}

// DefaultConfig returns the defaults, spelled as controller-runtime projects do.
func DefaultConfig() Config {
	return Config{
		Port:                   9443,
		CertDir:                "/tmp/k8s-webhook-server/serving-certs",
		MetricsBindAddress:     ":8080",
		HealthProbeBindAddress: ":8081",
		LogLevel:               "info",
		Inject:                 inject.DefaultConfig(),
	}
}

// LoadConfig reads a YAML file over the defaults, strictly, and validates it.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	j, err := yaml.YAMLToJSONStrict(b) // refuses repeated keys
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if len(bytes.TrimSpace(j)) == 0 || string(bytes.TrimSpace(j)) == "null" {
		return cfg, nil
	}
	strict, err := kjson.UnmarshalStrict(j, &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if len(strict) > 0 {
		return cfg, fmt.Errorf("config %s: %w", path, errors.Join(strict...))
	}
	return cfg, nil
}

// Validate checks every field and reports all that are wrong.
func (c Config) Validate() error {
	var errs []error
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: must be 1-65535", c.Port))
	}
	if c.CertDir == "" {
		errs = append(errs, errors.New("certDir: required"))
	}
	for name, addr := range map[string]string{"metricsBindAddress": c.MetricsBindAddress, "healthProbeBindAddress": c.HealthProbeBindAddress} {
		if addr == "0" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: must be host:port, :port or 0 to turn it off", name, addr))
		}
	}
	if _, ok := logLevels[c.LogLevel]; !ok {
		errs = append(errs, fmt.Errorf("logLevel %q: must be debug, info or error", c.LogLevel))
	}
	if err := c.Inject.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
