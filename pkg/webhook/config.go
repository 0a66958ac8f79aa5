package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/pkg/inject"
)

// The config file's version, as Kubernetes components version theirs.
const (
	ConfigAPIVersion = "config.secctx.dev/v1alpha1"
	ConfigKind       = "SecctxConfiguration"
)

// configHeader is what a config file must start with.
const configHeader = "apiVersion: " + ConfigAPIVersion + "\nkind: " + ConfigKind

// Config is secctx's whole configuration. It is read strictly from YAML
// (unknown or repeated keys are errors); flags then override single fields.
type Config struct {
	// APIVersion and Kind name the file's format: config.secctx.dev/v1alpha1,
	// SecctxConfiguration.
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// Port is the webhook's HTTPS port.
	Port int `json:"port"`
	// CertDir holds tls.crt and tls.key; they are reloaded when they change.
	CertDir string `json:"certDir"`
	// MetricsBindAddress serves /metrics; "0" turns it off.
	MetricsBindAddress string `json:"metricsBindAddress"`
	// MetricsSecure serves /metrics over HTTPS to clients whose token may
	// GET /metrics (TokenReview and SubjectAccessReview); off, over plain
	// HTTP to anyone who reaches the port.
	MetricsSecure bool `json:"metricsSecure"`
	// HealthProbeBindAddress serves /healthz and /readyz; "0" turns it off.
	HealthProbeBindAddress string `json:"healthProbeBindAddress"`
	// PprofBindAddress serves net/http/pprof for profiling; "0" (the
	// default) turns it off. Bind it to localhost only.
	PprofBindAddress string `json:"pprofBindAddress,omitempty"`
	// EnableHTTP2 offers HTTP/2 to clients; off by default, as kubebuilder
	// projects do since the HTTP/2 rapid-reset advisories.
	EnableHTTP2 bool `json:"enableHTTP2"`
	// LogLevel is debug, info or error.
	LogLevel string `json:"logLevel"`
	// Inject is the layout of what is injected.
	Inject inject.Config `json:"inject"`
	// Certificates says where the serving certificate comes from.
	Certificates CertificatesConfig `json:"certificates"`
	// Policy is how SecurityContextPolicies apply (docs/policy.md).
	Policy PolicyConfig `json:"policy"`
	// ReferenceChecks is off (the default), warn or deny: whether a
	// Kubernetes Secret or key a pod refers to that does not exist is an
	// admission warning or a denial. On, secctx needs get on Secrets
	// (docs/policy.md).
	ReferenceChecks string `json:"referenceChecks"`
}

// Certificate modes.
const (
	// CertModeSelf: secctx makes its own CA and serving certificate, keeps
	// them in one Secret in its namespace, writes the CA into the
	// MutatingWebhookConfiguration and rotates them (cert-controller).
	CertModeSelf = "self"
	// CertModeCertManager: cert-manager issues the Secret and injects the
	// CA; secctx serves the mounted files.
	CertModeCertManager = "cert-manager"
	// CertModeProvided: the user provides the Secret and the CA bundle;
	// secctx serves the mounted files.
	CertModeProvided = "provided"
)

// CertificatesConfig is where the serving certificate comes from. In every
// mode the files in CertDir are reloaded when they change.
type CertificatesConfig struct {
	// Mode is self, cert-manager or provided.
	Mode string `json:"mode"`
	// The rest applies to self mode only.
	// Namespace is secctx's own namespace, where the Secret is.
	Namespace string `json:"namespace,omitempty"`
	// SecretName is the Secret holding ca.crt, ca.key, tls.crt and tls.key.
	SecretName string `json:"secretName,omitempty"`
	// ServiceName is the webhook's Service; the certificate is for
	// <serviceName>.<namespace>.svc.
	ServiceName string `json:"serviceName,omitempty"`
	// WebhookConfigurationName is the MutatingWebhookConfiguration whose
	// caBundle secctx keeps current.
	WebhookConfigurationName string `json:"webhookConfigurationName,omitempty"`
	// CAValidity and CertValidity are how long new certificates last;
	// RenewBefore is how long before expiry they are replaced, and
	// CheckInterval how often that is checked (besides every Secret change).
	CAValidity    metav1.Duration `json:"caValidity,omitempty"`
	CertValidity  metav1.Duration `json:"certValidity,omitempty"`
	RenewBefore   metav1.Duration `json:"renewBefore,omitempty"`
	CheckInterval metav1.Duration `json:"checkInterval,omitempty"`
}

