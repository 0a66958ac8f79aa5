package inject

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/secctx/secctx/pkg/agentapi"
	"github.com/secctx/secctx/pkg/securityctx"
)

// What secctx adds to a pod whose secrets come from stores the kubelet
// cannot read (aws, gcp, azure, vault in agent mode): one init container,
// /secctx-fetch, that reads them, each from its store,
// before any other container starts, and writes each to a file in memory
// (docs/backends.md).
const (
	FetchContainer       = "secctx-fetch"
	fetchedVolumeName    = "secctx-fetched"
	fetchedEnvVolumeName = "secctx-fetched-env"
	// EnvDir holds the values the exec wrapper sets as env vars; it is
	// mounted in the fetch container and the wrapped containers only.
	EnvDir = "/var/run/secctx/env"
	// defaultFetchTimeout is inject.agent.fetchTimeoutSeconds' default.
	defaultFetchTimeout = 120
	// FetchBinary is what the fetch container runs, in secctx's image:
	// secctx-agent's fetch with every store, Google Secret Manager's gRPC
	// client included, which secctx-agent (AgentPath) leaves out so that
	// token sidecars stay small.
	FetchBinary = "/secctx-fetch"
)

// fetchPlan is what the fetch init container is told, worked out without
// the pod. A store's file fills in its own part (args, env, volumes).
type fetchPlan struct {
	store string
	// desc names the store in messages.
	desc    string
	secrets []agentapi.Secret
	// args, env, volumes and mounts are the store's own, for the fetch
	// container alone (the Vault login token).
	args    []string
	env     []corev1.EnvVar
	volumes []corev1.Volume
	mounts  []corev1.VolumeMount
	// keyOptional: a secret without a key is the store's whole value (gcp,
	// azure); else each file holds one key.
	keyOptional bool
	// names, when set, gives the group, groupVersion and key the file and
	// the env var are named after, when they are not the request's own
	// (azure: a Key Vault URL is named after the secret in it).
	names func(s *securityctx.Secret) securityctx.Secret
	// iam: the fetch authenticates as the pod's runAs.iamRole, and gets
	// its web-identity settings.
	iam bool
	// files: some secret is a file in SecretsDir.
	files bool
	// wrapEnv are the env vars the exec wrapper sets from files: name,
	// file, field.
	wrapEnv [][3]string
	// nEnv numbers the files of ENV_VAR values when stores merge.
	nEnv int
	// mountPoints are directories the fetch makes in the fetched volume,
	// where the kubelet mounts Kubernetes Secrets (checkNested).
	mountPoints []string
	// parts are each store's args, env and mounts when stores merged
	// (add): the sidecar gets only those of the stores it refreshes.
	parts []storeParts
}

// storeParts is what one store adds to the fetch container.
type storeParts struct {
	store  string
	args   []string
	env    []corev1.EnvVar
	mounts []corev1.VolumeMount
}

// locator maps one secret to its place in a store, checking the names
// against what the store accepts.
type locator func(s *securityctx.Secret, field string) (agentapi.Secret, securityctx.ErrorList)

