package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/lru"

	"github.com/secctx/secctx/pkg/securityctx"
)

// prepared is what a pod's annotations ask for, worked out without the pod:
// the SecurityContext (merged with Flyte's annotations) and its plan, or
// what is wrong with them. The pods of one task, its retries and a map
// task's instances carry the same annotations, so an Injector keeps the last
// few hundred: parsing and planning were a fifth of the handler's time
// (docs/performance-notes.md). A prepared value is shared and never changed; Inject
// works on a clone of its plan.
type prepared struct {
	// unparsable, when set, is the whole refusal: the annotation is not a
	// SecurityContext at all.
	unparsable string
	sc         *securityctx.SecurityContext
	// fields name where each of sc.Secrets came from (Result.SecretFields),
	// stores the store of each (Result.SecretStores).
	fields    []string
	stores    []string
	plan      *secretPlan
	errs      securityctx.ErrorList // parse, Flyte and plan problems
	tokenErrs securityctx.ErrorList
	// tokens is the agent's plan (fetch, token sidecar, wrapper); nil
	// without fetched secrets or tokens.
	tokens *agentPlan
	// anyNote tells the author that ANY secrets were served in one form.
	anyNote string
}

// emptyRequest is what a pod that opted in but asks for nothing gets: the
// status annotation alone.
var emptyRequest = &prepared{sc: &securityctx.SecurityContext{}, plan: &secretPlan{}}

const (
	// planCacheSize bounds the cache by entries, maxCachedKey by key size;
	// together at most about 2 MiB.
	planCacheSize = 256
	maxCachedKey  = 8 << 10
)

func newPlanCache() *lru.Cache { return lru.New(planCacheSize) }

// prepare returns the prepared plan for these annotations, from the cache
// when it has them.
func (in *Injector) prepare(raw string, hasSC, hasFlyte bool, annotations map[string]string) *prepared {
	key := planKey{hasSC: hasSC, sc: raw}
	if hasFlyte {
		key.flyte = flyteKey(annotations)
	}
	cacheable := len(key.sc)+len(key.flyte) <= maxCachedKey
	if cacheable {
		if v, ok := in.plans.Get(key); ok {
			return v.(*prepared)
		}
	}
	p := in.prepareUncached(raw, hasSC, hasFlyte, annotations)
	if cacheable {
		in.plans.Add(key, p)
	}
	return p
}

// planKey holds everything prepareUncached reads: whether the annotation is
// there, its value, and the Flyte secret annotations. The value is the
// annotation's own string, not a copy.
type planKey struct {
	hasSC     bool
	sc, flyte string
}

