package inject

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"unicode"

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

func init() { stores[BackendVault] = vaultStore{} }

// vaultStore is HashiCorp Vault, in one of two modes: injector (the Vault
// Agent Injector renders files from secctx's annotations, as in Flyte) or
// agent (secctx's fetch init container logs in and reads, vaultagent.go).
type vaultStore struct{}

func (vaultStore) plan(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	if cfg.Vault.Mode == VaultModeAgent {
		return planVaultAgent(cfg, secrets, fields)
	}
	return planVault(cfg, secrets, fields)
}

// fetched: in agent mode the fetch reads Vault; in injector mode the Vault
// Agent Injector does.
func (vaultStore) fetched(c Config) bool { return c.Vault.Mode == VaultModeAgent }

func (vaultStore) validate(c Config) error {
	v := c.Vault
	if v.Role == "" {
		return errors.New("inject.vault.role: required with backend vault")
	}
	if v.Mounts != nil && len(v.Mounts) == 0 {
		return errors.New("inject.vault.mounts: empty, so no secret could be read; list the secret engines' mounts, such as secret")
	}
	for _, m := range v.vaultMounts() {
		if !validVaultPath(m) {
			return fmt.Errorf("inject.vault.mounts %q: must be a Vault mount path such as secret or team-a/kv", m)
		}
		if first, _, _ := strings.Cut(m, "/"); slices.Contains(vaultSystemMounts, first) {
			return fmt.Errorf("inject.vault.mounts %q: Vault's own %s/ is never a secret's mount: a task would read what secctx's login may read there", m, first)
		}
	}
	if v.KVVersion != "1" && v.KVVersion != "2" {
		return fmt.Errorf("inject.vault.kvVersion %q: must be 1 or 2", v.KVVersion)
	}
	switch v.Mode {
	case VaultModeInjector, "":
		for k := range v.Annotations {
			if !strings.HasPrefix(k, vaultPrefix) {
				return fmt.Errorf("inject.vault.annotations %q: must start with %s", k, vaultPrefix)
			}
			for _, own := range []string{vaultSecret, vaultFile, vaultTemplate} {
				if strings.HasPrefix(k, own) {
					return fmt.Errorf("inject.vault.annotations %q: secctx sets %s<id> for each secret", k, own)
				}
			}
		}
		return nil
	case VaultModeAgent:
	default:
		return fmt.Errorf("inject.vault.mode %q: must be injector or agent", v.Mode)
	}
	if v.Address == "" {
		return errors.New("inject.vault.address: required in vault agent mode: Vault's URL as the pods reach it")
	}
	if err := checkURL("inject.vault.address", v.Address, c.Tokens.HTTPHosts); err != nil {
		return err
	}
	if v.AuthPath != "" && !validVaultPath(v.AuthPath) {
		return fmt.Errorf("inject.vault.authPath %q: must be a Vault path such as kubernetes", v.AuthPath)
	}
	if v.Namespace != "" && !validVaultPath(v.Namespace) {
		return fmt.Errorf("inject.vault.namespace %q: must be a Vault namespace path such as team-a", v.Namespace)
	}
	if len(v.Audience) > 256 || strings.ContainsAny(v.Audience, " \t\n\r\x00") {
		return fmt.Errorf("inject.vault.audience %q: must be at most 256 characters, without spaces", v.Audience)
	}
	if v.CABundle != "" {
		if err := checkPEM(v.CABundle); err != nil {
			return fmt.Errorf("inject.vault.caBundle: %w", err)
		}
	}
	if v.Role != "" && !validVaultElement(v.Role) {
		return fmt.Errorf("inject.vault.role %q: must be one Vault role name", v.Role)
	}
	return checkAgentImage(c, "vault agent mode")
}

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
	p.env = flytekitEnv(cfg)
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
		if nameErrs := vaultNames(s, field); len(nameErrs) > 0 {
			errs = append(errs, nameErrs...)
			continue
		}
		if e := checkVaultMount(cfg.Vault, s, field); e != nil {
			errs = append(errs, e)
			continue
		}
		file := path.Join(strings.ToLower(s.Group), strings.ToLower(s.GroupVersion), strings.ToLower(s.Key))
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
			p.annotations = append(p.annotations, [2]string{vaultTemplate + id, vaultTemplateFor(s.Group, q, s.Key)})
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