// planFetched lays out the secrets of a store read by the fetch init
// container. A FILE secret is a file at flytekit's path,
// SecretsDir/<group>/<groupVersion>/<key> in lower case, in an in-memory
// volume mounted read-only at SecretsDir; an ENV_VAR secret is a file in
// EnvDir that the exec wrapper reads into flytekit's env var (and envVar)
// before the task's command starts, so that no value is ever in the pod
// spec.
func planFetched(cfg Config, fp *fetchPlan, secrets []securityctx.Secret, fields []string, locate locator) (*secretPlan, securityctx.ErrorList) {
	if len(secrets) == 0 {
		return &secretPlan{}, nil
	}
	p := &secretPlan{fetch: fp}
	var errs securityctx.ErrorList
	for _, it := range flytekitEnv(cfg) {
		if e := p.addEnv(it, ""); e != nil {
			errs = append(errs, e)
		}
	}
	files := map[string]string{} // file -> field
	for i := range secrets {
		s := &secrets[i]
		field := fieldName(fields, i)
		if s.Group == "" || !s.MountRequirement.Valid() {
			continue // reported by validation
		}
		if s.Key == "" && !fp.keyOptional {
			errs = append(errs, &securityctx.FieldError{Field: field + ".key",
				Detail: "required with backend " + fp.store + ": each file or env var holds one value of " + fp.desc})
			continue
		}
		as, locErrs := locate(s, field)
		if len(locErrs) > 0 {
			errs = append(errs, locErrs...)
			continue
		}
		as.Field, as.Store = field, fp.store
		asked := s
		if fp.names != nil {
			named := fp.names(s)
			named.MountRequirement, named.EnvVar = s.MountRequirement, s.EnvVar
			s = &named
		}
		mount := s.MountRequirement
		if mount == securityctx.MountAny {
			mount = cfg.AnyMountAs
		}
		if mount == securityctx.MountEnvVar {
			as.File = path.Join(EnvDir, strconv.Itoa(i))
			as.EnvVar = true
			names := []string{envName(cfg.EnvVarPrefix, s.Group, s.GroupVersion, s.Key)}
			if s.EnvVar != "" {
				names = append(names, s.EnvVar)
			}
			for j, n := range names {
				f := field
				if j > 0 {
					f += ".envVar"
				}
				if strings.ContainsAny(n, "=\x00") {
					errs = append(errs, securityctx.Invalid(f, n, "the env var name would contain = or NUL; use FILE"))
					continue
				}
				if k := slices.IndexFunc(fp.wrapEnv, func(w [3]string) bool { return w[0] == n }); k >= 0 {
					errs = append(errs, &securityctx.FieldError{Field: f, Detail: fmt.Sprintf("env %s is set from %s too", securityctx.Shorten(n), fp.wrapEnv[k][2])})
					continue
				}
				fp.wrapEnv = append(fp.wrapEnv, [3]string{n, as.File, field})
			}
		} else {
			// Each part is checked as it is, before the parts are joined:
			// joining cleans the path, and a/../../etc/passwd would then
			// pass as etc/passwd.
			if f, msg := badPathParts(s); msg != "" {
				errs = append(errs, securityctx.Invalid(field+"."+f.name, f.value, fmt.Sprintf(
					"%s; with backend %s, group, groupVersion and key, lower-cased, make the file's path below %s",
					msg, fp.store, cfg.SecretsDir)))
				continue
			}
			rel := path.Join(strings.ToLower(s.Group), strings.ToLower(s.GroupVersion), strings.ToLower(s.Key))
			as.File = path.Join(cfg.SecretsDir, rel)
			if clash := fileClash(files, as.File); clash != "" {
				errs = append(errs, &securityctx.FieldError{Field: field, Detail: clash})
				continue
			}
			files[as.File] = field
			fp.files = true
			if s.EnvVar != "" {
				if e := p.addEnv(envItem{env: corev1.EnvVar{Name: s.EnvVar, Value: as.File}, by: field}, field+".envVar"); e != nil {
					errs = append(errs, e)
				}
			}
		}
		fp.secrets = append(fp.secrets, as)
		p.record = append(p.record, fp.store+":"+recordSecret(asked, mount))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if fp.files {
		p.volumes = append(p.volumes, &secretVolume{dir: cfg.SecretsDir, by: "secrets", desc: "the secrets read from " + fp.desc,
			volume: corev1.Volume{Name: fetchedVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
				Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("64Mi"))}}}})
	}
	return p, nil
}

// loginTokenVolume is a projected service-account token the fetch logs in
// to a store with (Vault, Google STS, Entra): one token of the pod's final
// account, with the store's audience, in the fetch container alone.
func loginTokenVolume(name, audience, file string, seconds int64) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr(corev1.ProjectedVolumeSourceDefaultMode),
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: audience, ExpirationSeconds: ptr(seconds), Path: file,
		}}},
	}}}
}

// pathPart is one of a secret's names, as a message names it.
type pathPart struct{ name, value string }

// badPathParts says which of group, groupVersion and key cannot be part of
// a file's path below the secrets directory, and why: an empty, . or ..
// element (a//b, ./x, ../x, a/../b), an element longer than a file name may
// be, a NUL; and groupVersion must be one element.
func badPathParts(s *securityctx.Secret) (pathPart, string) {
	for _, p := range []pathPart{{"group", s.Group}, {"groupVersion", s.GroupVersion}, {"key", s.Key}} {
		if p.value == "" {
			continue
		}
		if strings.ContainsRune(p.value, 0) {
			return p, "would put a NUL in the file's path"
		}
		if p.name == "groupVersion" && strings.Contains(p.value, "/") {
			return p, "must be one path element, without /"
		}
		for e := range strings.SplitSeq(p.value, "/") {
			switch {
			case e == "" || e == "." || e == "..":
				return p, "would have an empty, . or .. element in the file's path"
			case len(e) > 255:
				return p, "would have an element longer than 255 bytes in the file's path"
			}
		}
	}
	return pathPart{}, ""
}