// flyteKey lists every Flyte secret annotation, name and value, each with
// its length so that no two different sets give one key.
func flyteKey(annotations map[string]string) string {
	var names []string
	for k := range annotations {
		if strings.HasPrefix(k, securityctx.FlyteAnnotationPrefix) {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var b strings.Builder
	for _, k := range names {
		for _, part := range [2]string{k, annotations[k]} {
			b.WriteString(strconv.Itoa(len(part)))
			b.WriteByte(':')
			b.WriteString(part)
		}
	}
	return b.String()
}

func (in *Injector) prepareUncached(raw string, hasSC, hasFlyte bool, annotations map[string]string) *prepared {
	p := &prepared{}
	var errs securityctx.ErrorList
	if hasSC {
		if p.sc, errs = securityctx.ParseWith([]byte(raw), securityctx.ValidateOptions{HTTPHosts: in.cfg.Tokens.HTTPHosts}); p.sc == nil {
			p.unparsable = securityctx.AnnotationSecurityContext + ": " + errs.Error()
			return p
		}
		// Limits come first and alone: the problems of thousands of
		// entries would make an answer as large as the request.
		if msg := in.cfg.checkLimits(len(p.sc.Secrets), len(p.sc.Tokens)); msg != "" {
			p.unparsable = securityctx.AnnotationSecurityContext + ": " + msg
			return p
		}
	}
	// Flyte's own annotations, as flytepropeller writes them, merge with
	// secctx's; fields names where each secret came from.
	var fields []string
	if hasFlyte {
		flyte, flyteErrs := securityctx.DecodeFlyteAnnotations(annotations)
		n := len(flyte)
		if p.sc != nil {
			n += len(p.sc.Secrets)
		}
		if msg := in.cfg.checkLimits(n, 0); msg != "" {
			p.unparsable = securityctx.FlyteAnnotationPrefix + "<N> with " + securityctx.AnnotationSecurityContext + ": " + msg
			return p
		}
		var mergeErrs securityctx.ErrorList
		p.sc, fields, mergeErrs = securityctx.MergeFlyte(p.sc, flyte)
		errs = append(errs, flyteErrs...)
		errs = append(errs, mergeErrs...)
	}
	if len(errs) == 0 && isEmpty(p.sc) {
		p.plan = &secretPlan{}
		return p
	}
	p.fields = fields
	p.stores = make([]string, len(p.sc.Secrets))
	for i := range p.sc.Secrets {
		p.stores[i] = in.cfg.StoreFor(p.sc.Secrets[i].Group)
	}
	p.anyNote = anyNote(in.cfg, p.sc.Secrets, fields)
	secrets, fields := withClientSecret(p.sc, fields)
	var planErrs securityctx.ErrorList
	p.plan, planErrs = planRouted(in.cfg, secrets, fields)
	p.errs = append(errs, planErrs...)
	p.tokenErrs = validateTokens(in.cfg, p.sc, fields)
	if p.plan != nil {
		p.errs = append(p.errs, planClient(p.sc, p.plan)...)
		// The role does not depend on the pod: checked here, once per
		// SecurityContext, not on every request.
		if id := p.sc.RunAs; id != nil && id.IAMRole != "" {
			if e := validateIAMRole(id.IAMRole); e != nil {
				p.errs = append(p.errs, e)
			} else {
				p.errs = append(p.errs, planIAMRole(in.cfg, id, p.plan)...)
			}
		}
	}
	if len(p.errs) == 0 && len(p.tokenErrs) == 0 {
		p.tokens, p.tokenErrs = planAgent(in.cfg, p.sc.Tokens, p.plan)
	}
	return p
}

// The settings flytekit reads to authenticate as a client with client
// credentials (flytekit.configuration.internal.Credentials): the id, the
// file that holds the secret, and the mode.
const (
	EnvClientID             = "FLYTE_CREDENTIALS_CLIENT_ID"
	EnvClientSecretLocation = "FLYTE_CREDENTIALS_CLIENT_SECRET_LOCATION"
	EnvAuthMode             = "FLYTE_CREDENTIALS_AUTH_MODE"
	clientField             = "runAs.oauth2Client.clientSecret"
)

// withClientSecret returns the secrets to plan: those asked for, then
// runAs.oauth2Client's secret as a file whose path flytekit reads from
// FLYTE_CREDENTIALS_CLIENT_SECRET_LOCATION. A client secret is never put in
// an env var, where it would be seen by every process and in crash dumps.
func withClientSecret(sc *securityctx.SecurityContext, fields []string) ([]securityctx.Secret, []string) {
	if sc.RunAs == nil || sc.RunAs.OAuth2Client == nil || sc.RunAs.OAuth2Client.ClientSecret == nil {
		return sc.Secrets, fields
	}
	s := *sc.RunAs.OAuth2Client.ClientSecret
	s.MountRequirement, s.EnvVar = securityctx.MountFile, EnvClientSecretLocation
	if fields == nil {
		fields = make([]string, len(sc.Secrets))
		for i := range fields {
			fields[i] = fieldName(nil, i)
		}
	}
	return append(slices.Clip(sc.Secrets), s), append(slices.Clip(fields), clientField)
}

// planClient adds runAs.oauth2Client's id and flytekit's auth mode.
func planClient(sc *securityctx.SecurityContext, p *secretPlan) securityctx.ErrorList {
	if sc.RunAs == nil || sc.RunAs.OAuth2Client == nil {
		return nil
	}
	var errs securityctx.ErrorList
	for _, e := range []corev1.EnvVar{
		{Name: EnvClientID, Value: sc.RunAs.OAuth2Client.ClientID},
		{Name: EnvAuthMode, Value: "client_credentials"},
	} {
		if err := p.addEnv(envItem{env: e, by: "runAs.oauth2Client"}, "runAs.oauth2Client"); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// clone copies what Inject puts into a pod, pointers included, so that no
// pod shares memory with the cache. The record and annotations are only
// read.
func (p *secretPlan) clone() *secretPlan {
	c := *p
	c.env = slices.Clone(p.env)
	for i := range c.env {
		if f := c.env[i].env.ValueFrom; f != nil {
			c.env[i].env.ValueFrom = f.DeepCopy()
		}
	}
	c.envFrom = slices.Clone(p.envFrom)
	for i := range c.envFrom {
		c.envFrom[i] = *c.envFrom[i].DeepCopy()
	}
	c.volumes = make([]*secretVolume, len(p.volumes))
	for i, v := range p.volumes {
		cv := *v
		v.volume.DeepCopyInto(&cv.volume)
		c.volumes[i] = &cv
	}
	return &c
}

// anyNote says which secrets asked for ANY and what they were served as,
// so that an author is not surprised by a file where an env var was
// possible (kubectl shows it as a warning).
func anyNote(cfg Config, secrets []securityctx.Secret, fields []string) string {
	var any, injected []string
	for i := range secrets {
		if secrets[i].MountRequirement == securityctx.MountAny && secrets[i].Group != "" {
			if cfg.StoreFor(secrets[i].Group) == BackendVault && cfg.Vault.Mode != VaultModeAgent {
				injected = append(injected, fieldName(fields, i))
			} else {
				any = append(any, fieldName(fields, i))
			}
		}
	}
	var notes []string
	if len(any) > 0 {
		notes = append(notes, fmt.Sprintf("%s asked for mountRequirement ANY: served as %s (inject.anyMountAs)", securityctx.Shorten(strings.Join(any, ", ")), cfg.AnyMountAs))
	}
	if len(injected) > 0 {
		notes = append(notes, fmt.Sprintf("%s asked for mountRequirement ANY: served as FILE (the Vault Agent Injector writes files)", securityctx.Shorten(strings.Join(injected, ", "))))
	}
	return strings.Join(notes, "; ")
}
