package inject

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/lru"

	"github.com/secctx/secctx/pkg/securityctx"
)

// Injector applies SecurityContexts to pods.
type Injector struct {
	cfg   Config
	sas   ServiceAccounts
	plans *lru.Cache // of *prepared, by planKey
	// refreshBounds, when set, raises inject.refresh's interval in a
	// namespace (WithRefreshBounds).
	refreshBounds RefreshBounds
}

// RefreshBounds is the least refresh interval of a namespace: a
// SecurityContextPolicy's spec.refresh.minIntervalSeconds (docs/refresh.md).
type RefreshBounds interface {
	// MinRefreshSeconds is the least interval for pods of namespace; 0
	// when nothing bounds it.
	MinRefreshSeconds(ctx context.Context, namespace string) (int32, error)
}

// WithRefreshBounds makes the injector hold each namespace's refresh
// interval to b: a pod refreshes its secrets every inject.refresh interval
// or b's minimum for its namespace, whichever is longer.
func (in *Injector) WithRefreshBounds(b RefreshBounds) *Injector {
	in.refreshBounds = b
	return in
}

// New returns an Injector. sas may be nil: the service-account check is then
// skipped, and each Result that would have needed it says so.
func New(cfg Config, sas ServiceAccounts) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Limits = cfg.Limits.orDefaults()
	cfg.Tokens.Dir = cfg.tokensDir()
	cfg.IAM = cfg.IAM.orDefaults()
	return &Injector{cfg: cfg, sas: sas, plans: newPlanCache()}, nil
}

// Result says what Inject did besides changing the pod.
type Result struct {
	// Notes are things the caller should tell a person, such as a skipped check.
	Notes []string
	// SecurityContext is what the pod asked for (with Flyte's annotations
	// merged), for the caller's policy checks; nil for a pod that did not
	// opt in. Shared with the plan cache: never change it.
	SecurityContext *securityctx.SecurityContext
	// SecretFields name where each of SecurityContext.Secrets was asked
	// for: secrets[i], or a Flyte annotation (flyte.secrets/s<N>); nil
	// when every secret came from the SecurityContext annotation. Shared
	// with the plan cache: never change it.
	SecretFields []string
	// SecretStores name the store that serves each of
	// SecurityContext.Secrets (inject.backends). Shared with the plan
	// cache: never change it.
	SecretStores []string
	// SecretRefs are the Kubernetes Secrets and keys the kubelet will read
	// for the pod (Kubernetes backend), for the caller's reference checks.
	// Shared with the plan cache: never change it.
	SecretRefs []SecretRef
	// Refreshed are the fields of the secrets the sidecar keeps fresh,
	// every RefreshSeconds give or take RefreshJitter of it; none without
	// inject.refresh or fetched FILE secrets.
	Refreshed      []string
	RefreshSeconds int32
	RefreshJitter  float64
	// Leased are those of Refreshed whose values are leases (Vault's
	// database users): renewed, and replaced before the lease ends.
	Leased []string
	// tokens is the agent plan of the pod (fetch, token sidecar, wrapper), for
	// the patch writer.
	tokens *agentPlan
}

// Status is the record kept in the secctx.dev/status annotation. It names
// what was injected, never a value. Containers are the targets of the first
// pass; a later pass (reinvocation) injects into those alone, so that a
// container another webhook adds afterwards gets nothing it was not named for.
type Status struct {
	Containers        []string `json:"containers"`
	Secrets           []string `json:"secrets,omitempty"`
	ServiceAccount    string   `json:"serviceAccount,omitempty"`
	ExecutionIdentity bool     `json:"executionIdentity,omitzero"`
	Tokens            []string `json:"tokens,omitempty"`
	IAMRole           string   `json:"iamRole,omitempty"`
	// Refreshed are the secrets the sidecar reads again every
	// RefreshSeconds (docs/refresh.md).
	Refreshed      []string `json:"refreshed,omitempty"`
	RefreshSeconds int32    `json:"refreshSeconds,omitzero"`
	// Leased are those of Refreshed whose values are leases, renewed and
	// replaced before they end.
	Leased []string `json:"leased,omitempty"`
}

