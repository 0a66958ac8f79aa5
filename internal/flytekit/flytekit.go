// Package flytekit is flytekit's secret lookup, ported to Go for tests:
// SecretsManager.get tries the env var get_secrets_env_var names, then the
// file get_secrets_file names, with the prefix, directory and file prefix
// from FLYTE_SECRETS_ENV_PREFIX, FLYTE_SECRETS_DEFAULT_DIR and
// FLYTE_SECRETS_FILE_PREFIX when set (flytekit/configuration and
// flytekit/core/context_manager.py).
package flytekit

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Defaults flytekit uses when the env does not say otherwise.
const (
	DefaultEnvPrefix = "_FSEC_"
	DefaultDir       = "/etc/secrets"
)

// Env is a process environment.
type Env map[string]string

func (e Env) get(name, def string) string {
	if v, ok := e[name]; ok {
		return v
	}
	return def
}

// EnvVar is get_secrets_env_var: prefix + GROUP[_GROUPVERSION][_KEY], upper case.
func EnvVar(env Env, group, groupVersion, key string) string {
	n := env.get("FLYTE_SECRETS_ENV_PREFIX", DefaultEnvPrefix) + strings.ToUpper(group)
	if groupVersion != "" {
		n += "_" + strings.ToUpper(groupVersion)
	}
	if key != "" {
		n += "_" + strings.ToUpper(key)
	}
	return n
}

// File is get_secrets_file: dir/group/[groupVersion/]fileprefix+key, lower case.
func File(env Env, group, groupVersion, key string) string {
	return filepath.Join(env.get("FLYTE_SECRETS_DEFAULT_DIR", DefaultDir), strings.ToLower(group),
		strings.ToLower(groupVersion), env.get("FLYTE_SECRETS_FILE_PREFIX", "")+strings.ToLower(key))
}

// Get is SecretsManager.get: it returns where the secret was found ("env
// NAME" or "file PATH") and its value.
func Get(env Env, readFile func(string) ([]byte, error), group, groupVersion, key string) (where, value string, err error) {
	name := EnvVar(env, group, groupVersion, key)
	if v, ok := env[name]; ok {
		return "env " + name, v, nil
	}
	file := File(env, group, groupVersion, key)
	b, err := readFile(file)
	if err != nil {
		return "", "", fmt.Errorf("secret %s/%s not found: no env %s and %w", group, key, name, err)
	}
	return "file " + file, string(b), nil
}
