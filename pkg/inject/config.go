package inject

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secctx/secctx/pkg/agentapi"
	"github.com/secctx/secctx/pkg/securityctx"
)

// Config is how secrets are laid out in the pod. The defaults follow
// flytekit's lookup rules, so Flyte task code works unchanged.
type Config struct {
	// EnvVarPrefix starts every secret env var name (FLYTE_SECRETS_ENV_PREFIX).
	EnvVarPrefix string `json:"envVarPrefix"`
	// SecretsDir is where secret files go (FLYTE_SECRETS_DEFAULT_DIR).
	SecretsDir string `json:"secretsDir"`
	// AnyMountAs is what a secret with mountRequirement ANY becomes: FILE or ENV_VAR.
	AnyMountAs securityctx.MountType `json:"anyMountAs"`
	// Backend is where secrets come from: kubernetes (Secrets in the pod's
	// namespace), vault (HashiCorp Vault: through the Vault Agent
	// Injector's annotations, or secctx's own fetch) or aws (AWS Secrets
	// Manager). docs/backends.md.
	Backend string `json:"backend"`
	// Backends routes secrets to stores by their group, first match wins;
	// Backend serves the secrets no rule matches (docs/backends.md).
	Backends []BackendRule `json:"backends,omitempty"`
	// Vault configures the vault backend.
	Vault VaultConfig `json:"vault"`
	// AWS configures the aws backend.
	AWS AWSConfig `json:"aws"`
	// GCP configures the gcp backend (Google Secret Manager).
	GCP GCPConfig `json:"gcp"`
	// Azure configures the azure backend (Azure Key Vault).
	Azure AzureConfig `json:"azure"`
	// Flyte turns on Flyte mode: pods labelled inject-flyte-secrets: "true"
	// have their flyte.secrets/s<N> annotations honoured. Off, those
	// annotations are not secctx's and are left alone.
	Flyte FlyteConfig `json:"flyte"`
	// Limits cap the work one pod can ask for.
	Limits Limits `json:"limits"`
	// Tokens lays out OAuth2 tokens (docs/tokens.md).
	Tokens TokensConfig `json:"tokens"`
	// Agent is the container secctx adds to pods with tokens: the token
	// sidecar and the exec wrapper's installer.
	Agent AgentConfig `json:"agent"`
	// IAM is how runAs.iamRole reaches the pod (docs/identity.md).
	IAM IAMConfig `json:"iam"`
	// Refresh keeps fetched FILE secrets fresh while the pod runs
	// (docs/refresh.md); off by default.
	Refresh RefreshConfig `json:"refresh"`
}

// RefreshConfig is how often the sidecar reads the fetched FILE secrets
// again. A SecurityContextPolicy may make it less often in its namespaces
// (spec.refresh.minIntervalSeconds).
type RefreshConfig struct {
	// IntervalSeconds is the time between two reads of a pod's secrets;
	// 0, the default, fetches once and never again.
	IntervalSeconds int32 `json:"intervalSeconds,omitempty"`
	// Jitter spreads each refresh by up to this part of the interval
	// either way (0.1), so that the pods of a map task do not ask their
	// store at once.
	Jitter float64 `json:"jitter,omitempty"`
}

// Bounds of inject.refresh.
const (
	minRefreshSeconds = 10
	maxRefreshSeconds = 7 * 24 * 3600
	defaultJitter     = 0.1
)

func (r RefreshConfig) validate() error {
	if s := r.IntervalSeconds; s != 0 && (s < minRefreshSeconds || s > maxRefreshSeconds) {
		return fmt.Errorf("inject.refresh.intervalSeconds %d: must be between %d and %d (a week), or 0 for no refresh", s, minRefreshSeconds, maxRefreshSeconds)
	}
	if j := r.Jitter; j < 0 || j > 0.5 || j != j {
		return fmt.Errorf("inject.refresh.jitter %g: must be between 0 and 0.5 (0: the default, 0.1)", j)
	}
	return nil
}

// jitter is Jitter or its default.
func (r RefreshConfig) jitter() float64 {
	if r.Jitter == 0 {
		return defaultJitter
	}
	return r.Jitter
}

