package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/pkg/securityctx"
)

// Vault Agent Injector annotations.
const (
	vaultPrefix      = "vault.hashicorp.com/"
	vaultInject      = vaultPrefix + "agent-inject"
	vaultVolumePath  = vaultPrefix + "secret-volume-path"
	vaultRole        = vaultPrefix + "role"
	vaultPrepopulate = vaultPrefix + "agent-pre-populate-only"
	vaultSecret      = vaultPrefix + "agent-inject-secret-"
	vaultFile        = vaultPrefix + "agent-inject-file-"
	vaultTemplate    = vaultPrefix + "agent-inject-template-"
)

// planVault lays out the vault backend as Flyte's Vault mode does: the Vault
// Agent Injector renders each secret into a file under SecretsDir before the
// task starts (pre-populate only, no sidecar), and the containers get
// flytekit's FLYTE_SECRETS_* settings and each envVar.
//
// Two things differ from Flyte, on purpose. The annotation ids are derived
// from the secret (a hash of group, groupVersion and key), not random, so a
// reinvocation or a re-applied pod gets the same annotations. And the file is
// where flytekit looks for it, <dir>/<group>/<groupVersion>/<key> in lower
// case, where Flyte writes <dir>/<group>/<key> as given.
func planVault(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	if len(secrets) == 0 {
		return &secretPlan{}, nil
	}
	p := &secretPlan{}
	var errs securityctx.ErrorList
	p.env = append(p.env,
		envItem{env: corev1.EnvVar{Name: EnvSecretsEnvPrefix, Value: cfg.EnvVarPrefix}, by: "secctx"},
		envItem{env: corev1.EnvVar{Name: EnvSecretsDefaultDir, Value: cfg.SecretsDir}, by: "secctx"},
		envItem{env: corev1.EnvVar{Name: EnvSecretsFilePrefix, Value: ""}, by: "secctx"})
	p.annotations = append(p.annotations,
		[2]string{vaultInject, "true"},
		[2]string{vaultVolumePath, cfg.SecretsDir},
		[2]string{vaultRole, cfg.Vault.Role},
		[2]string{vaultPrepopulate, "true"})
	for k, v := range cfg.Vault.Annotations {
		p.annotations = append(p.annotations, [2]string{k, v})
	}
	files := map[string]string{} // file -> field that asked for it
	for i := range secrets {
		s := &secrets[i]
		field := fieldName(fields, i)
		if s.Group == "" || !s.MountRequirement.Valid() {
			continue // reported by validation
		}
		if s.MountRequirement == securityctx.MountEnvVar {
			errs = append(errs, securityctx.Invalid(field+".mountRequirement", "ENV_VAR",
				"not possible with the vault backend: Vault Agent writes secrets to files, and an env var would need the value in the pod spec; use FILE or ANY"))
			continue
		}
		if s.Key == "" {
			errs = append(errs, &securityctx.FieldError{Field: field + ".key",
				Detail: "required with the vault backend: each file holds one key of a Vault secret"})
			continue
		}
		file := path.Join(strings.ToLower(s.Group), strings.ToLower(s.GroupVersion), strings.ToLower(s.Key))
		if path.IsAbs(file) || file == ".." || strings.HasPrefix(file, "../") {
			errs = append(errs, securityctx.Invalid(field+".group", s.Group, "with the vault backend, group, groupVersion and key must form a relative path inside the secrets directory"))
			continue
		}
		if prev, ok := files[file]; ok {
			errs = append(errs, &securityctx.FieldError{Field: field, Detail: fmt.Sprintf(
				"would be written to %s, which %s writes too (names differ only in case)", path.Join(cfg.SecretsDir, file), prev)})
			continue
		}
		files[file] = field
		id := vaultID(s)
		p.annotations = append(p.annotations,
			[2]string{vaultSecret + id, s.Group},
			[2]string{vaultFile + id, file})
		if q := vaultQuery(s.GroupVersion, cfg.Vault.KVVersion); q != "" {
			p.annotations = append(p.annotations, [2]string{vaultTemplate + id,
				fmt.Sprintf(`{{- with secret %q -}}{{ %s.%s }}{{- end -}}`, s.Group, q, s.Key)})
		}
		if s.EnvVar != "" {
			p.env = append(p.env, envItem{env: corev1.EnvVar{Name: s.EnvVar, Value: path.Join(cfg.SecretsDir, file)}, by: field})
		}
		p.record = append(p.record, "vault:"+recordSecret(s, securityctx.MountFile))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

// vaultQuery picks the template by engine as Flyte does: groupVersion kv1
// or kv2 names the KV version, db is the database engine (rendered whole, no
// template), anything else falls back to the configured KV version.
func vaultQuery(groupVersion, kvVersion string) string {
	switch groupVersion {
	case "kv1":
		return ".Data"
	case "kv2":
		return ".Data.data"
	case "db":
		return ""
	}
	if kvVersion == "1" {
		return ".Data"
	}
	return ".Data.data"
}

// vaultID names a secret's annotations; the same secret always gets the
// same id.
func vaultID(s *securityctx.Secret) string {
	h := sha256.Sum256([]byte(s.Group + "\x00" + s.GroupVersion + "\x00" + s.Key))
	return hex.EncodeToString(h[:8])
}

func fieldName(fields []string, i int) string {
	if i < len(fields) {
		return fields[i]
	}
	return "secrets[" + fmt.Sprint(i) + "]"
}
