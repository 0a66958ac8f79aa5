package inject

import (
	"path"

	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/pkg/agentapi"
	"github.com/secctx/secctx/pkg/securityctx"
)

// Vault agent mode: the fetch init container logs in to Vault with the
// Kubernetes auth method, as the pod's own service account, and reads each
// secret. The mapping is Flyte's Vault mode: the group is the secret's Vault
// path, the key a key of its data, and the groupVersion picks the engine
// (kv1, kv2, db; anything else: inject.vault.kvVersion).
const (
	vaultTokenVolumeName = "secctx-vault-token"
	// vaultTokenDir holds the login token, in the fetch container only.
	vaultTokenDir = "/var/run/secrets/secctx/vault"
	// vaultTokenSeconds is the login token's lifetime: the API server's
	// least, since the fetch logs in once, at once.
	vaultTokenSeconds int64 = 600
	// EnvVaultCABundle carries inject.vault.caBundle to the fetch.
	EnvVaultCABundle = "SECCTX_VAULT_CA_BUNDLE"
)

func planVaultAgent(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	v := cfg.Vault
	authPath := v.AuthPath
	if authPath == "" {
		authPath = "kubernetes"
	}
	fp := &fetchPlan{store: BackendVault, desc: "Vault",
		args: []string{"--vault-address=" + v.Address, "--vault-auth-path=" + authPath, "--vault-role=" + v.Role,
			"--vault-token-file=" + path.Join(vaultTokenDir, "token")},
		// A token of its own, for the pod's final service account: the
		// pod's API token may be switched off, and is not mounted in a
		// container added after the service-account admission plugin.
		volumes: []corev1.Volume{loginTokenVolume(vaultTokenVolumeName, v.Audience, "token", vaultTokenSeconds)},
		mounts:  []corev1.VolumeMount{{Name: vaultTokenVolumeName, MountPath: vaultTokenDir, ReadOnly: true}},
	}
	if v.Namespace != "" {
		fp.args = append(fp.args, "--vault-namespace="+v.Namespace)
	}
	if v.CABundle != "" {
		fp.env = append(fp.env, corev1.EnvVar{Name: EnvVaultCABundle, Value: v.CABundle})
	}
	return planFetched(cfg, fp, secrets, fields, func(s *securityctx.Secret, field string) (agentapi.Secret, securityctx.ErrorList) {
		if errs := vaultNames(s, field); len(errs) > 0 {
			return agentapi.Secret{}, errs
		}
		if e := checkVaultMount(v, s, field); e != nil {
			return agentapi.Secret{}, securityctx.ErrorList{e}
		}
		engine := vaultEngine(s.GroupVersion, v.KVVersion)
		if engine == "db" {
			// A database engine's credentials are a lease of the login
			// that read them, and the fetch revokes its login as it ends:
			// only the sidecar keeps a login, and the leases it reads, for
			// the pod's life (docs/refresh.md).
			if cfg.Refresh.IntervalSeconds == 0 {
				return agentapi.Secret{}, securityctx.ErrorList{securityctx.Invalid(field+".groupVersion", s.GroupVersion,
					"db (dynamic database credentials) needs inject.refresh in vault agent mode: a lease dies with the Vault login that read it, "+
						"and only the refresh sidecar keeps a login, and renews and replaces the leases, for the pod's life; or read a KV secret")}
			}
			if mount := s.MountRequirement; mount == securityctx.MountEnvVar || mount == securityctx.MountAny && cfg.AnyMountAs == securityctx.MountEnvVar {
				return agentapi.Secret{}, securityctx.ErrorList{securityctx.Invalid(field+".mountRequirement", mount.String(),
					"with groupVersion db the credentials are a file only: the sidecar replaces the database user before its lease ends, "+
						"and an env var cannot change in a running process; use FILE (envVar then names the file)")}
			}
			return agentapi.Secret{ID: s.Group, Key: s.Key, Engine: engine, Leased: true}, nil
		}
		return agentapi.Secret{ID: s.Group, Key: s.Key, Engine: engine}, nil
	})
}

// vaultEngine is how the fetch reads a secret, as vaultQuery picks the
// template in injector mode.
func vaultEngine(groupVersion, kvVersion string) string {
	switch groupVersion {
	case "kv1", "kv2", "db":
		return groupVersion
	}
	return "kv" + kvVersion
}