// fileClash says which secret already has file, or a file where file's
// directories would be, or a directory where file would be.
func fileClash(files map[string]string, file string) string {
	if by, ok := files[file]; ok {
		return fmt.Sprintf("would be written to %s, which %s writes too (names that differ only in case, or two stores' names, make one path)", file, by)
	}
	for f, by := range files {
		if within(file, f) || within(f, file) {
			return fmt.Sprintf("would be written to %s, and %s to %s: one would be the other's directory", file, by, f)
		}
	}
	return ""
}

// fetchTimeout is inject.agent.fetchTimeoutSeconds, or its default.
func fetchTimeout(cfg Config) int32 {
	if t := cfg.Agent.FetchTimeoutSeconds; t != 0 {
		return t
	}
	return defaultFetchTimeout
}

// buildFetch makes the fetch container from the plan: the store's
// settings, the secrets, the volumes it writes, and the pod's IAM role when
// the store authenticates with it. The user and the files' mode depend on
// the pod (fetchFor).
func buildFetch(cfg Config, fp *fetchPlan, p *secretPlan) (corev1.Container, []corev1.Volume, error) {
	spec, err := jsonv2.Marshal(fp.secrets)
	if err != nil {
		return corev1.Container{}, nil, err
	}
	args := slices.Concat([]string{"fetch", "--timeout=" + strconv.Itoa(int(fetchTimeout(cfg))) + "s"}, fp.args)
	if len(fp.mountPoints) > 0 {
		dirs, err := jsonv2.Marshal(fp.mountPoints)
		if err != nil {
			return corev1.Container{}, nil, err
		}
		args = append(args, "--mount-points="+string(dirs))
	}
	args = append(args, "--secrets="+string(spec))
	var mounts []corev1.VolumeMount
	var volumes []corev1.Volume
	if fp.files {
		mounts = append(mounts, corev1.VolumeMount{Name: fetchedVolumeName, MountPath: cfg.SecretsDir})
	}
	if len(fp.wrapEnv) > 0 {
		mounts = append(mounts, corev1.VolumeMount{Name: fetchedEnvVolumeName, MountPath: EnvDir})
		volumes = append(volumes, corev1.Volume{Name: fetchedEnvVolumeName, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
			Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("64Mi"))}}})
	}
	mounts = append(mounts, fp.mounts...)
	volumes = append(volumes, fp.volumes...)
	env := slices.Clone(fp.env)
	if fp.iam {
		for _, it := range p.env {
			if it.by == iamField {
				env = append(env, it.env)
			}
		}
		for _, v := range p.volumes {
			if v.volume.Name == iamVolumeName {
				mounts = append(mounts, corev1.VolumeMount{Name: iamVolumeName, MountPath: v.dir, ReadOnly: true})
			}
		}
	}
	c := agentContainer(cfg, FetchContainer, args, mounts)
	c.Command = []string{FetchBinary}
	if len(env) > 0 {
		c.Env = env
	}
	return c, volumes, nil
}

// fetchKey is what of the pod the fetch container depends on: the user
// and group it runs as (0: secctx's own) and the files' mode.
type fetchKey struct {
	uid, gid int64
	mode     string
	// azureClient is AZURE_CLIENT_ID, the application the pod's account
	// names (azure).
	azureClient string
}

// variantKey is what one agent container made for pods depends on: which
// container, the fetchKey (none for a sidecar of tokens alone), whether it
// installs the exec wrapper, and for the sidecar the refresh interval.
type variantKey struct {
	name string
	fetchKey
	install bool
	refresh int32
	// fetch: the sidecar that fetches too (inject.agent.fetchIn).
	fetch bool
}

// fetchVariant is the fetch container for one fetchKey, and its JSON as
// the patch writes it.
type fetchVariant struct {
	c    corev1.Container
	json []byte
}

// maxFetchVariants bounds the variants a plan keeps; the pods of one task
// share their users, so a plan needs one or two.
const maxFetchVariants = 8

// keyFor is what the fetch is for this pod. The files are for the targets'
// user: when every target runs as one known non-root user, the fetch runs
// as that user and the files are 0400; else, when the pod has an fsGroup,
// the kubelet gives the volume that group and the files are 0440; else
// they are 0444. The volumes are mounted in the fetch container and the
// targets alone, so no other container of the pod sees them.
func keyFor(pod *corev1.Pod, tgts []*corev1.Container, azureClient string) fetchKey {
	psc := pod.Spec.SecurityContext
	key := fetchKey{mode: "0444", azureClient: azureClient}
	if uid, gid, known := commonUser(psc, tgts); known {
		key = fetchKey{uid: uid, gid: gid, mode: "0400", azureClient: azureClient}
	} else if psc != nil && psc.FSGroup != nil {
		key.mode = "0440"
	}
	return key
}

