package inject

import (
	"fmt"
	"hash/fnv"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secctx/secctx/pkg/securityctx"
)

// The env vars that tell flytekit where secrets are.
const (
	EnvSecretsEnvPrefix  = "FLYTE_SECRETS_ENV_PREFIX"
	EnvSecretsDefaultDir = "FLYTE_SECRETS_DEFAULT_DIR"
	EnvSecretsFilePrefix = "FLYTE_SECRETS_FILE_PREFIX"
)

// secretDefaultMode is what the API server would default a secret volume's
// defaultMode to. Setting it ourselves keeps the volume we build equal to the
// one a reinvocation sees after defaulting, so reinvocation changes nothing.
const secretDefaultMode int32 = 0o644

// envItem is one env var to put in every target container, with who asked
// for it, for clash messages.
type envItem struct {
	env corev1.EnvVar
	by  string
	// yieldTo, when set, makes the item a preference rather than a
	// request: a container that already sets any of these names keeps its
	// own value and does not get the item (an AWS region, as the EKS
	// webhook does it).
	yieldTo []string
}

// describe says where the value comes from; our literal values are paths and
// flytekit settings, never secrets, so they are shown.
func (it envItem) describe() string {
	if it.env.ValueFrom == nil {
		return "to " + securityctx.Quote(it.env.Value)
	}
	return describeEnv(it.env)
}

// flytekitEnv is the env that tells flytekit where secrets are, set in
// every target container whatever the backend.
func flytekitEnv(cfg Config) []envItem {
	return []envItem{
		{env: corev1.EnvVar{Name: EnvSecretsEnvPrefix, Value: cfg.EnvVarPrefix}, by: "secctx"},
		{env: corev1.EnvVar{Name: EnvSecretsDefaultDir, Value: cfg.SecretsDir}, by: "secctx"},
		{env: corev1.EnvVar{Name: EnvSecretsFilePrefix, Value: ""}, by: "secctx"},
	}
}

// secretVolume is one volume secctx mounts at one directory in every
// target container: a Kubernetes Secret, the tokens' emptyDir or the IAM
// role's projected token.
type secretVolume struct {
	volume corev1.Volume
	dir    string
	by     string
	whole  bool
	// desc names the contents of a volume that is not a Secret.
	desc string
}

// what names the volume's contents for a message.
func (v *secretVolume) what() string {
	if v.volume.Secret != nil {
		return "Secret " + securityctx.Quote(v.volume.Secret.SecretName)
	}
	return v.desc
}

// secretPlan is what the secrets of a SecurityContext put into the pod. It
// depends only on the SecurityContext and the config, never on the pod.
type secretPlan struct {
	env     []envItem
	envFrom []corev1.EnvFromSource
	volumes []*secretVolume
	// record lists the injected secrets for the status annotation.
	record []string
	// annotations are added to the pod (vault backend), in order.
	annotations [][2]string
	// fetch is what the fetch init container reads (aws, vault agent
	// mode); nil for the stores the kubelet or an injector reads. Shared
	// by the pods of a plan and never changed.
	fetch *fetchPlan
	// refs are the Kubernetes Secrets and keys the kubelet will read, for
	// reference checks; shared like fetch.
	refs []SecretRef
}

// SecretRef is a Kubernetes Secret, or one key of it, that the kubelet reads
// for the pod: if it is missing, the pod does not start.
type SecretRef struct {
	// Field is where the pod asked for it: secrets[0], runAs.oauth2Client.clientSecret.
	Field string
	// Secret is the Secret's name in the pod's namespace.
	Secret string
	// Key is the key; "" for the whole Secret.
	Key string
}

func init() { stores[BackendKubernetes] = kubernetesStore{} }

// kubernetesStore is the default backend: Secrets in the pod's namespace,
// mounted and referenced by the kubelet.
type kubernetesStore struct{}

func (kubernetesStore) validate(Config) error { return nil }

func (kubernetesStore) plan(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	return planSecrets(cfg, secrets, fields)
}