// appendJSON writes the status as jsonv2.Marshal does (a test holds them to
// it), without reflection: one more step off every request.
func (s *Status) appendJSON(b []byte) ([]byte, error) {
	var err error
	list := func(name string, l []string) {
		b = append(b, name...)
		for i, v := range l {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendQuoteErr(b, v, &err)
		}
		b = append(b, ']')
	}
	list(`{"containers":[`, s.Containers)
	if len(s.Secrets) > 0 {
		list(`,"secrets":[`, s.Secrets)
	}
	if s.ServiceAccount != "" {
		b = append(b, `,"serviceAccount":`...)
		b = appendQuoteErr(b, s.ServiceAccount, &err)
	}
	if s.ExecutionIdentity {
		b = append(b, `,"executionIdentity":true`...)
	}
	if len(s.Tokens) > 0 {
		list(`,"tokens":[`, s.Tokens)
	}
	if s.IAMRole != "" {
		b = append(b, `,"iamRole":`...)
		b = appendQuoteErr(b, s.IAMRole, &err)
	}
	if len(s.Refreshed) > 0 {
		list(`,"refreshed":[`, s.Refreshed)
	}
	if s.RefreshSeconds != 0 {
		b = append(b, `,"refreshSeconds":`...)
		b = strconv.AppendInt(b, int64(s.RefreshSeconds), 10)
	}
	if len(s.Leased) > 0 {
		list(`,"leased":[`, s.Leased)
	}
	return append(b, '}'), err
}

// Inject returns a copy of pod with its SecurityContext applied; pod itself
// is not changed. namespace is the admission request's namespace (a pod being
// created may not carry one yet). A pod that is not opted in (label
// secctx.dev/inject, or inject-flyte-secrets in Flyte mode) is returned as it
// is; one that is gets at least the status annotation, so that an admission
// policy can tell that secctx ran. A refusal is a *DeniedError; any other
// error is an internal failure (a lookup that did not answer).
func (in *Injector) Inject(ctx context.Context, pod *corev1.Pod, namespace string) (*corev1.Pod, Result, error) {
	return in.inject(ctx, pod, namespace, false)
}

