package inject

import (
	"fmt"
	"path"
	"regexp"

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
}

// DefaultConfig returns flytekit's defaults: _FSEC_, /etc/flyte/secrets, ANY as FILE.
func DefaultConfig() Config {
	return Config{
		EnvVarPrefix: "_FSEC_",
		SecretsDir:   "/etc/flyte/secrets",
		AnyMountAs:   securityctx.MountFile,
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
	return nil
}
