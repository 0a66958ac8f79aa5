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
	if backend != "" && (len(sc.Secrets) > 0 || len(sc.Tokens) > 0) {
		allowed("backend", backend, func(a *v1alpha1.Allow) []string { return a.Backends }, exact)
	}
	for i, s := range sc.Secrets {
		f := fmt.Sprintf("secrets[%d]", i)
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
// (the host compared without case, the port as written), and a path that
// equals prefix's or continues it after a /. A query or fragment in u is
// never allowed, nor user info, so that https://idp.example.com@evil.com
// does not pass for idp.example.com.
func URLPrefix(prefix, u string) bool {
	pp, err := url.Parse(prefix)
	if err != nil || pp.Host == "" {
		return false
	}
	pu, err := url.Parse(u)
	if err != nil || pu.User != nil || pu.RawQuery != "" || pu.Fragment != "" || pu.Opaque != "" {
		return false
	}
	if !strings.EqualFold(pp.Scheme, pu.Scheme) || !strings.EqualFold(pp.Host, pu.Host) {
		return false
	}
	want := strings.TrimSuffix(pp.EscapedPath(), "/")
	got := pu.EscapedPath()
	if slices.Contains(strings.Split(got, "/"), "..") {
		return false
	}
	return want == "" || got == want || strings.HasPrefix(got, want+"/")
}