// inject is Inject; partial says pod came from a PodView, which keeps only
// the kind of a projected volume and not every field of a container: where
// secctx needs those, it returns ErrFullPodNeeded.
func (in *Injector) inject(ctx context.Context, pod *corev1.Pod, namespace string, partial bool) (*corev1.Pod, Result, error) {
	deny := func(problems ...string) error {
		return &DeniedError{Pod: podRef(pod, namespace), Problems: problems}
	}
	optedIn, hasFlyte, problems := in.optIn(pod)
	if len(problems) > 0 {
		return nil, Result{}, deny(problems...)
	}
	if !optedIn {
		return pod, Result{}, nil
	}
	raw, hasSC := pod.Annotations[securityctx.AnnotationSecurityContext]
	pr := emptyRequest
	if hasSC || hasFlyte {
		pr = in.prepare(raw, hasSC, hasFlyte, pod.Annotations)
	}
	if pr.unparsable != "" {
		return nil, Result{}, deny(pr.unparsable)
	}
	out := shallowCopy(pod)
	_, reinvoked := pod.Annotations[securityctx.AnnotationStatus]
	if problems := reservedNames(pod, reinvoked, in.cfg.Azure.TaskIdentity); len(problems) > 0 {
		return nil, Result{}, deny(problems...)
	}
	if partial && reinvoked && hasAgentParts(pod) {
		return nil, Result{}, ErrFullPodNeeded
	}
	tgts, later, tgtErr := targets(out)
	if tgtErr != "" {
		return nil, Result{}, deny(tgtErr)
	}
	sc := pr.sc
	problems = groupProblems(slices.Concat(pr.errs, validateIdentity(sc.RunAs, pod), pr.tokenErrs))
	if n := len(tgts) * len(sc.Secrets); n > in.cfg.Limits.MaxContainerSecrets {
		problems = append(problems, fmt.Sprintf("%d target containers × %d secrets is %d; at most %d are allowed (limits.maxContainerSecrets): name the containers that need the secrets in %s",
			len(tgts), len(sc.Secrets), n, in.cfg.Limits.MaxContainerSecrets, securityctx.AnnotationContainers))
	}
	if len(problems) > 0 {
		return nil, Result{}, deny(problems...)
	}
	plan := pr.plan.clone()
	if msg := iamForPod(plan, pod); msg != "" {
		return nil, Result{}, deny(msg)
	}
	if pr.tokens != nil && isWindows(pod) {
		return nil, Result{}, deny(fmt.Sprintf("the pod runs on Windows nodes (nodeSelector kubernetes.io/os: windows), and secctx's in-pod agent (%s) is a Linux program: "+
			"tokens, the exec wrapper and secrets fetched from a store need Linux nodes", strings.Join(agentNames(pr.tokens), ", ")))
	}

	res := Result{SecurityContext: sc, SecretFields: pr.fields, SecretStores: pr.stores, SecretRefs: plan.refs}
	if pr.anyNote != "" {
		res.Notes = append(res.Notes, pr.anyNote)
	}
	if len(later) > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%s names %s, which the pod does not have: it gets the secrets only if another webhook adds it",
			securityctx.AnnotationContainers, securityctx.Shorten(strings.Join(later, ", "))))
	}
	sa := ""
	if sc.RunAs != nil {
		sa = sc.RunAs.K8sServiceAccount
	}
	if sa != "" && sa != podServiceAccount(pod) {
		if in.sas == nil {
			res.Notes = append(res.Notes, fmt.Sprintf("service account %s/%s was not checked, and the pod was not given its token and image pull settings: no cluster to ask; pass --kubeconfig to check it", namespace, sa))
		} else {
			missing, err := in.switchAccount(ctx, out, namespace, sa, partial)
			if err != nil {
				return nil, Result{}, err
			}
			if missing != "" {
				return nil, Result{}, deny(securityctx.AnnotationSecurityContext + ": " + missing)
			}
		}
	}

	azureClient := ""
	if pr.tokens != nil && pr.tokens.azure {
		id, msg, err := in.azureClientID(ctx, out, namespace, sa)
		switch {
		case err != nil:
			return nil, Result{}, err
		case msg != "":
			return nil, Result{}, deny(msg)
		}
		azureClient = id
		if in.cfg.Azure.TaskIdentity {
			for i := range plan.env {
				if plan.env[i].by == azureTaskField && plan.env[i].env.Name == EnvAzureClientID {
					plan.env[i].env.Value = id
				}
			}
		}
	}

	var refreshSeconds int32
	if pr.tokens != nil && pr.tokens.refresh {
		refreshSeconds = in.cfg.Refresh.IntervalSeconds
		if in.refreshBounds != nil {
			least, err := in.refreshBounds.MinRefreshSeconds(ctx, namespace)
			if err != nil {
				return nil, Result{}, fmt.Errorf("refresh bounds of namespace %s: %w", namespace, err)
			}
			refreshSeconds = max(refreshSeconds, least)
		}
		res.Refreshed, res.RefreshSeconds, res.RefreshJitter = pr.tokens.refreshed, refreshSeconds, in.cfg.Refresh.jitter()
		res.Leased = pr.tokens.leased
	}

	var clashes []string
	for _, c := range tgts {
		clashes = append(clashes, applyToContainer(c, plan, out.Spec.Volumes)...)
	}
	clashes = append(clashes, addVolumes(out, plan)...)
	clashes = append(clashes, addAnnotations(out, plan)...)
	if pr.tokens != nil {
		res.tokens = pr.tokens
		notes, tokenClashes := applyAgent(out, tgts, pr.tokens, azureClient, refreshSeconds)
		res.Notes = append(res.Notes, notes...)
		clashes = append(clashes, tokenClashes...)
	} else {
		clashes = append(clashes, unplannedAgents(out, nil)...)
	}
	if len(clashes) > 0 {
		return nil, Result{}, deny(clashes...)
	}
	setIdentity(out, sc.RunAs)

	st := Status{Secrets: plan.record, ServiceAccount: sa}
	if pr.tokens != nil {
		st.Tokens = pr.tokens.names
	}
	if sc.RunAs != nil {
		st.IAMRole = sc.RunAs.IAMRole
	}
	st.Refreshed, st.RefreshSeconds, st.Leased = res.Refreshed, res.RefreshSeconds, res.Leased
	st.ExecutionIdentity = sc.RunAs != nil && sc.RunAs.ExecutionIdentity != ""
	st.Containers = make([]string, 0, len(tgts))
	for _, c := range tgts {
		st.Containers = append(st.Containers, c.Name)
	}
	b, err := st.appendJSON(make([]byte, 0, 128))
	if err != nil {
		return nil, Result{}, fmt.Errorf("encode status: %w", err)
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[securityctx.AnnotationStatus] = string(b)
	if n := annotationsSize(out.Annotations); n > maxAnnotationsSize {
		return nil, Result{}, deny(fmt.Sprintf("the pod's annotations would be %d bytes with secctx's (%s is %d bytes), more than the %d (256 KiB) the API server allows: make the pod's own annotations smaller",
			n, securityctx.AnnotationStatus, len(b), maxAnnotationsSize))
	}
	return out, res, nil
}