// vaultTemplateFor is the Vault Agent template that renders one key of the
// secret at path group. Both are Go string literals inside the template
// (strconv.Quote), and the key is read with index rather than as a field,
// so that keys such as api-key or tls.crt render, and no name can close the
// action or call a function.
func vaultTemplateFor(group, query, key string) string {
	return "{{- with secret " + strconv.Quote(group) + " -}}{{ index " + query + " " + strconv.Quote(key) + " }}{{- end -}}"
}

// DefaultVaultMounts are inject.vault.mounts' default: the KV engine's
// usual mounts (secret, as Vault's dev server and Flyte's docs have it, and
// kv) and the database engine's (database).
func DefaultVaultMounts() []string { return []string{"secret", "kv", "database"} }

// vaultSystemMounts are Vault's own paths, never a secret's: auth/token
// holds the reader's own token (auth/token/lookup-self), sys Vault's
// configuration, cubbyhole the token's private storage, identity its
// entities.
var vaultSystemMounts = []string{"sys", "auth", "cubbyhole", "identity"}

// vaultMounts is Mounts, or the default for a Config built in code.
func (v VaultConfig) vaultMounts() []string {
	if v.Mounts == nil {
		return DefaultVaultMounts()
	}
	return v.Mounts
}

// checkVaultMount refuses a group outside the configured secret engines'
// mounts, naming them.
func checkVaultMount(v VaultConfig, s *securityctx.Secret, field string) *securityctx.FieldError {
	mounts := v.vaultMounts()
	for _, m := range mounts {
		if s.Group == m || strings.HasPrefix(s.Group, m+"/") {
			if first, _, _ := strings.Cut(s.Group, "/"); !slices.Contains(vaultSystemMounts, first) {
				return nil
			}
		}
	}
	return securityctx.Invalid(field+".group", s.Group, fmt.Sprintf(
		"with the vault backend, must be a path under one of the secret engines' mounts secctx may read (inject.vault.mounts: %s), never under Vault's own sys/, auth/, cubbyhole/ or identity/",
		strings.Join(mounts, ", ")))
}

// maxVaultName bounds each of group, groupVersion and key; a file name
// (one path element) may have at most 255 bytes.
const maxVaultName = 255

// vaultNames checks group, groupVersion and key against what a Vault path
// and the secrets directory can hold: the group is a Vault path, elements
// separated by single slashes; groupVersion and key are one element each;
// an element is letters, digits and . _ - : @, and is not . or ..; nothing
// else (no spaces, quotes, braces or control characters) is allowed, so
// that no name can change the path it is written to or the template it is
// read with.
func vaultNames(s *securityctx.Secret, field string) securityctx.ErrorList {
	var errs securityctx.ErrorList
	const allowed = "letters, digits and . _ - : @"
	for _, part := range []struct {
		name, value string
		path        bool
	}{{"group", s.Group, true}, {"groupVersion", s.GroupVersion, false}, {"key", s.Key, false}} {
		if part.value == "" {
			continue
		}
		var detail string
		switch {
		case len(part.value) > maxVaultName:
			detail = fmt.Sprintf("must be at most %d bytes with the vault backend", maxVaultName)
		case part.path && !validVaultPath(part.value):
			detail = "with the vault backend, must be a Vault path: elements of " + allowed + ", separated by single slashes, none of them . or .."
		case !part.path && !validVaultElement(part.value):
			detail = "with the vault backend, must be one path element of " + allowed + ", not . or .."
		default:
			continue
		}
		errs = append(errs, securityctx.Invalid(field+"."+part.name, part.value, detail))
	}
	return errs
}

func validVaultPath(p string) bool {
	for _, e := range strings.Split(p, "/") {
		if !validVaultElement(e) {
			return false
		}
	}
	return true
}

func validVaultElement(e string) bool {
	if e == "" || e == "." || e == ".." {
		return false
	}
	for _, r := range e {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("._-:@", r)) {
			return false
		}
	}
	return true
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
