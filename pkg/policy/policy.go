// Package policy decides whether SecurityContextPolicies allow what a pod's
// SecurityContext asks for (docs/policy.md). It is pure: the webhook hands it
// the policies that select the pod's namespace, from its informer cache.
package policy

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/securityctx"
)

// Denial is one thing asked for that no policy allows.
type Denial struct {
	// Field is where it was asked for (secrets[0].group), Value what.
	Field, Value string
}

func (d Denial) String() string { return d.Field + " " + securityctx.Quote(d.Value) }

// Check returns what sc asks for that none of the policies allows, in the
// SecurityContext's order; storeOf names the store that serves a secret of
// a group (nil: stores are not checked). Policies add up: a value is
// allowed when any policy allows it. No policy at all allows nothing.
func Check(policies []*v1alpha1.SecurityContextPolicy, sc *securityctx.SecurityContext, storeOf func(group string) string) []Denial {
	return CheckFields(policies, sc, storeOf, nil)
}

// CheckFields is Check for a SecurityContext whose secrets came from several
// places: secretFields[i] names where sc.Secrets[i] was asked for (Flyte's
// flyte.secrets/s<N> annotations, merged by the injector); a missing entry
// is secrets[i].
func CheckFields(policies []*v1alpha1.SecurityContextPolicy, sc *securityctx.SecurityContext, storeOf func(group string) string, secretFields []string) []Denial {
	var out []Denial
	allowed := func(field, value string, list func(*v1alpha1.Allow) []string, match func(pattern, value string) bool) {
		for _, p := range policies {
			for _, pat := range list(&p.Spec.Allow) {
				if match(pat, value) {
					return
				}
			}
		}
		out = append(out, Denial{Field: field, Value: value})
	}
	groups := func(a *v1alpha1.Allow) []string { return a.SecretGroups }
	mounts := func(a *v1alpha1.Allow) []string { return a.MountTypes }
	// Each secret's store is checked with it: those asked for, the tokens'
	// client secrets and runAs.oauth2Client's (field.backend).
	backends := func(a *v1alpha1.Allow) []string { return a.Backends }
	store := func(field, group string) {
		if storeOf != nil {
			allowed(field+".backend", storeOf(group), backends, exact)
		}
	}
	for i, s := range sc.Secrets {
		f := fmt.Sprintf("secrets[%d]", i)
		if i < len(secretFields) && secretFields[i] != "" {
			f = secretFields[i]
		}
		allowed(f+".group", s.Group, groups, Glob)
		store(f, s.Group)
		allowed(f+".mountRequirement", s.MountRequirement.String(), mounts, exact)
	}
	if id := sc.RunAs; id != nil {
		if id.K8sServiceAccount != "" {
			allowed("runAs.k8sServiceAccount", id.K8sServiceAccount, func(a *v1alpha1.Allow) []string { return a.ServiceAccounts }, Glob)
		}
		if id.IAMRole != "" {
			allowed("runAs.iamRole", id.IAMRole, func(a *v1alpha1.Allow) []string { return a.IAMRoles }, Glob)
		}
		if id.ExecutionIdentity != "" {
			allowed("runAs.executionIdentity", id.ExecutionIdentity, func(a *v1alpha1.Allow) []string { return a.ExecutionIdentities }, Glob)
		}
		if c := id.OAuth2Client; c != nil && c.ClientSecret != nil {
			allowed("runAs.oauth2Client.clientSecret.group", c.ClientSecret.Group, groups, Glob)
			store("runAs.oauth2Client.clientSecret", c.ClientSecret.Group)
		}
	}
	for i, t := range sc.Tokens {
		f := fmt.Sprintf("tokens[%d]", i)
		if t.TokenEndpoint != "" {
			allowed(f+".tokenEndpoint", t.TokenEndpoint, func(a *v1alpha1.Allow) []string { return a.TokenEndpoints }, URLPrefix)
		}
		if t.IdpDiscoveryEndpoint != "" {
			allowed(f+".idpDiscoveryEndpoint", t.IdpDiscoveryEndpoint, func(a *v1alpha1.Allow) []string { return a.DiscoveryEndpoints }, URLPrefix)
		}
		if t.Client != nil && t.Client.ClientSecret != nil {
			allowed(f+".client.clientSecret.group", t.Client.ClientSecret.Group, groups, Glob)
			store(f+".client.clientSecret", t.Client.ClientSecret.Group)
		}
	}
	return out
}

func exact(pattern, value string) bool { return pattern == value }

// Glob reports whether value matches pattern, where * matches any run of
// characters (/ and : included) and ? any one character
// (securityctx.Glob, which inject.backends rules use too).
func Glob(pattern, value string) bool { return securityctx.Glob(pattern, value) }

// URLPrefix reports whether u is under prefix: the same scheme and host
// (the host compared without case, the port as written), and a path whose
// elements, percent-decoded, start with prefix's. A query or fragment in u is
// never allowed, nor user info, so that https://idp.example.com@evil.com
// does not pass for idp.example.com; nor is a path with an empty, . or ..
// element, however it is spelled (%2e%2e, .%2E), or an element that decodes
// to one holding / \ % ; or a control character, since a server or a proxy
// may resolve any of those to a path outside the prefix.
func URLPrefix(prefix, u string) bool {
	pp, err := url.Parse(prefix)
	if err != nil || pp.Host == "" {
		return false
	}
	pu, err := url.Parse(u)
	if err != nil || pu.User != nil || pu.RawQuery != "" || pu.ForceQuery || pu.Fragment != "" || pu.Opaque != "" {
		return false
	}
	if !strings.EqualFold(pp.Scheme, pu.Scheme) || !strings.EqualFold(pp.Host, pu.Host) {
		return false
	}
	want, ok := pathElements(pp.EscapedPath())
	if !ok {
		return false
	}
	got, ok := pathElements(pu.EscapedPath())
	return ok && len(got) >= len(want) && slices.Equal(got[:len(want)], want)
}

// pathElements splits an escaped URL path into its decoded elements; a
// trailing slash adds none. ok is false for a path no policy may match: an
// element that does not decode, or that is empty, . or .., or holds / or \
// once decoded.
func pathElements(escaped string) ([]string, bool) {
	rest := strings.TrimSuffix(strings.TrimPrefix(escaped, "/"), "/")
	if rest == "" {
		return nil, true
	}
	elems := strings.Split(rest, "/")
	for i, e := range elems {
		// Once decoded, no element may hold what a server could read as
		// another path: a separator, a % (decoded again by some proxies),
		// a ; (Java servers strip ;params, so ..; is ..) or a control
		// character (..\x00).
		d, err := url.PathUnescape(e)
		if err != nil || d == "" || d == "." || d == ".." || strings.ContainsAny(d, "/\\%;") ||
			strings.ContainsFunc(d, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return nil, false
		}
		elems[i] = d
	}
	return elems, true
}