// maxAnnotationsSize is the API server's bound on a pod's annotations, keys
// and values together (TotalAnnotationSizeLimitB).
const maxAnnotationsSize = 256 << 10

// annotationsSize counts annotations as the API server does.
func annotationsSize(a map[string]string) int {
	n := 0
	for k, v := range a {
		n += len(k) + len(v)
	}
	return n
}

// hasAgentParts reports whether the pod has an init container or a
// projected volume of secctx's: on a reinvocation each must be exactly what
// secctx writes, which takes every field, not the view's.
func hasAgentParts(pod *corev1.Pod) bool {
	for i := range pod.Spec.InitContainers {
		if isAgentContainer(pod.Spec.InitContainers[i].Name) {
			return true
		}
	}
	for i := range pod.Spec.Volumes {
		if v := &pod.Spec.Volumes[i]; v.Projected != nil && (v.Name == iamVolumeName || isStoreTokenVolume(v.Name)) {
			return true
		}
	}
	return false
}

// agentNames names the agent containers a plan adds, for a message.
func agentNames(tp *agentPlan) []string {
	var names []string
	if tp.fetch != nil {
		names = append(names, FetchContainer)
	}
	if tp.names != nil || tp.refresh {
		names = append(names, SidecarContainer)
	}
	return names
}

// Backend is the configured secret backend: the store of the secrets no
// inject.backends rule matches.
func (in *Injector) Backend() string { return in.cfg.backend() }

// StoreFor is the store that serves a secret of this group.
func (in *Injector) StoreFor(group string) string { return in.cfg.StoreFor(group) }

// Stores lists the stores a secret may come from.
func (in *Injector) Stores() []string { return in.cfg.Stores() }