// planSecrets lays out the Kubernetes-Secret backend (docs/contract.md). It checks the
// backend's names and every clash between the requests themselves.
func planSecrets(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	if len(secrets) == 0 {
		return &secretPlan{}, nil
	}
	p := &secretPlan{}
	var errs securityctx.ErrorList
	// Linear scans, not maps: a task asks for a handful of secrets, and
	// this runs for every pod.
	var keys []keySeen
	addEnv := func(it envItem, field string) {
		if e := p.addEnv(it, field); e != nil {
			errs = append(errs, e)
		}
	}

	// flytekit's settings come first so that an envVar cannot take their names.
	for _, it := range flytekitEnv(cfg) {
		addEnv(it, "")
	}

	for i := range secrets {
		s := &secrets[i]
		field := fieldName(fields, i)
		if s.Group == "" || !s.MountRequirement.Valid() {
			continue // reported by SecurityContext.Validate
		}
		name, nameErrs := secretName(s, field)
		if len(nameErrs) > 0 {
			errs = append(errs, nameErrs...)
			continue
		}
		if s.Key != "" {
			if prev := findKey(keys, name, s.Key); prev == nil {
				keys = append(keys, keySeen{secret: name, key: s.Key, field: field})
			} else if prev.key != s.Key {
				errs = append(errs, securityctx.Invalid(field+".key", s.Key, fmt.Sprintf(
					"differs only in case from %s.key %q; both would map to the same env var and file", prev.field, prev.key)))
				continue
			}
		}

		mount := s.MountRequirement
		if mount == securityctx.MountAny {
			mount = cfg.AnyMountAs
		}
		switch mount {
		case securityctx.MountEnvVar:
			if s.Key == "" {
				if s.EnvVar != "" {
					errs = append(errs, securityctx.Invalid(field+".envVar", s.EnvVar,
						"cannot be set for an ENV_VAR secret without key: a whole Secret has no single value; name a key or use FILE"))
					continue
				}
				prefix := envName(cfg.EnvVarPrefix, s.Group, s.GroupVersion, "") + "_"
				if !slices.ContainsFunc(p.envFrom, func(f corev1.EnvFromSource) bool { return f.Prefix == prefix }) {
					p.envFrom = append(p.envFrom, corev1.EnvFromSource{
						Prefix:    prefix,
						SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: name}},
					})
				}
			} else {
				ref := &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: s.Key}}
				addEnv(envItem{env: corev1.EnvVar{Name: envName(cfg.EnvVarPrefix, s.Group, s.GroupVersion, s.Key), ValueFrom: ref}, by: field}, field)
				if s.EnvVar != "" {
					addEnv(envItem{env: corev1.EnvVar{Name: s.EnvVar, ValueFrom: ref}, by: field}, field+".envVar")
				}
			}
		case securityctx.MountFile:
			dir := path.Join(cfg.SecretsDir, strings.ToLower(s.Group), strings.ToLower(s.GroupVersion))
			var v *secretVolume
			if i := slices.IndexFunc(p.volumes, func(v *secretVolume) bool { return v.dir == dir }); i >= 0 {
				v = p.volumes[i]
			}
			if v == nil {
				v = &secretVolume{dir: dir, by: field, volume: corev1.Volume{VolumeSource: corev1.VolumeSource{
					Secret: &corev1.SecretVolumeSource{SecretName: name, DefaultMode: ptr(secretDefaultMode)}}}}
				p.volumes = append(p.volumes, v)
			} else if v.volume.Secret.SecretName != name {
				errs = append(errs, &securityctx.FieldError{Field: field, Detail: fmt.Sprintf(
					"Secret %q would be mounted at %s, where %s mounts Secret %q", name, dir, v.by, v.volume.Secret.SecretName)})
				continue
			}
			file := dir
			if s.Key == "" {
				v.whole = true
			} else {
				file = path.Join(dir, strings.ToLower(s.Key))
				v.addItem(s.Key)
			}
			if s.EnvVar != "" {
				addEnv(envItem{env: corev1.EnvVar{Name: s.EnvVar, Value: file}, by: field}, field+".envVar")
			}
		}
		p.record = append(p.record, recordSecret(s, mount))
		p.refs = append(p.refs, SecretRef{Field: field, Secret: name, Key: s.Key})
	}

	for _, v := range p.volumes {
		if v.whole {
			// The whole Secret is there; a key asked for as well is found only
			// if the file name (the key) is already lower case.
			for _, it := range v.volume.Secret.Items {
				if it.Path != it.Key {
					errs = append(errs, &securityctx.FieldError{Field: v.by, Detail: fmt.Sprintf(
						"Secret %q is mounted whole at %s, so key %q would be at %s/%s, not at %s/%s; ask for the key alone or the Secret alone",
						v.volume.Secret.SecretName, v.dir, it.Key, v.dir, it.Key, v.dir, it.Path)})
				}
			}
			v.volume.Secret.Items = nil
		}
		for _, o := range p.volumes {
			if strings.HasPrefix(o.dir, v.dir+"/") {
				errs = append(errs, &securityctx.FieldError{Field: o.by, Detail: fmt.Sprintf(
					"would mount %s inside %s, which %s mounts read-only; the container could not start. Use groupVersion for both or for neither",
					o.dir, v.dir, v.by)})
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	nameVolumes(p.volumes)
	return p, nil
}

// addEnv adds it unless the plan has it already; the same name set another
// way is a problem at field.
func (p *secretPlan) addEnv(it envItem, field string) *securityctx.FieldError {
	for j := range p.env {
		if p.env[j].env.Name != it.env.Name {
			continue
		}
		if !sameEnv(p.env[j].env, it.env) {
			return &securityctx.FieldError{Field: field, Detail: fmt.Sprintf(
				"env %s would be set %s, but %s sets it %s", it.env.Name, it.describe(), p.env[j].by, p.env[j].describe())}
		}
		return nil
	}
	p.env = append(p.env, it)
	return nil
}

// keySeen is a key already asked for, to find keys that differ only in case.
type keySeen struct{ secret, key, field string }

func findKey(keys []keySeen, secret, key string) *keySeen {
	for i := range keys {
		if keys[i].secret == secret && strings.EqualFold(keys[i].key, key) {
			return &keys[i]
		}
	}
	return nil
}

func (v *secretVolume) addItem(key string) {
	for _, it := range v.volume.Secret.Items {
		if it.Key == key {
			return
		}
	}
	v.volume.Secret.Items = append(v.volume.Secret.Items, corev1.KeyToPath{Key: key, Path: strings.ToLower(key)})
}

// secretName is the Kubernetes Secret behind a request: the group, or
// group-groupVersion; it and the key must be valid names for Kubernetes.
func secretName(s *securityctx.Secret, field string) (string, securityctx.ErrorList) {
	var errs securityctx.ErrorList
	name := s.Group
	if s.GroupVersion != "" {
		name = s.Group + "-" + s.GroupVersion
	}
	// apimachinery's checks use regular expressions; they run only to word
	// the error once the quick check has failed.
	if isSubdomain(name) && (s.Key == "" || isSecretKey(s.Key)) {
		return name, nil
	}
	name = s.Group
	for _, msg := range validation.IsDNS1123Subdomain(s.Group) {
		errs = append(errs, securityctx.Invalid(field+".group", s.Group, "must be a Kubernetes Secret name: "+msg))
	}
	if s.GroupVersion != "" {
		name = s.Group + "-" + s.GroupVersion
		if len(errs) == 0 {
			for _, msg := range validation.IsDNS1123Subdomain(name) {
				errs = append(errs, securityctx.Invalid(field+".groupVersion", s.GroupVersion,
					"the Secret name "+securityctx.Quote(name)+" (group-groupVersion) must be a Kubernetes Secret name: "+msg))
			}
		}
	}
	if s.Key != "" {
		for _, msg := range validation.IsConfigMapKey(s.Key) {
			errs = append(errs, securityctx.Invalid(field+".key", s.Key, "must be a Kubernetes Secret key: "+msg))
		}
	}
	return name, errs
}

// envName follows flytekit: prefix + upper(group) [+ _upper(version)] [+ _upper(key)].
func envName(prefix, group, version, key string) string {
	n := prefix + strings.ToUpper(group)
	if version != "" {
		n += "_" + strings.ToUpper(version)
	}
	if key != "" {
		n += "_" + strings.ToUpper(key)
	}
	return n
}

// nameVolumes gives each volume a readable, stable name: secctx-<dir below
// SecretsDir>, or a shortened name with a hash where that is too long, not a
// DNS label, taken by another of ours, or one the tokens use (a Secret named
// tokens, bin or client-*).
func nameVolumes(vols []*secretVolume) {
	taken := map[string]bool{}
	for _, v := range vols {
		secret := v.volume.Secret.SecretName
		name := "secctx-" + secret
		// A dot is not allowed in a volume name; replacing it could make two
		// Secrets' names equal, so such names always carry a hash.
		if len(name) > validation.DNS1123LabelMaxLength || strings.Contains(secret, ".") || taken[name] || reservedVolume(name) {
			h := fnv.New32a()
			h.Write([]byte(v.dir))
			suffix := fmt.Sprintf("-%08x", h.Sum32())
			name = strings.ReplaceAll(name, ".", "-")
			if max := validation.DNS1123LabelMaxLength - len(suffix); len(name) > max {
				name = strings.TrimRight(name[:max], "-")
			}
			name += suffix
		}
		taken[name] = true
		v.volume.Name = name
	}
}

// reservedVolume: a name secctx's other volumes have or may have.
func reservedVolume(name string) bool {
	switch name {
	case tokenVolumeName, binVolumeName, iamVolumeName, fetchedVolumeName, fetchedEnvVolumeName, vaultTokenVolumeName, gcpTokenVolumeName, azureTokenVolumeName, noAPITokenVolumeName:
		return true
	}
	return strings.HasPrefix(name, "secctx-client-")
}

func recordSecret(s *securityctx.Secret, mount securityctx.MountType) string {
	r := s.Group
	if s.GroupVersion != "" {
		r += "/" + s.GroupVersion
	}
	if s.Key != "" {
		r += "/" + s.Key
	}
	return r + ":" + mount.String()
}

func sameEnv(a, b corev1.EnvVar) bool {
	if a.Name != b.Name || a.Value != b.Value || (a.ValueFrom == nil) != (b.ValueFrom == nil) {
		return false
	}
	if a.ValueFrom == nil {
		return true
	}
	x, y := a.ValueFrom.SecretKeyRef, b.ValueFrom.SecretKeyRef
	if x == nil || y == nil || a.ValueFrom.ConfigMapKeyRef != nil || b.ValueFrom.ConfigMapKeyRef != nil ||
		a.ValueFrom.FieldRef != nil || b.ValueFrom.FieldRef != nil || a.ValueFrom.ResourceFieldRef != nil ||
		b.ValueFrom.ResourceFieldRef != nil || a.ValueFrom.FileKeyRef != nil || b.ValueFrom.FileKeyRef != nil {
		return false
	}
	return x.Name == y.Name && x.Key == y.Key && boolOr(x.Optional, false) == boolOr(y.Optional, false)
}

// describeEnv says where an env var's value comes from without showing a
// literal value, which may itself be a secret.
func describeEnv(e corev1.EnvVar) string {
	switch f := e.ValueFrom; {
	case f == nil:
		return "to a literal value"
	case f.SecretKeyRef != nil:
		return "from Secret " + securityctx.Quote(f.SecretKeyRef.Name) + " key " + securityctx.Quote(f.SecretKeyRef.Key)
	case f.ConfigMapKeyRef != nil:
		return "from ConfigMap " + securityctx.Quote(f.ConfigMapKeyRef.Name) + " key " + securityctx.Quote(f.ConfigMapKeyRef.Key)
	case f.FieldRef != nil:
		return "from field " + securityctx.Quote(f.FieldRef.FieldPath)
	case f.ResourceFieldRef != nil:
		return "from resource " + securityctx.Quote(f.ResourceFieldRef.Resource)
	default:
		return "from another source"
	}
}

func ptr[T any](v T) *T { return &v }

func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// isSubdomain is validation.IsDNS1123Subdomain's rule without a regexp:
// dot-separated labels of [a-z0-9-], each starting and ending alphanumeric.
func isSubdomain(s string) bool {
	if len(s) == 0 || len(s) > validation.DNS1123SubdomainMaxLength {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// isSecretKey is validation.IsConfigMapKey's rule without a regexp.
func isSecretKey(s string) bool {
	if len(s) == 0 || len(s) > validation.DNS1123SubdomainMaxLength || s == "." || s == ".." || strings.HasPrefix(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