// variant is base made for k: the user and group, the files' mode, the
// Azure application, and the sidecar's refresh interval. The plan keeps
// each variant with its JSON, as it keeps the sidecar's.
func (tp *agentPlan) variant(k variantKey, base *corev1.Container) *fetchVariant {
	if !tp.azure || findEnv(base.Env, EnvAzureClientID) < 0 {
		k.azureClient = "" // not in this container: one variant for every account
	}
	if v, ok := tp.variants.Load(k); ok {
		return v.(*fetchVariant)
	}
	c := *base.DeepCopy()
	if k.uid != 0 {
		c.SecurityContext.RunAsUser = ptr(k.uid)
		c.SecurityContext.RunAsGroup = ptr(k.gid)
	}
	if k.mode != "" {
		c.Args = slices.Concat(c.Args[:1], []string{"--mode=" + k.mode}, c.Args[1:])
	}
	if k.install {
		c.Args = slices.Insert(c.Args, 1, "--install-dir="+BinDir)
		last := len(c.VolumeMounts) - 1 // noAPITokenVolume stays last
		c.VolumeMounts = slices.Insert(c.VolumeMounts, last, corev1.VolumeMount{Name: binVolumeName, MountPath: BinDir})
	}
	if k.refresh > 0 {
		c.Args = append(c.Args, "--refresh="+strconv.Itoa(int(k.refresh))+"s")
	}
	if i := findEnv(c.Env, EnvAzureClientID); i >= 0 && tp.azure {
		c.Env[i].Value = k.azureClient
	}
	v := &fetchVariant{c: c}
	v.json, _ = json.Marshal(&v.c) // on error nil: the patch writer encodes it
	if tp.nVariants.Add(1) <= maxFetchVariants {
		tp.variants.Store(k, v)
	}
	return v
}

// variantJSON is the JSON of a container variant made, or nil.
func (tp *agentPlan) variantJSON(c *corev1.Container) []byte {
	k := variantKey{name: c.Name}
	for _, a := range c.Args {
		if m, ok := strings.CutPrefix(a, "--mode="); ok {
			k.mode = m
		} else if strings.HasPrefix(a, "--install-dir=") {
			k.install = true
		} else if r, ok := strings.CutPrefix(a, "--refresh="); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(r, "s"))
			k.refresh = int32(n)
		} else if strings.HasPrefix(a, "--fetch-secrets=") {
			k.fetch = true
		}
	}
	if i := findEnv(c.Env, EnvAzureClientID); i >= 0 && tp.azure {
		k.azureClient = c.Env[i].Value
	}
	if sc := c.SecurityContext; k.mode == "0400" && sc != nil && sc.RunAsUser != nil && sc.RunAsGroup != nil {
		k.uid, k.gid = *sc.RunAsUser, *sc.RunAsGroup
	}
	v, ok := tp.variants.Load(k)
	if !ok || !slices.Equal(v.(*fetchVariant).c.Args, c.Args) {
		return nil
	}
	return v.(*fetchVariant).json
}

// commonUser is the user and group every target runs as, when they all
// set the same non-root user (in the container or the pod); the group is
// theirs when they share one, else the user's id.
func commonUser(psc *corev1.PodSecurityContext, tgts []*corev1.Container) (uid, gid int64, ok bool) {
	effective := func(c *corev1.Container) (u, g *int64) {
		if psc != nil {
			u, g = psc.RunAsUser, psc.RunAsGroup
		}
		if sc := c.SecurityContext; sc != nil {
			if sc.RunAsUser != nil {
				u = sc.RunAsUser
			}
			if sc.RunAsGroup != nil {
				g = sc.RunAsGroup
			}
		}
		return u, g
	}
	if len(tgts) == 0 {
		return 0, 0, false
	}
	var group *int64
	sameGroup := true
	for i, c := range tgts {
		u, g := effective(c)
		if u == nil || *u == 0 || (i > 0 && *u != uid) {
			return 0, 0, false
		}
		uid = *u
		switch {
		case g == nil:
			sameGroup = false
		case i == 0:
			group = g
		case group == nil || *group != *g:
			sameGroup = false
		}
	}
	if sameGroup && group != nil {
		return uid, *group, true
	}
	return uid, uid, true
}
