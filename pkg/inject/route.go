package inject

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/secctx/secctx/pkg/securityctx"
)

// BackendRule sends the secrets whose group matches to a store
// (inject.backends). The rules are tried in order, the first match wins, and
// inject.backend serves a secret no rule matches.
type BackendRule struct {
	// Group is a pattern on a secret's group: * matches any run of
	// characters (/ and : included), ? any one character, as in a
	// SecurityContextPolicy. Empty: the groups of the store's own shape
	// (aws: a Secrets Manager ARN; gcp: projects/<p>/secrets/<s>; azure: a
	// Key Vault secret's URL).
	Group string `json:"group,omitempty"`
	// Store is kubernetes, aws, vault, gcp or azure.
	Store string `json:"store"`
}

// shaped is a store whose groups say by their shape that they are its own,
// so that a rule may name the store alone.
type shaped interface {
	owns(cfg Config, group string) bool
}

// fetched is a store that the fetch init container reads (its plan has a
// fetchPlan); the others are read by the kubelet or an injector.
type fetched interface {
	fetched(cfg Config) bool
}

// isStoreTokenVolume: a projected token secctx gives the fetch alone, to
// log in to a store.
func isStoreTokenVolume(name string) bool {
	return name == vaultTokenVolumeName || name == gcpTokenVolumeName || name == azureTokenVolumeName
}

// isSharedAgentVolume: a volume that secctx's fetch or sidecar writes and
// the targets read: the fetched secrets, the ENV_VAR values, the tokens
// and the exec wrapper.
func isSharedAgentVolume(name string) bool {
	return name == fetchedVolumeName || name == fetchedEnvVolumeName || name == tokenVolumeName || name == binVolumeName
}

// maxRuleGroup bounds a rule's pattern, as a policy's.
const maxRuleGroup = 1024

// StoreFor is the store that serves a secret of this group.
func (c Config) StoreFor(group string) string {
	// A group this long is refused by validation; routing it would cost
	// each rule's pattern times its length.
	if len(group) > securityctx.MaxNameLength {
		return c.backend()
	}
	for _, r := range c.Backends {
		if r.Group == "" {
			if sh, ok := stores[r.Store].(shaped); ok && sh.owns(c, group) {
				return r.Store
			}
			continue
		}
		if securityctx.Glob(r.Group, group) {
			return r.Store
		}
	}
	return c.backend()
}

// Stores lists the stores the config may send a secret to: inject.backend,
// then each rule's, once each.
func (c Config) Stores() []string {
	out := []string{c.backend()}
	for _, r := range c.Backends {
		if !slices.Contains(out, r.Store) {
			out = append(out, r.Store)
		}
	}
	return out
}

// validateRules checks inject.backends and every store it names.
func (c Config) validateRules() error {
	for i, r := range c.Backends {
		f := "inject.backends[" + strconv.Itoa(i) + "]"
		st, ok := stores[r.Store]
		if !ok {
			return fmt.Errorf("%s.store %q: must be %s", f, r.Store, storeNames())
		}
		if len(r.Group) > maxRuleGroup {
			return fmt.Errorf("%s.group: %d bytes, more than %d", f, len(r.Group), maxRuleGroup)
		}
		if _, ok := st.(shaped); r.Group == "" && !ok {
			return fmt.Errorf("%s.group: required for store %s, whose groups have no shape of their own: give a pattern such as %s",
				f, r.Store, map[string]string{BackendVault: "secret/*", BackendKubernetes: "team-a-*"}[r.Store])
		}
	}
	injector, fetches := false, []string{}
	for _, name := range c.Stores() {
		if err := stores[name].validate(c); err != nil {
			return err
		}
		if f, ok := stores[name].(fetched); ok && f.fetched(c) {
			fetches = append(fetches, name)
		} else if name == BackendVault {
			injector = true
		}
	}
	// The Vault Agent Injector mounts its own volume at the secrets
	// directory, where the fetch mounts one too: a pod cannot have both.
	if injector && len(fetches) > 0 {
		return fmt.Errorf("inject.backends: vault in injector mode cannot share an installation with %s, which the fetch init container reads: "+
			"both would mount a volume at %s; set inject.vault.mode to agent", strings.Join(fetches, ", "), c.SecretsDir)
	}
	return nil
}

