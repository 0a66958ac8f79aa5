package policy

import (
	"encoding/json"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/securityctx"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, value string
		want           bool
	}{
		{"team-a-*", "team-a-db", true},
		{"team-a-*", "team-b-db", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"arn:aws:iam::123456789012:role/flyte-*", "arn:aws:iam::123456789012:role/flyte-etl", true},
		{"arn:aws:iam::123456789012:role/flyte-*", "arn:aws:iam::999999999999:role/flyte-etl", false},
		// * crosses / and :, which a path.Match glob would not.
		{"secret/team-a/*", "secret/team-a/db/prod", true},
		{"arn:aws:secretsmanager:*:123456789012:secret", "arn:aws:secretsmanager:us-east-1:123456789012:secret", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
		{"*.example.com", "evil.com", false},
		// Brackets and backslashes are plain characters.
		{"[ab]", "a", false},
		{"[ab]", "[ab]", true},
		{`a\*`, `a\xyz`, true},
		{strings.Repeat("a*", 40) + "b", strings.Repeat("a", 1000), false},
	}
	for _, tt := range tests {
		if got := Glob(tt.pattern, tt.value); got != tt.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tt.pattern, tt.value, got, tt.want)
		}
	}
}

func TestURLPrefix(t *testing.T) {
	tests := []struct {
		prefix, u string
		want      bool
	}{
		{"https://idp.example.com", "https://idp.example.com/oauth2/token", true},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/token", true},
		{"https://idp.example.com/oauth2/", "https://idp.example.com/oauth2/token", true},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2", true},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2evil/token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/../admin", false},
		{"https://idp.example.com", "http://idp.example.com/token", false},
		{"https://idp.example.com", "https://idp.example.com.evil.com/token", false},
		{"https://idp.example.com", "https://idp.example.com:8443/token", false},
		{"https://idp.example.com", "https://IDP.example.com/token", true},
		{"https://idp.example.com", "https://idp.example.com@evil.com/token", false},
		{"https://idp.example.com", "https://evil.com/?https://idp.example.com", false},
		{"https://idp.example.com", "https://idp.example.com/token?x=1", false},
		{"idp.example.com", "https://idp.example.com/token", false},
		// Other spellings of a path (issue 22): each decoded element is
		// compared, and one that is empty, . or .., or holds / or \ once
		// decoded, never matches.
		{"https://idp.example.com", "https://idp.example.com/a%2F..%2Fb", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/%2e%2e/admin/token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/.%2e/admin/token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/%2E%2E/admin/token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/%2e/token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/./token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2//token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/a%5c..%5cb", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/%zz", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/token?", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/..;/admin/token", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/%252e%252e/admin", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/..%00/admin", false},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth2/token/", true},
		{"https://idp.example.com/oauth2", "https://idp.example.com/oauth%32/token", true}, // decodes to oauth2
	}
	for _, tt := range tests {
		if got := URLPrefix(tt.prefix, tt.u); got != tt.want {
			t.Errorf("URLPrefix(%q, %q) = %v, want %v", tt.prefix, tt.u, got, tt.want)
		}
	}
}

func pol(name string, a v1alpha1.Allow) *v1alpha1.SecurityContextPolicy {
	p := &v1alpha1.SecurityContextPolicy{Spec: v1alpha1.SecurityContextPolicySpec{Allow: a}}
	p.Name = name
	return p
}