// IAMConfig is runAs.iamRole's layout.
type IAMConfig struct {
	// Mode is irsa (IAM Roles for Service Accounts: a projected
	// service-account token and the AWS SDK's web-identity env vars) or
	// annotation (the role in a pod annotation, for kube2iam and kiam).
	Mode string `json:"mode"`
	// Audience is the projected token's audience.
	Audience string `json:"audience"`
	// ExpirationSeconds is the projected token's lifetime; the kubelet
	// renews it at 80%.
	ExpirationSeconds int64 `json:"expirationSeconds"`
	// TokenDir is where the token is mounted; the file is TokenDir/token.
	TokenDir string `json:"tokenDir"`
	// Region, when set, is AWS_REGION and AWS_DEFAULT_REGION.
	Region string `json:"region,omitempty"`
	// Annotation is the annotation of annotation mode.
	Annotation string `json:"annotation"`
}

// IAM modes.
const (
	IAMModeIRSA       = "irsa"
	IAMModeAnnotation = "annotation"
)

// TokensConfig is where tokens go and which providers are trusted.
type TokensConfig struct {
	// Dir holds one file per token, named after it, in every target
	// container (read-only) and the sidecar.
	Dir string `json:"dir"`
	// HTTPHosts may serve token and discovery endpoints over plain http
	// (host or host:port, as in the URL). For test providers only.
	HTTPHosts []string `json:"httpHosts,omitempty"`
	// CABundle is PEM certificates the sidecar trusts besides the system's,
	// for a provider whose certificate a private CA signed.
	CABundle string `json:"caBundle,omitempty"`
	// AuthStyle is how clients authenticate to token endpoints: header
	// (HTTP Basic, the default) or body (client_id and client_secret in the
	// form, for providers that take nothing else). It is chosen here, once:
	// the sidecar never tries one after the other.
	AuthStyle string `json:"authStyle,omitempty"`
	// MinRefreshSeconds is the least time between two renewals of a token
	// (default 10), however short the lifetime the provider gives it.
	MinRefreshSeconds int32 `json:"minRefreshSeconds,omitempty"`
}

// AgentConfig is the agent containers'.
type AgentConfig struct {
	// Image is secctx's own image; the agent is /secctx-agent in it, and
	// the fetch /secctx-fetch.
	Image string `json:"image"`
	// ImagePullPolicy is the containers' pull policy.
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy"`
	// Resources are the sidecar's and the installer's.
	Resources corev1.ResourceRequirements `json:"resources"`
	// FetchTimeoutSeconds bounds how long the fetch (its init container,
	// or the sidecar with FetchIn sidecar) keeps retrying a store that
	// answers with transient errors (120).
	FetchTimeoutSeconds int32 `json:"fetchTimeoutSeconds"`
	// FetchIn is where secrets from a store are fetched: init, an init
	// container that fails the pod when one cannot be had (the default),
	// or sidecar, the sidecar, which the task's containers wait for and
	// whose failure their exec wrapper reports: no init container, so the
	// pod starts about half a second sooner (docs/performance.md).
	FetchIn string `json:"fetchIn"`
	// NativeSidecars says whether the API server keeps an init container's
	// restartPolicy: Always (Kubernetes 1.29 and later): auto (the webhook
	// asks the API server at start), true or false. Without them a pod with
	// tokens is denied, since its sidecar would block the pod for ever.
	NativeSidecars string `json:"nativeSidecars"`
}

// FetchIn values.
const (
	FetchInInit    = "init"
	FetchInSidecar = "sidecar"
)

// NativeSidecars values.
const (
	NativeSidecarsAuto  = "auto"
	NativeSidecarsTrue  = "true"
	NativeSidecarsFalse = "false"
)

// FlyteConfig is Flyte mode.
type FlyteConfig struct {
	Enabled bool `json:"enabled"`
}

// Limits cap what one pod can ask for; a pod beyond them is denied, naming
// the limit. A zero field means the default. The defaults are far above
// what a task needs (a handful of secrets), and keep one request's work and
// answer small: without them, a pod with 10,000 secrets took seconds and a
// 9.5 MB answer.
type Limits struct {
	// MaxSecrets is the most secrets one pod may ask for, in
	// secctx.dev/security-context and Flyte's annotations together.
	MaxSecrets int `json:"maxSecrets"`
	// MaxTokens is the most OAuth2 tokens one pod may ask for.
	MaxTokens int `json:"maxTokens"`
	// MaxContainerSecrets bounds target containers × secrets.
	MaxContainerSecrets int `json:"maxContainerSecrets"`
}