// planRouted lays out each secret from its store (StoreFor), and merges the
// stores' plans into one: one fetch init container reads every secret the
// kubelet cannot, each from its own store.
func planRouted(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	type batch struct {
		store   string
		secrets []securityctx.Secret
		fields  []string
	}
	var batches []*batch
	for i := range secrets {
		st := cfg.StoreFor(secrets[i].Group)
		j := slices.IndexFunc(batches, func(b *batch) bool { return b.store == st })
		if j < 0 {
			j = len(batches)
			batches = append(batches, &batch{store: st})
		}
		batches[j].secrets = append(batches[j].secrets, secrets[i])
		batches[j].fields = append(batches[j].fields, fieldName(fields, i))
	}
	switch len(batches) {
	case 0:
		return stores[cfg.backend()].plan(cfg, secrets, fields)
	case 1:
		return stores[batches[0].store].plan(cfg, secrets, fields)
	}
	merged := &secretPlan{}
	var errs securityctx.ErrorList
	for _, b := range batches {
		p, planErrs := stores[b.store].plan(cfg, b.secrets, b.fields)
		errs = append(errs, planErrs...)
		if p != nil {
			errs = append(errs, merged.merge(p)...)
		}
	}
	if len(errs) == 0 {
		errs = merged.checkNested(cfg)
	}
	for _, v := range merged.volumes {
		if v.volume.Name == fetchedVolumeName && merged.fetch != nil {
			v.desc = "the secrets read from " + merged.fetch.desc
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return merged, nil
}

// merge adds a store's plan to p: the same env var set the same way is set
// once, set two ways is a problem; the fetches become one.
func (p *secretPlan) merge(o *secretPlan) securityctx.ErrorList {
	var errs securityctx.ErrorList
	for _, it := range o.env {
		if e := p.addEnv(it, it.by); e != nil {
			errs = append(errs, e)
		}
	}
	p.envFrom = append(p.envFrom, o.envFrom...)
	for _, v := range o.volumes {
		if !slices.ContainsFunc(p.volumes, func(h *secretVolume) bool { return h.volume.Name == v.volume.Name }) {
			p.volumes = append(p.volumes, v)
		}
	}
	p.record = append(p.record, o.record...)
	p.annotations = append(p.annotations, o.annotations...)
	p.refs = append(p.refs, o.refs...)
	if o.fetch != nil {
		if p.fetch == nil {
			p.fetch = &fetchPlan{}
		}
		p.fetch.add(o.fetch)
	}
	return errs
}

// add merges a store's fetch into f. The files of ENV_VAR values are
// numbered again, since each store numbered its own from 0.
func (f *fetchPlan) add(o *fetchPlan) {
	renamed := map[string]string{}
	for _, s := range o.secrets {
		if s.EnvVar {
			file := EnvDir + "/" + strconv.Itoa(f.nEnv)
			f.nEnv++
			renamed[s.File] = file
			s.File = file
		}
		f.secrets = append(f.secrets, s)
	}
	for _, w := range o.wrapEnv {
		w[1] = renamed[w[1]]
		f.wrapEnv = append(f.wrapEnv, w)
	}
	if f.desc == "" {
		f.desc = o.desc
	} else {
		f.desc += " and " + o.desc
	}
	f.parts = append(f.parts, storeParts{store: o.store, args: o.args, env: o.env, mounts: o.mounts})
	f.args = append(f.args, o.args...)
	f.env = append(f.env, o.env...)
	f.volumes = append(f.volumes, o.volumes...)
	f.mounts = append(f.mounts, o.mounts...)
	f.iam = f.iam || o.iam
	f.files = f.files || o.files
}

// checkNested refuses what one store would write where another's is: two
// stores' files at one path, or one's file where another's is a directory,
// and a Kubernetes Secret volume that would hide a file the fetch or the
// Vault Agent Injector writes, or be hidden by one. It lists the Secret
// volumes' mount points for the fetch to make: the fetched volume is
// mounted read-only at the secrets directory, where the runtime cannot
// make a directory.
func (p *secretPlan) checkNested(cfg Config) securityctx.ErrorList {
	type written = struct{ file, field string }
	var files []written
	if p.fetch != nil {
		for _, s := range p.fetch.secrets {
			if !s.EnvVar {
				files = append(files, written{s.File, s.Field})
			}
		}
	}
	for _, a := range p.annotations {
		if strings.HasPrefix(a[0], vaultFile) {
			files = append(files, written{path.Join(cfg.SecretsDir, a[1]), "a secret from Vault"})
		}
	}
	var errs securityctx.ErrorList
	seen := map[string]string{}
	for _, f := range files {
		if clash := fileClash(seen, f.file); clash != "" {
			errs = append(errs, &securityctx.FieldError{Field: f.field, Detail: clash})
			continue
		}
		seen[f.file] = f.field
	}
	for _, v := range p.volumes {
		if v.volume.Secret == nil {
			continue
		}
		for _, f := range files {
			if f.file == v.dir || within(f.file, v.dir) || within(v.dir, f.file) {
				errs = append(errs, &securityctx.FieldError{Field: f.field, Detail: fmt.Sprintf(
					"would be written to %s, and %s mounts Secret %s at %s: one would hide the other; give the secrets different groups",
					f.file, v.by, securityctx.Quote(v.volume.Secret.SecretName), v.dir)})
			}
		}
		if p.fetch != nil && p.fetch.files {
			p.fetch.mountPoints = append(p.fetch.mountPoints, v.dir)
		}
	}
	if cfg.Refresh.IntervalSeconds > 0 && p.fetch != nil && p.fetch.files {
		errs = append(errs, p.checkRefreshed(cfg, files)...)
	}
	return errs
}

// checkRefreshed refuses what the refreshed set's layout cannot hold
// (docs/refresh.md): the set's top-level names are symlinks into its
// current directory, so a name starting with .. (the layout's own, such
// as ..data) is not a secret's, and a Kubernetes Secret mounted below one
// of them would be inside a directory that the next refresh replaces.
func (p *secretPlan) checkRefreshed(cfg Config, files []struct{ file, field string }) securityctx.ErrorList {
	var errs securityctx.ErrorList
	top := func(f string) string {
		rel := strings.TrimPrefix(f, cfg.SecretsDir+"/")
		first, _, _ := strings.Cut(rel, "/")
		return first
	}
	names := map[string]string{}
	for _, f := range files {
		if !within(f.file, cfg.SecretsDir) {
			continue
		}
		name := top(f.file)
		if strings.HasPrefix(name, "..") {
			errs = append(errs, &securityctx.FieldError{Field: f.field, Detail: fmt.Sprintf(
				"would be written to %s, but with inject.refresh a name in %s starting with .. is the refreshed set's own (..data); give the secret another group", f.file, cfg.SecretsDir)})
			continue
		}
		names[name] = f.field
	}
	for _, v := range p.volumes {
		if v.volume.Secret == nil || !within(v.dir, cfg.SecretsDir) {
			continue
		}
		if field, ok := names[top(v.dir)]; ok {
			errs = append(errs, &securityctx.FieldError{Field: v.by, Detail: fmt.Sprintf(
				"mounts Secret %s at %s, inside %s/%s where %s is refreshed as part of a set that is replaced whole: give the secrets different groups",
				securityctx.Quote(v.volume.Secret.SecretName), v.dir, cfg.SecretsDir, top(v.dir), field)})
		}
	}
	return errs
}