func TestCheck(t *testing.T) {
	sc := &securityctx.SecurityContext{
		RunAs: &securityctx.Identity{K8sServiceAccount: "etl", IAMRole: "arn:aws:iam::123456789012:role/flyte-etl", ExecutionIdentity: "alice@example.com"},
		Secrets: []securityctx.Secret{
			{Group: "team-a-db", Key: "password", MountRequirement: securityctx.MountEnvVar},
			{Group: "shared-certs", Key: "tls.key", MountRequirement: securityctx.MountFile},
		},
		Tokens: []securityctx.OAuth2TokenRequest{{Name: "api", TokenEndpoint: "https://idp.example.com/oauth2/token",
			Client: &securityctx.OAuth2Client{ClientID: "c", ClientSecret: &securityctx.Secret{Group: "team-a-oauth", Key: "k"}}}},
	}
	teamA := pol("team-a", v1alpha1.Allow{
		SecretGroups: []string{"team-a-*"}, ServiceAccounts: []string{"etl"}, IAMRoles: []string{"arn:aws:iam::123456789012:role/flyte-*"},
		TokenEndpoints: []string{"https://idp.example.com/oauth2"}, MountTypes: []string{"ENV_VAR", "FILE"}, Backends: []string{"kubernetes"},
	})
	shared := pol("shared", v1alpha1.Allow{SecretGroups: []string{"shared-*"}, ExecutionIdentities: []string{"*@example.com"}})
	tests := []struct {
		name     string
		policies []*v1alpha1.SecurityContextPolicy
		want     []Denial
	}{
		{"two policies add up", []*v1alpha1.SecurityContextPolicy{teamA, shared}, nil},
		{"one policy", []*v1alpha1.SecurityContextPolicy{teamA}, []Denial{
			{"secrets[1].group", "shared-certs"}, {"runAs.executionIdentity", "alice@example.com"}}},
		{"no policy allows nothing", nil, []Denial{
			{"secrets[0].group", "team-a-db"}, {"secrets[0].backend", "kubernetes"}, {"secrets[0].mountRequirement", "ENV_VAR"},
			{"secrets[1].group", "shared-certs"}, {"secrets[1].backend", "kubernetes"}, {"secrets[1].mountRequirement", "FILE"},
			{"runAs.k8sServiceAccount", "etl"}, {"runAs.iamRole", "arn:aws:iam::123456789012:role/flyte-etl"},
			{"runAs.executionIdentity", "alice@example.com"},
			{"tokens[0].tokenEndpoint", "https://idp.example.com/oauth2/token"}, {"tokens[0].client.clientSecret.group", "team-a-oauth"},
			{"tokens[0].client.clientSecret.backend", "kubernetes"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Check(tt.policies, sc, storeIs("kubernetes"))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if got := Check([]*v1alpha1.SecurityContextPolicy{teamA, shared}, sc, storeIs("aws")); len(got) == 0 || !strings.HasSuffix(got[0].Field, ".backend") {
		t.Errorf("backend aws: %v, want each secret's backend denied", got)
	}
	// Issue 23: the store is checked per secret: a pod that mixes stores
	// is denied the one store no policy allows, naming that secret.
	mixed := &securityctx.SecurityContext{Secrets: []securityctx.Secret{{Group: "team-a-db", MountRequirement: securityctx.MountFile},
		{Group: "arn:aws:secretsmanager:us-east-1:123456789012:secret", Key: "k", MountRequirement: securityctx.MountFile}}}
	byShape := func(g string) string {
		if strings.HasPrefix(g, "arn:") {
			return "aws"
		}
		return "kubernetes"
	}
	if got := Check([]*v1alpha1.SecurityContextPolicy{teamA}, mixed, byShape); !slices.Contains(got, Denial{"secrets[1].backend", "aws"}) ||
		slices.Contains(got, Denial{"secrets[0].backend", "kubernetes"}) {
		t.Errorf("mixed stores: %v, want secrets[1].backend aws denied and secrets[0]'s kubernetes allowed", got)
	}
	// Issue 22: runAs.oauth2Client's secret is served by the backend too.
	client := &securityctx.SecurityContext{RunAs: &securityctx.Identity{OAuth2Client: &securityctx.OAuth2Client{ClientID: "c",
		ClientSecret: &securityctx.Secret{Group: "team-a-oauth", Key: "k"}}}}
	if got := Check([]*v1alpha1.SecurityContextPolicy{teamA}, client, storeIs("aws")); !slices.Contains(got, Denial{"runAs.oauth2Client.clientSecret.backend", "aws"}) {
		t.Errorf("runAs.oauth2Client from backend aws: %v, want the backend denied", got)
	}
	// Secrets merged from Flyte's annotations are named by them.
	got := CheckFields(nil, &securityctx.SecurityContext{Secrets: []securityctx.Secret{{Group: "a"}, {Group: "b"}}}, nil, []string{"secrets[0]", "flyte.secrets/s3"})
	want := []Denial{{"secrets[0].group", "a"}, {"secrets[0].mountRequirement", "ANY"}, {"flyte.secrets/s3.group", "b"}, {"flyte.secrets/s3.mountRequirement", "ANY"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Flyte fields (-want +got):\n%s", diff)
	}
}

// FuzzGlob holds Glob to path.Match's meaning where the two agree (a
// pattern without / in the value, and no brackets or backslashes in the
// pattern), and to never panicking or running away elsewhere.
func FuzzGlob(f *testing.F) {
	f.Add("team-*", "team-a")
	f.Add("a*b?c", "aXXbYc")
	f.Add("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Fuzz(func(t *testing.T, pattern, value string) {
		got := Glob(pattern, value)
		if strings.ContainsAny(pattern, `[]\-/`) || strings.Contains(value, "/") {
			return
		}
		want, err := path.Match(pattern, value)
		if err == nil && got != want {
			t.Errorf("Glob(%q, %q) = %v, path.Match says %v", pattern, value, got, want)
		}
	})
}

// FuzzURLPrefix: a URL that passes has the prefix's scheme and host.
func FuzzURLPrefix(f *testing.F) {
	f.Add("https://idp.example.com/oauth2", "https://idp.example.com/oauth2/token")
	f.Add("https://idp.example.com", "https://idp.example.com@evil.com/")
	f.Add("https://idp.example.com/oauth2", "https://idp.example.com/oauth2/%2e%2e/admin/token")
	f.Add("https://idp.example.com/oauth2", "https://idp.example.com/oauth2/.%2E/admin")
	f.Add("https://idp.example.com/oauth2", "https://idp.example.com/oauth2/a%2f..%2fb")
	f.Fuzz(func(t *testing.T, prefix, u string) {
		if !URLPrefix(prefix, u) {
			return
		}
		if !strings.HasPrefix(strings.ToLower(u), strings.ToLower(strings.SplitN(prefix, "/", 4)[0])) {
			t.Errorf("URLPrefix(%q, %q): allowed another scheme", prefix, u)
		}
		// No element of an allowed path is . or .. once decoded, however
		// many times a server decodes it.
		pu, _ := url.Parse(u)
		for e := range strings.SplitSeq(pu.EscapedPath(), "/") {
			for range 3 {
				if d, err := url.PathUnescape(e); err == nil {
					e = d
				}
				if e == "." || e == ".." {
					t.Errorf("URLPrefix(%q, %q): allowed a path with a %q element", prefix, u, e)
					break
				}
			}
		}
	})
}

// FuzzCheck: any policy spec (as JSON) against any SecurityContext never
// panics, and a value a policy lists verbatim is always allowed.
func FuzzCheck(f *testing.F) {
	f.Add(`{"secretGroups":["team-*"],"mountTypes":["FILE"],"backends":["kubernetes"]}`, `{"secrets":[{"group":"team-a","key":"k","mountRequirement":"FILE"}]}`)
	f.Add(`{"tokenEndpoints":["https://idp/"],"iamRoles":["*"]}`, `{"runAs":{"iamRole":"x"},"tokens":[{"name":"t","tokenEndpoint":"https://idp/token"}]}`)
	f.Add(`{"serviceAccounts":["a?"]}`, `{"runAs":{"k8sServiceAccount":"ab","executionIdentity":"e","oauth2Client":{"clientSecret":{"group":"g"}}}}`)
	f.Fuzz(func(t *testing.T, allow, sc string) {
		var a v1alpha1.Allow
		if json.Unmarshal([]byte(allow), &a) != nil {
			return
		}
		var s securityctx.SecurityContext
		if json.Unmarshal([]byte(sc), &s) != nil {
			return
		}
		p := &v1alpha1.SecurityContextPolicy{Spec: v1alpha1.SecurityContextPolicySpec{Allow: a}}
		for _, d := range Check([]*v1alpha1.SecurityContextPolicy{p}, &s, storeIs("kubernetes")) {
			if strings.HasSuffix(d.Field, ".group") && slices.Contains(a.SecretGroups, d.Value) {
				t.Errorf("%s %q denied, but the policy lists it", d.Field, d.Value)
			}
		}
	})
}

// BenchmarkCheck is the webhook's policy check alone, as in
// BenchmarkServeHTTP/secrets=3,policies=10: ten policies select the
// namespace and the last allows the pod, so every glob of the other nine is
// tried first.
func BenchmarkCheck(b *testing.B) {
	var pols []*v1alpha1.SecurityContextPolicy
	for i := range 10 {
		pols = append(pols, &v1alpha1.SecurityContextPolicy{Spec: v1alpha1.SecurityContextPolicySpec{Allow: v1alpha1.Allow{
			SecretGroups: []string{"team-" + string(rune('0'+i)) + "-*", "shared-" + string(rune('0'+i))},
			MountTypes:   []string{"ENV_VAR"}, Backends: []string{"other"}}}})
	}
	pols[9].Spec.Allow = v1alpha1.Allow{SecretGroups: []string{"group-*"}, MountTypes: []string{"ANY", "ENV_VAR", "FILE"}, Backends: []string{"kubernetes"}}
	sc := &securityctx.SecurityContext{Secrets: []securityctx.Secret{
		{Group: "group-0", Key: "k0", MountRequirement: securityctx.MountEnvVar},
		{Group: "group-1", Key: "k1", MountRequirement: securityctx.MountFile},
		{Group: "group-2", Key: "k2", MountRequirement: securityctx.MountAny},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if d := Check(pols, sc, storeIs("kubernetes")); len(d) != 0 {
			b.Fatal(d)
		}
	}
}

// storeIs serves every secret from one store.
func storeIs(store string) func(string) string { return func(string) string { return store } }