// Backends.
const (
	BackendKubernetes = "kubernetes"
	BackendVault      = "vault"
)

// VaultConfig is the vault backend's settings, as Flyte's Vault mode has them.
type VaultConfig struct {
	// Mode is injector (the Vault Agent Injector renders the files, as in
	// Flyte) or agent (secctx's fetch init container reads Vault itself).
	Mode string `json:"mode"`
	// Role is the Vault Kubernetes-auth role the agent logs in with.
	Role string `json:"role"`
	// Address is Vault's URL (agent mode), as the pods reach it.
	Address string `json:"address,omitempty"`
	// AuthPath is the Kubernetes auth method's mount (agent mode).
	AuthPath string `json:"authPath,omitempty"`
	// Namespace is the Vault Enterprise namespace (agent mode).
	Namespace string `json:"namespace,omitempty"`
	// Audience, when set, is the audience of the service-account token the
	// fetch logs in with (agent mode); empty, the API server's own, which a
	// Vault role without an audience accepts.
	Audience string `json:"audience,omitempty"`
	// CABundle is PEM certificates to trust for Vault besides the system's
	// (agent mode).
	CABundle string `json:"caBundle,omitempty"`
	// KVVersion, 1 or 2, is the KV engine for a secret whose groupVersion is
	// not kv1, kv2 or db.
	KVVersion string `json:"kvVersion"`
	// Mounts are the secret engines' mounts a secret's group may be under
	// (secret: secret/my-app and secret/data/my-app). Vault's own paths
	// (sys, auth, cubbyhole, identity) are never allowed: the reader's
	// login token, or Vault's configuration, would reach the task.
	Mounts []string `json:"mounts"`
	// Annotations are more Vault Agent Injector annotations to put on every
	// pod, e.g. vault.hashicorp.com/agent-limits-cpu.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Vault modes.
const (
	VaultModeInjector = "injector"
	VaultModeAgent    = "agent"
)

// AWSConfig is the aws backend's settings.
type AWSConfig struct {
	// SecretsManagerEndpoint and STSEndpoint, when set, replace the AWS
	// endpoints (a VPC endpoint, or an emulator in tests); http only for
	// hosts in inject.tokens.httpHosts.
	SecretsManagerEndpoint string `json:"secretsManagerEndpoint,omitempty"`
	STSEndpoint            string `json:"stsEndpoint,omitempty"`
}

// DefaultConfig returns flytekit's defaults: _FSEC_, /etc/flyte/secrets, ANY as FILE.
func DefaultConfig() Config {
	return Config{
		EnvVarPrefix: "_FSEC_",
		SecretsDir:   "/etc/flyte/secrets",
		AnyMountAs:   securityctx.MountFile,
		Backend:      BackendKubernetes,
		Vault:        VaultConfig{Mode: VaultModeInjector, Role: "flyte", KVVersion: "2", AuthPath: "kubernetes", Mounts: DefaultVaultMounts()},
		Limits:       defaultLimits,
		Tokens:       TokensConfig{Dir: defaultTokensDir, AuthStyle: agentapi.AuthStyleHeader, MinRefreshSeconds: 10},
		IAM:          defaultIAM,
		Refresh:      RefreshConfig{Jitter: defaultJitter},
		Agent: AgentConfig{
			ImagePullPolicy:     corev1.PullIfNotPresent,
			NativeSidecars:      NativeSidecarsAuto,
			FetchTimeoutSeconds: defaultFetchTimeout,
			FetchIn:             FetchInInit,
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
			},
		},
	}
}

const defaultTokensDir = "/etc/flyte/tokens"

// defaultIAM is the EKS Pod Identity Webhook's layout, so that tools and
// images made for EKS find the token where they expect it.
var defaultIAM = IAMConfig{
	Mode:              IAMModeIRSA,
	Audience:          "sts.amazonaws.com",
	ExpirationSeconds: 86400,
	TokenDir:          "/var/run/secrets/eks.amazonaws.com/serviceaccount",
	Annotation:        "iam.amazonaws.com/role",
}