// optIn says whether the pod opted in, and whether it carries Flyte's
// annotations in Flyte mode. The webhook's registration selects
// on the labels already; checking them here too means that a registration
// changed by hand, or offline injection, cannot inject into a pod that did
// not opt in. A pod that carries a request but not the label that goes with
// it is refused rather than admitted without what it asked for, as the
// admission policy secctx ships refuses it (docs/install.md).
func (in *Injector) optIn(pod *corev1.Pod) (optedIn, hasFlyte bool, problems []string) {
	own := pod.Labels[securityctx.LabelInject] == "true"
	flyte := in.cfg.Flyte.Enabled && pod.Labels[securityctx.LabelFlyteInject] == "true"
	if _, ok := pod.Annotations[securityctx.AnnotationSecurityContext]; ok && !own {
		problems = append(problems, fmt.Sprintf(`%s is set, but the pod is not labelled %s: "true"; add the label so that secctx injects what it asks for`,
			securityctx.AnnotationSecurityContext, securityctx.LabelInject))
	}
	hasFlyte = in.cfg.Flyte.Enabled && securityctx.HasFlyteSecrets(pod.Annotations)
	if hasFlyte && !flyte {
		problems = append(problems, fmt.Sprintf(`%s<N> annotations are set, but the pod is not labelled %s: "true"; add the label so that secctx injects what they ask for`,
			securityctx.FlyteAnnotationPrefix, securityctx.LabelFlyteInject))
	}
	return own || flyte, hasFlyte, problems
}

// groupProblems words errors for the denial: those of the SecurityContext
// annotation under its name, those of Flyte's annotations by their own
// (their field paths start with the annotation's key).
func groupProblems(errs securityctx.ErrorList) []string {
	var own, flyte securityctx.ErrorList
	for _, e := range errs {
		if strings.HasPrefix(e.Field, securityctx.FlyteAnnotationPrefix) {
			flyte = append(flyte, e)
		} else {
			own = append(own, e)
		}
	}
	var problems []string
	if len(own) > 0 {
		problems = append(problems, securityctx.AnnotationSecurityContext+": "+own.Error())
	}
	if len(flyte) > 0 {
		problems = append(problems, flyte.Error())
	}
	return problems
}

// addAnnotations adds the plan's annotations; one the pod already has with
// another value is a clash.
func addAnnotations(pod *corev1.Pod, p *secretPlan) []string {
	var clashes []string
	for _, a := range p.annotations {
		if have, ok := pod.Annotations[a[0]]; ok && have != a[1] {
			clashes = append(clashes, fmt.Sprintf("annotation %s is %s; secctx would set it to %s", a[0], securityctx.Quote(have), securityctx.Quote(a[1])))
			continue
		}
		pod.Annotations[a[0]] = a[1]
	}
	return clashes
}

// shallowCopy copies what Inject changes: the pod, its container lists and
// its annotations. The lists inside are only ever appended to, into new
// arrays (see applyToContainer), or filtered into new arrays
// (switchAccount); setIdentity copies the labels before it writes one.
func shallowCopy(pod *corev1.Pod) *corev1.Pod {
	out := *pod
	out.Annotations = maps.Clone(pod.Annotations)
	out.Spec.InitContainers = slices.Clone(pod.Spec.InitContainers)
	out.Spec.Containers = slices.Clone(pod.Spec.Containers)
	return &out
}

func podRef(pod *corev1.Pod, namespace string) string {
	if namespace == "" {
		namespace = pod.Namespace
	}
	name := pod.Name
	if name == "" && pod.GenerateName != "" {
		name = pod.GenerateName + "*"
	}
	return securityctx.Shorten(namespace + "/" + name)
}

// checkLimits refuses a request larger than the limits, before any of it is
// checked or planned, so that its answer stays short.
func (c Config) checkLimits(secrets, tokens int) string {
	if secrets > c.Limits.MaxSecrets {
		return "secrets: " + strconv.Itoa(secrets) + " secrets asked for; at most " + strconv.Itoa(c.Limits.MaxSecrets) + " are allowed (limits.maxSecrets)"
	}
	if tokens > c.Limits.MaxTokens {
		return "tokens: " + strconv.Itoa(tokens) + " tokens asked for; at most " + strconv.Itoa(c.Limits.MaxTokens) + " are allowed (limits.maxTokens)"
	}
	return ""
}

// isEmpty: a SecurityContext that asks for nothing ("{}").
func isEmpty(sc *securityctx.SecurityContext) bool {
	return len(sc.Secrets) == 0 && len(sc.Tokens) == 0 && sc.ConnectionRef == "" &&
		(sc.RunAs == nil || *sc.RunAs == securityctx.Identity{})
}