// DefaultConfig returns the defaults, spelled as controller-runtime projects do.
func DefaultConfig() Config {
	return Config{
		APIVersion:             ConfigAPIVersion,
		Kind:                   ConfigKind,
		Port:                   9443,
		CertDir:                "/tmp/k8s-webhook-server/serving-certs",
		MetricsBindAddress:     ":8443",
		MetricsSecure:          true,
		HealthProbeBindAddress: ":8081",
		PprofBindAddress:       "0",
		LogLevel:               "info",
		Inject:                 inject.DefaultConfig(),
		Policy:                 PolicyConfig{Mode: PolicyOff},
		ReferenceChecks:        RefChecksOff,
		Certificates: CertificatesConfig{
			// A bare `secctx serve` serves the files in CertDir; the chart
			// and config/ turn on self mode.
			Mode:          CertModeProvided,
			CAValidity:    metav1.Duration{Duration: 10 * 365 * 24 * time.Hour},
			CertValidity:  metav1.Duration{Duration: 365 * 24 * time.Hour},
			RenewBefore:   metav1.Duration{Duration: 90 * 24 * time.Hour},
			CheckInterval: metav1.Duration{Duration: 12 * time.Hour},
		},
	}
}

// LoadConfig reads a YAML file over the defaults, strictly. The file must
// say which format it is in (apiVersion and kind), so that a later version
// can change the format without misreading an older file.
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
	var header struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if t := bytes.TrimSpace(j); len(t) > 0 && t[0] == '{' {
		_ = json.Unmarshal(j, &header) // a bad file is reported below
	}
	if err := checkHeader(header.APIVersion, header.Kind); err != nil {
		return cfg, fmt.Errorf("config %s: %w; start the file with:\n%s", path, err, configHeader)
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

// checkHeader refuses a format other than this version's.
func checkHeader(apiVersion, kind string) error {
	if apiVersion != ConfigAPIVersion || kind != ConfigKind {
		return fmt.Errorf("apiVersion %q, kind %q: must be %s, %s", apiVersion, kind, ConfigAPIVersion, ConfigKind)
	}
	return nil
}

// Validate checks every field and reports all that are wrong.
func (c Config) Validate() error {
	var errs []error
	if err := checkHeader(c.APIVersion, c.Kind); err != nil {
		errs = append(errs, err)
	}
	if c.Port < 1 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: must be 1-65535", c.Port))
	}
	if c.CertDir == "" {
		errs = append(errs, errors.New("certDir: required"))
	}
	for name, addr := range map[string]string{"metricsBindAddress": c.MetricsBindAddress, "healthProbeBindAddress": c.HealthProbeBindAddress, "pprofBindAddress": c.PprofBindAddress} {
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
	errs = append(errs, c.Certificates.validate())
	switch c.Policy.Mode {
	case PolicyOff, PolicyAudit, PolicyEnforce, "":
	default:
		errs = append(errs, fmt.Errorf("policy.mode %q: must be off, audit or enforce", c.Policy.Mode))
	}
	switch c.ReferenceChecks {
	case RefChecksOff, RefChecksWarn, RefChecksDeny, "":
	default:
		errs = append(errs, fmt.Errorf("referenceChecks %q: must be off, warn or deny", c.ReferenceChecks))
	}
	return errors.Join(errs...)
}

func (c CertificatesConfig) validate() error {
	var errs []error
	switch c.Mode {
	case CertModeProvided, CertModeCertManager:
		return nil
	case CertModeSelf:
	default:
		return fmt.Errorf("certificates.mode %q: must be self, cert-manager or provided", c.Mode)
	}
	for name, v := range map[string]string{
		"namespace": c.Namespace, "secretName": c.SecretName, "serviceName": c.ServiceName,
		"webhookConfigurationName": c.WebhookConfigurationName,
	} {
		if v == "" {
			errs = append(errs, fmt.Errorf("certificates.%s: required when mode is self", name))
		}
	}
	for name, d := range map[string]time.Duration{
		"caValidity": c.CAValidity.Duration, "certValidity": c.CertValidity.Duration,
		"renewBefore": c.RenewBefore.Duration, "checkInterval": c.CheckInterval.Duration,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("certificates.%s %s: must be positive", name, d))
		}
	}
	if c.RenewBefore.Duration >= c.CertValidity.Duration {
		errs = append(errs, fmt.Errorf("certificates.renewBefore %s: must be shorter than certValidity %s", c.RenewBefore.Duration, c.CertValidity.Duration))
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errors.Join(errs...)
}