// orDefaults fills the fields left empty, for Configs built in code.
func (c IAMConfig) orDefaults() IAMConfig {
	if c.Mode == "" {
		c.Mode = defaultIAM.Mode
	}
	if c.Audience == "" {
		c.Audience = defaultIAM.Audience
	}
	if c.ExpirationSeconds == 0 {
		c.ExpirationSeconds = defaultIAM.ExpirationSeconds
	}
	if c.TokenDir == "" {
		c.TokenDir = defaultIAM.TokenDir
	}
	if c.Annotation == "" {
		c.Annotation = defaultIAM.Annotation
	}
	return c
}

func (c Config) tokensDir() string {
	if c.Tokens.Dir == "" {
		return defaultTokensDir
	}
	return c.Tokens.Dir
}

var defaultLimits = Limits{MaxSecrets: 256, MaxTokens: 32, MaxContainerSecrets: 4096}

// orDefaults fills the fields left zero.
func (l Limits) orDefaults() Limits {
	or := func(v, def int) int {
		if v == 0 {
			return def
		}
		return v
	}
	return Limits{
		MaxSecrets:          or(l.MaxSecrets, defaultLimits.MaxSecrets),
		MaxTokens:           or(l.MaxTokens, defaultLimits.MaxTokens),
		MaxContainerSecrets: or(l.MaxContainerSecrets, defaultLimits.MaxContainerSecrets),
	}
}

var envPrefixRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks every field and names the ones that are wrong.
func (c Config) Validate() error {
	if !envPrefixRE.MatchString(c.EnvVarPrefix) {
		return fmt.Errorf("inject.envVarPrefix %q: must match %s", c.EnvVarPrefix, envPrefixRE)
	}
	if !path.IsAbs(c.SecretsDir) || path.Clean(c.SecretsDir) != c.SecretsDir || c.SecretsDir == "/" {
		return fmt.Errorf("inject.secretsDir %q: must be a clean absolute path other than /", c.SecretsDir)
	}
	if c.AnyMountAs != securityctx.MountFile && c.AnyMountAs != securityctx.MountEnvVar {
		return fmt.Errorf("inject.anyMountAs %q: must be FILE or ENV_VAR", c.AnyMountAs)
	}
	for _, l := range []struct {
		name string
		v    int
	}{{"maxSecrets", c.Limits.MaxSecrets}, {"maxTokens", c.Limits.MaxTokens}, {"maxContainerSecrets", c.Limits.MaxContainerSecrets}} {
		if l.v < 0 {
			return fmt.Errorf("inject.limits.%s %d: must be at least 1 (0: the default)", l.name, l.v)
		}
	}
	if d := c.Tokens.Dir; d != "" && (!path.IsAbs(d) || path.Clean(d) != d || d == "/") { // empty: the default
		return fmt.Errorf("inject.tokens.dir %q: must be a clean absolute path other than /", d)
	}
	if d := c.tokensDir(); within(d, c.SecretsDir) || within(c.SecretsDir, d) || d == c.SecretsDir {
		return fmt.Errorf("inject.tokens.dir %q: must not be inside inject.secretsDir %q, or hold it", c.Tokens.Dir, c.SecretsDir)
	}
	for _, h := range c.Tokens.HTTPHosts {
		if h == "" || strings.ContainsAny(h, "/ @?#") {
			return fmt.Errorf("inject.tokens.httpHosts %q: must be a host or host:port", h)
		}
	}
	if c.Tokens.CABundle != "" {
		if err := checkPEM(c.Tokens.CABundle); err != nil {
			return fmt.Errorf("inject.tokens.caBundle: %w", err)
		}
	}
	switch c.Tokens.AuthStyle {
	case "", agentapi.AuthStyleHeader, agentapi.AuthStyleBody:
	default:
		return fmt.Errorf("inject.tokens.authStyle %q: must be header or body", c.Tokens.AuthStyle)
	}
	if s := c.Tokens.MinRefreshSeconds; s < 0 || s > 3600 {
		return fmt.Errorf("inject.tokens.minRefreshSeconds %d: must be between 1 and 3600 (0: the default, 10)", s)
	}
	if err := c.IAM.validate(c); err != nil {
		return err
	}
	switch c.Agent.NativeSidecars {
	case NativeSidecarsAuto, NativeSidecarsTrue, NativeSidecarsFalse, "":
	default:
		return fmt.Errorf("inject.agent.nativeSidecars %q: must be auto, true or false", c.Agent.NativeSidecars)
	}
	switch c.Agent.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever, "":
	default:
		return fmt.Errorf("inject.agent.imagePullPolicy %q: must be Always, IfNotPresent or Never", c.Agent.ImagePullPolicy)
	}
	if c.Agent.FetchTimeoutSeconds < 0 || c.Agent.FetchTimeoutSeconds > 3600 {
		return fmt.Errorf("inject.agent.fetchTimeoutSeconds %d: must be between 1 and 3600 (0: the default)", c.Agent.FetchTimeoutSeconds)
	}
	switch c.Agent.FetchIn {
	case FetchInInit, "":
	case FetchInSidecar:
		if c.Agent.NativeSidecars == NativeSidecarsFalse {
			return fmt.Errorf("inject.agent.fetchIn %q: needs native sidecars (Kubernetes 1.29 and later), which inject.agent.nativeSidecars says this cluster does not run; set it to init", c.Agent.FetchIn)
		}
	default:
		return fmt.Errorf("inject.agent.fetchIn %q: must be init or sidecar", c.Agent.FetchIn)
	}
	if err := c.Refresh.validate(); err != nil {
		return err
	}
	if c.Refresh.IntervalSeconds > 0 && c.Agent.NativeSidecars == NativeSidecarsFalse {
		// Without them the sidecar would be an init container that never
		// ends, and every pod with fetched FILE secrets would hang.
		return fmt.Errorf("inject.refresh.intervalSeconds %d: needs native sidecars (Kubernetes 1.29 and later), which inject.agent.nativeSidecars says this cluster does not run; set it to 0", c.Refresh.IntervalSeconds)
	}
	if _, ok := stores[c.backend()]; !ok {
		return fmt.Errorf("inject.backend %q: must be %s", c.Backend, storeNames())
	}
	return c.validateRules()
}

