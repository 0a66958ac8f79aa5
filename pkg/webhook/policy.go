package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/policy"
	"github.com/secctx/secctx/pkg/securityctx"
)

// Policy modes (docs/policy.md).
const (
	// PolicyOff: SecurityContextPolicies are not read; any labelled pod may
	// ask for anything in its namespace.
	PolicyOff = "off"
	// PolicyAudit: a pod that no policy allows is admitted, with a warning
	// and a log line naming what would be denied.
	PolicyAudit = "audit"
	// PolicyEnforce: such a pod is denied.
	PolicyEnforce = "enforce"
)

// PolicyConfig is how SecurityContextPolicies apply.
type PolicyConfig struct {
	// Mode is off (the default), audit or enforce.
	Mode string `json:"mode"`
}

// PolicySource gives the SecurityContextPolicies that select a namespace.
type PolicySource interface {
	Select(ctx context.Context, namespace string) ([]*v1alpha1.SecurityContextPolicy, error)
}

// WithPolicy makes m check every admitted SecurityContext against the
// policies src selects, in mode (audit or enforce; off, or a nil src,
// checks nothing).
func (m *PodMutator) WithPolicy(mode string, src PolicySource) *PodMutator {
	if mode == PolicyOff || mode == "" || src == nil {
		m.policies, m.policyMode = nil, PolicyOff
		return m
	}
	m.policies, m.policyMode = src, mode
	return m
}

// checkPolicy says what of the pod's request no policy selecting namespace
// allows, as a sentence ("" when everything is allowed), and the policies
// checked.
func (m *PodMutator) checkPolicy(ctx context.Context, namespace string, res *inject.Result) (string, []string, error) {
	pols, err := m.policies.Select(ctx, namespace)
	if err != nil {
		return "", nil, fmt.Errorf("read SecurityContextPolicies for namespace %s: %w", namespace, err)
	}
	return PolicyMessage(pols, res.SecurityContext, res.SecretFields, m.injector.StoreFor, namespace), policyNames(pols), nil
}

// PolicyRefreshBounds gives each namespace's least refresh interval from
// the SecurityContextPolicies that select it (spec.refresh): the largest
// minIntervalSeconds of them, since a bound is a limit and the strictest
// holds. It is read only when policies apply (policy.mode audit or
// enforce).
type PolicyRefreshBounds struct {
	Source PolicySource
}

// MinRefreshSeconds implements inject.RefreshBounds.
func (b PolicyRefreshBounds) MinRefreshSeconds(ctx context.Context, namespace string) (int32, error) {
	pols, err := b.Source.Select(ctx, namespace)
	if err != nil {
		return 0, fmt.Errorf("read SecurityContextPolicies for namespace %s: %w", namespace, err)
	}
	var least int32
	for _, p := range pols {
		if r := p.Spec.Refresh; r != nil {
			least = max(least, r.MinIntervalSeconds)
		}
	}
	return least, nil
}

// policyNames are the policies' names, sorted.
func policyNames(pols []*v1alpha1.SecurityContextPolicy) []string {
	names := make([]string, len(pols))
	for i, p := range pols {
		names[i] = p.Name
	}
	slices.Sort(names)
	return names
}

// PolicyMessage says what of sc (each secret served by storeOf's store) none of pols, the
// policies that select namespace, allows, as the denial's sentence; ""
// when they allow all of it. secretFields name where each secret was asked
// for (inject.Result.SecretFields), so that a secret from Flyte's
// annotations is named by its annotation. Every field is listed, each value
// quoted up to securityctx.MaxQuoted bytes; the limits on secrets and tokens
// bound how many there can be.
func PolicyMessage(pols []*v1alpha1.SecurityContextPolicy, sc *securityctx.SecurityContext, secretFields []string, storeOf func(group string) string, namespace string) string {
	denials := policy.CheckFields(pols, sc, storeOf, secretFields)
	if len(denials) == 0 {
		return ""
	}
	parts := make([]string, len(denials))
	for i, d := range denials {
		parts[i] = d.String()
	}
	// The header names where the request came from: secctx's annotation,
	// Flyte's, or both.
	flyte := slices.ContainsFunc(secretFields, func(f string) bool { return strings.HasPrefix(f, securityctx.FlyteAnnotationPrefix) })
	own := sc.RunAs != nil || len(sc.Tokens) > 0 || len(secretFields) < len(sc.Secrets) ||
		slices.ContainsFunc(secretFields, func(f string) bool { return !strings.HasPrefix(f, securityctx.FlyteAnnotationPrefix) })
	var where []string
	if own {
		where = append(where, securityctx.AnnotationSecurityContext)
	}
	if flyte {
		where = append(where, securityctx.FlyteAnnotationPrefix+"<N>")
	}
	var checked string
	if len(pols) == 0 {
		checked = "no SecurityContextPolicy selects namespace " + namespace
	} else {
		checked = "policies checked: " + strings.Join(policyNames(pols), ", ")
	}
	return fmt.Sprintf("%s: not allowed by any SecurityContextPolicy for namespace %s: %s (%s)",
		strings.Join(where, " and "), namespace, strings.Join(parts, "; "), checked)
}

// CachedPolicies selects policies from a cache (the manager's informers):
// a change to a policy or a namespace's labels applies to the next pod.
type CachedPolicies struct {
	Reader client.Reader
}

// Select returns the policies whose namespaceSelector matches the
// namespace's labels.
func (c CachedPolicies) Select(ctx context.Context, namespace string) ([]*v1alpha1.SecurityContextPolicy, error) {
	var ns corev1.Namespace
	if err := c.Reader.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", namespace, err)
	}
	var list v1alpha1.SecurityContextPolicyList
	if err := c.Reader.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("list SecurityContextPolicies: %w", err)
	}
	return SelectPolicies(list.Items, ns.Labels), nil
}

// SelectPolicies returns those of pols whose namespaceSelector matches
// nsLabels. A selector that does not parse selects nothing (the API
// server's schema keeps such policies out).
func SelectPolicies(pols []v1alpha1.SecurityContextPolicy, nsLabels map[string]string) []*v1alpha1.SecurityContextPolicy {
	var out []*v1alpha1.SecurityContextPolicy
	set := labels.Set(nsLabels)
	for i := range pols {
		sel, err := metav1.LabelSelectorAsSelector(&pols[i].Spec.NamespaceSelector)
		if err != nil {
			continue
		}
		if sel.Matches(set) {
			out = append(out, &pols[i])
		}
	}
	return out
}

// trimNamespace keeps of a cached namespace what policies select on: its
// name and labels.
func trimNamespace(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	out := &corev1.Namespace{}
	out.Name, out.Labels, out.ResourceVersion, out.UID = ns.Name, ns.Labels, ns.ResourceVersion, ns.UID
	return out, nil
}
