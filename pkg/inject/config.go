package inject

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"

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
	// namespace) or vault (HashiCorp Vault, through the Vault Agent
	// Injector's annotations).
	Backend string `json:"backend"`
	// Vault configures the vault backend.
	Vault VaultConfig `json:"vault"`
}

// Backends.
const (
	BackendKubernetes = "kubernetes"
	BackendVault      = "vault"
)

// VaultConfig is the vault backend's settings, as Flyte's Vault mode has them.
type VaultConfig struct {
	// Role is the Vault Kubernetes-auth role the agent logs in with.
	Role string `json:"role"`
	// KVVersion, 1 or 2, is the KV engine for a secret whose groupVersion is
	// not kv1, kv2 or db.
	KVVersion string `json:"kvVersion"`
	// Annotations are more Vault Agent Injector annotations to put on every
	// pod, e.g. vault.hashicorp.com/agent-limits-cpu.
	Annotations map[string]string `json:"annotations,omitempty"`
}

// DefaultConfig returns flytekit's defaults: _FSEC_, /etc/flyte/secrets, ANY as FILE.
func DefaultConfig() Config {
	return Config{
		EnvVarPrefix: "_FSEC_",
		SecretsDir:   "/etc/flyte/secrets",
		AnyMountAs:   securityctx.MountFile,
		Backend:      BackendKubernetes,
		Vault:        VaultConfig{Role: "flyte", KVVersion: "2"},
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
	switch c.Backend {
	case BackendKubernetes, "": // empty: the default, for Configs built in code
	case BackendVault:
		if c.Vault.Role == "" {
			return errors.New("inject.vault.role: required with backend vault")
		}
		if c.Vault.KVVersion != "1" && c.Vault.KVVersion != "2" {
			return fmt.Errorf("inject.vault.kvVersion %q: must be 1 or 2", c.Vault.KVVersion)
		}
		for k := range c.Vault.Annotations {
			if !strings.HasPrefix(k, vaultPrefix) {
				return fmt.Errorf("inject.vault.annotations %q: must start with %s", k, vaultPrefix)
			}
			for _, own := range []string{vaultSecret, vaultFile, vaultTemplate} {
				if strings.HasPrefix(k, own) {
					return fmt.Errorf("inject.vault.annotations %q: secctx sets %s<id> for each secret", k, own)
				}
			}
		}
	default:
		return fmt.Errorf("inject.backend %q: must be kubernetes or vault", c.Backend)
	}
	return nil
}
