// Package policy decides whether SecurityContextPolicies allow what a pod's
// SecurityContext asks for (docs/policy.md). It is pure: the webhook hands it
// the policies that select the pod's namespace, from its informer cache.
package policy

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/securityctx"
)

// Denial is one thing asked for that no policy allows.
type Denial struct {
	// Field is where it was asked for (secrets[0].group), Value what.
	Field, Value string
}

func (d Denial) String() string { return d.Field + " " + securityctx.Quote(d.Value) }

// Check returns what sc asks for (served from backend) that none of the
// policies allows, in the SecurityContext's order. Policies add up: a value
// is allowed when any policy allows it. No policy at all allows nothing.
func Check(policies []*v1alpha1.SecurityContextPolicy, sc *securityctx.SecurityContext, backend string) []Denial {
	return CheckFields(policies, sc, backend, nil)
}

// CheckFields is Check for a SecurityContext whose secrets came from several
// places: secretFields[i] names where sc.Secrets[i] was asked for (Flyte's
// flyte.secrets/s<N> annotations, merged by the injector); a missing entry
// is secrets[i].
func CheckFields(policies []*v1alpha1.SecurityContextPolicy, sc *securityctx.SecurityContext, backend string, secretFields []string) []Denial {
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
	// The backend serves every secret: those asked for, the tokens' client
	// secrets and runAs.oauth2Client's.
	hasClient := sc.RunAs != nil && sc.RunAs.OAuth2Client != nil && sc.RunAs.OAuth2Client.ClientSecret != nil
	if backend != "" && (len(sc.Secrets) > 0 || len(sc.Tokens) > 0 || hasClient) {
		allowed("backend", backend, func(a *v1alpha1.Allow) []string { return a.Backends }, exact)
	}
	for i, s := range sc.Secrets {
		f := fmt.Sprintf("secrets[%d]", i)
		if i < len(secretFields) && secretFields[i] != "" {
			f = secretFields[i]
		}
		allowed(f+".group", s.Group, groups, Glob)
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
		}
	}
	return out
}

func exact(pattern, value string) bool { return pattern == value }

// Glob reports whether value matches pattern, where * matches any run of
// characters (/ and : included) and ? any one character; every other
// character matches itself. It runs in time linear in
// len(pattern)×len(value) at worst, whatever the pattern: no backtracking
// blow-up on patterns such as a*a*a*a*b.
func Glob(pattern, value string) bool {
	if isASCII(pattern) && isASCII(value) || !utf8.ValidString(pattern) || !utf8.ValidString(value) {
		return glob([]byte(pattern), []byte(value)) // invalid UTF-8: bytes, so that no two bytes are equal as U+FFFD
	}
	// ? is one character, not one byte.
	return glob([]rune(pattern), []rune(value))
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// glob is the classic two-pointer match with one remembered star: a later
// star makes every earlier one's choice irrelevant, so only the last is
// ever backtracked to.
func glob[T byte | rune](pattern, value []T) bool {
	p, v := 0, 0
	star, mark := -1, 0
	for v < len(value) {
		switch {
		case p < len(pattern) && pattern[p] != '*' && (pattern[p] == '?' || pattern[p] == value[v]):
			p++
			v++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, v
			p++
		case star >= 0:
			p = star + 1
			mark++
			v = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

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
