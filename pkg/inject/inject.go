package inject

import (
	"context"
	"fmt"
	"maps"
	"slices"
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
}

// New returns an Injector. sas may be nil: the service-account check is then
// skipped, and each Result that would have needed it says so.
func New(cfg Config, sas ServiceAccounts) (*Injector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Injector{cfg: cfg, sas: sas, plans: newPlanCache()}, nil
}

// Result says what Inject did.
type Result struct {
	// Injected is false when the pod asked for nothing and was left as it was.
	Injected bool
	// Notes are things the caller should tell a person, such as a skipped check.
	Notes []string
}

// Status is the record kept in the secctx.dev/status annotation. It names
// what was injected, never a value.
type Status struct {
	Containers        []string `json:"containers"`
	Secrets           []string `json:"secrets,omitempty"`
	ServiceAccount    string   `json:"serviceAccount,omitempty"`
	ExecutionIdentity bool     `json:"executionIdentity,omitzero"`
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
	return append(b, '}'), err
}

// Inject returns a copy of pod with its SecurityContext applied; pod itself
// is not changed. namespace is the admission request's namespace (a pod being
// created may not carry one yet). A pod without the SecurityContext annotation
// is returned as it is. A refusal is a *DeniedError; any other error is an
// internal failure (a lookup that did not answer).
func (in *Injector) Inject(ctx context.Context, pod *corev1.Pod, namespace string) (*corev1.Pod, Result, error) {
	raw, hasSC := pod.Annotations[securityctx.AnnotationSecurityContext]
	hasFlyte := securityctx.HasFlyteSecrets(pod.Annotations)
	if !hasSC && !hasFlyte {
		return pod, Result{}, nil
	}
	deny := func(problems ...string) error {
		return &DeniedError{Pod: podRef(pod, namespace), Problems: problems}
	}
	pr := in.prepare(raw, hasSC, hasFlyte, pod.Annotations)
	if pr.unparsable != "" {
		return nil, Result{}, deny(pr.unparsable)
	}
	if pr.empty {
		return pod, Result{}, nil
	}
	sc := pr.sc
	errs := slices.Concat(pr.errs, validateIdentity(sc.RunAs, pod), pr.tokenErrs)
	problems := groupProblems(errs)
	out := shallowCopy(pod)
	tgts, tgtErr := targets(out)
	if tgtErr != "" {
		problems = append(problems, tgtErr)
	}
	if len(problems) > 0 {
		return nil, Result{}, deny(problems...)
	}
	plan := pr.plan.clone()

	var res Result
	sa := ""
	if sc.RunAs != nil {
		sa = sc.RunAs.K8sServiceAccount
	}
	if sa != "" && sa != podServiceAccount(pod) {
		if in.sas == nil {
			res.Notes = append(res.Notes, fmt.Sprintf("service account %s/%s was not checked: no cluster to ask", namespace, sa))
		} else if missing, err := checkServiceAccount(ctx, in.sas, namespace, sa); err != nil {
			return nil, Result{}, err
		} else if missing != "" {
			return nil, Result{}, deny(securityctx.AnnotationSecurityContext + ": " + missing)
		}
	}

	var clashes []string
	for _, c := range tgts {
		clashes = append(clashes, applyToContainer(c, plan)...)
	}
	clashes = append(clashes, addVolumes(out, plan)...)
	clashes = append(clashes, addAnnotations(out, plan)...)
	if len(clashes) > 0 {
		return nil, Result{}, deny(clashes...)
	}
	setIdentity(out, sc.RunAs)

	st := Status{Secrets: plan.record, ServiceAccount: sa}
	st.ExecutionIdentity = sc.RunAs != nil && sc.RunAs.ExecutionIdentity != ""
	for _, c := range tgts {
		st.Containers = append(st.Containers, c.Name)
	}
	b, err := st.appendJSON(make([]byte, 0, 128))
	if err != nil {
		return nil, Result{}, fmt.Errorf("encode status: %w", err)
	}
	out.Annotations[securityctx.AnnotationStatus] = string(b)
	res.Injected = true
	return out, res, nil
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
			clashes = append(clashes, fmt.Sprintf("annotation %s is %q; secctx would set it to %q", a[0], have, a[1]))
			continue
		}
		pod.Annotations[a[0]] = a[1]
	}
	return clashes
}

// shallowCopy copies what Inject changes: the pod, its container lists and
// its annotations. The lists inside are only ever appended to, into new
// arrays (see applyToContainer); setIdentity copies the labels before it
// writes one.
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
	return namespace + "/" + name
}

// isEmpty: a SecurityContext that asks for nothing ("{}") leaves the pod as
// it is, without even a status annotation.
func isEmpty(sc *securityctx.SecurityContext) bool {
	return len(sc.Secrets) == 0 && len(sc.Tokens) == 0 && sc.ConnectionRef == "" &&
		(sc.RunAs == nil || *sc.RunAs == securityctx.Identity{})
}