// checkPEM: one or more PEM certificates and nothing else, so that the
// sidecar does not fail on them in every pod.
func checkPEM(bundle string) error {
	rest := []byte(bundle)
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("a PEM block of type %q: only CERTIFICATE blocks belong here", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
		n++
	}
	if n == 0 || len(strings.TrimSpace(string(rest))) > 0 {
		return errors.New("must be PEM certificates (-----BEGIN CERTIFICATE-----) and nothing else")
	}
	return nil
}

func (i IAMConfig) validate(c Config) error {
	i = i.orDefaults()
	switch i.Mode {
	case IAMModeIRSA, IAMModeAnnotation:
	default:
		return fmt.Errorf("inject.iam.mode %q: must be irsa or annotation", i.Mode)
	}
	// The API server's bounds for a projected token: 10 minutes to 2^32 s.
	if i.ExpirationSeconds < 600 || i.ExpirationSeconds > 1<<32 {
		return fmt.Errorf("inject.iam.expirationSeconds %d: must be at least 600 (10 minutes) and at most 4294967296", i.ExpirationSeconds)
	}
	if d := i.TokenDir; !path.IsAbs(d) || path.Clean(d) != d || d == "/" {
		return fmt.Errorf("inject.iam.tokenDir %q: must be a clean absolute path other than /", d)
	}
	for _, other := range []string{c.SecretsDir, c.tokensDir()} {
		if i.TokenDir == other || within(i.TokenDir, other) || within(other, i.TokenDir) {
			return fmt.Errorf("inject.iam.tokenDir %q: must not be inside %q or hold it", i.TokenDir, other)
		}
	}
	if msgs := validation.IsQualifiedName(i.Annotation); len(msgs) > 0 {
		return fmt.Errorf("inject.iam.annotation %q: %s", i.Annotation, strings.Join(msgs, "; "))
	}
	if i.Region != "" && !awsRegionRE.MatchString(i.Region) {
		return fmt.Errorf("inject.iam.region %q: must be an AWS region name such as us-east-1", i.Region)
	}
	return nil
}

var awsRegionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
