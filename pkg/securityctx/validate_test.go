package securityctx

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestValidate(t *testing.T) {
	client := &OAuth2Client{ClientID: "c", ClientSecret: &Secret{Group: "s", Key: "k"}}
	tests := []struct {
		name string
		sc   SecurityContext
		want []string
	}{
		{name: "valid", sc: SecurityContext{
			Secrets: []Secret{{Group: "g", Key: "k", EnvVar: "_X1"}},
			Tokens:  []OAuth2TokenRequest{{Name: "t", Client: client, TokenEndpoint: "https://a.example.com/t"}},
		}},
		{name: "group required", sc: SecurityContext{Secrets: []Secret{{Key: "k"}}},
			want: []string{"secrets[0].group: required"}},
		{name: "bad envVar", sc: SecurityContext{Secrets: []Secret{{Group: "g"}, {Group: "g", EnvVar: "1BAD"}}},
			want: []string{`secrets[1].envVar "1BAD": must match ^[A-Z_][A-Z0-9_]*$`}},
		{name: "lower-case envVar", sc: SecurityContext{Secrets: []Secret{{Group: "g", EnvVar: "db_password"}}},
			want: []string{`secrets[0].envVar "db_password": must match ^[A-Z_][A-Z0-9_]*$`}},
		{name: "undefined mount type", sc: SecurityContext{Secrets: []Secret{{Group: "g", MountRequirement: 3}}},
			want: []string{`secrets[0].mountRequirement "3": must be one of ANY, ENV_VAR, FILE (or 0, 1, 2)`}},
		{name: "token checks", sc: SecurityContext{Tokens: []OAuth2TokenRequest{
			{Name: "a", Client: client, TokenEndpoint: "http://a.example.com/t"},
			{Name: "a", Client: client, IdpDiscoveryEndpoint: "https://"},
			{Client: &OAuth2Client{}},
			{Name: "b", Type: 1},
		}}, want: []string{
			`tokens[0].tokenEndpoint "http://a.example.com/t": must be an https:// URL with a host`,
			`tokens[1].name "a": must be unique; tokens[0] has it too`,
			`tokens[1].idpDiscoveryEndpoint "https://": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[2].name: required`,
			`tokens[2].client.clientId: required`,
			`tokens[2].client.clientSecret: required`,
			`tokens[2]: tokenEndpoint or idpDiscoveryEndpoint is required`,
			`tokens[3].type "1": must be one of CLIENT_CREDENTIALS (or 0)`,
			`tokens[3].client: required`,
			`tokens[3]: tokenEndpoint or idpDiscoveryEndpoint is required`,
		}},
		{name: "oauth2 client", sc: SecurityContext{RunAs: &Identity{OAuth2Client: &OAuth2Client{ClientSecret: &Secret{}}}},
			want: []string{"runAs.oauth2Client.clientId: required", "runAs.oauth2Client.clientSecret.group: required",
				"runAs.oauth2Client.clientSecret.key: required: a client secret is one value, the key of its group"}},
		{name: "token names and endpoints", sc: SecurityContext{Tokens: []OAuth2TokenRequest{
			{Name: "9api", Client: client, TokenEndpoint: "https://a/t#frag"},
			{Name: "api-", Client: client, TokenEndpoint: "https://u@a/t"},
			{Name: "$(HOME)", Client: client, IdpDiscoveryEndpoint: "ftp://a/x"},
			{Name: "ok", Client: &OAuth2Client{ClientID: "c\n", ClientSecret: &Secret{Group: "s", Key: "k", EnvVar: "X"}}, TokenEndpoint: "https://a/t"},
		}}, want: []string{
			`tokens[0].name "9api": must be a DNS label that starts with a letter: at most 63 characters of a-z, 0-9 and '-', ending in a letter or digit (it names a file and, upper-cased, env vars)`,
			`tokens[0].tokenEndpoint "https://a/t?<query or fragment removed>": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[1].name "api-": must be a DNS label that starts with a letter: at most 63 characters of a-z, 0-9 and '-', ending in a letter or digit (it names a file and, upper-cased, env vars)`,
			`tokens[1].tokenEndpoint "https://<user info removed>@a/t": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[2].name "$(HOME)": must be a DNS label that starts with a letter: at most 63 characters of a-z, 0-9 and '-', ending in a letter or digit (it names a file and, upper-cased, env vars)`,
			`tokens[2].idpDiscoveryEndpoint "ftp://a/x": must be an https:// URL with a host`,
			`tokens[3].client.clientId "c\n": must be at most 1024 bytes without control characters`,
			`tokens[3].client.clientSecret.envVar "X": must be empty: secctx decides where a client secret goes, and never puts it in an env var`,
		}},
		// Issue 22: other spellings of a path, credentials in a URL, and
		// sizes. A message never shows user info or a query.
		{name: "endpoint paths, credentials and sizes", sc: SecurityContext{Tokens: []OAuth2TokenRequest{
			{Name: "a", Client: client, TokenEndpoint: "https://idp/oauth2/%2e%2e/admin/token"},
			{Name: "b", Client: client, TokenEndpoint: "https://idp/oauth2/.%2E/admin/token"},
			{Name: "c", Client: client, IdpDiscoveryEndpoint: "https://idp/oauth2/a%2fb"},
			{Name: "d", Client: client, TokenEndpoint: "https://idp/oauth2/../admin"},
			{Name: "e", Client: client, TokenEndpoint: "https://idp/oauth2//token"},
			{Name: "f", Client: client, TokenEndpoint: "https://idp/./token"},
			{Name: "g", Client: client, TokenEndpoint: "https://alice:hunter2@idp/token"},
			{Name: "h", Client: client, TokenEndpoint: "https://idp/token?client_secret=hunter2"},
			{Name: "i", Client: client, TokenEndpoint: "https://idp/token?"},
			{Name: "j", Client: client, TokenEndpoint: "https://idp/" + strings.Repeat("x", 1_500_000)},
			{Name: "k", Client: client, TokenEndpoint: `https://idp/oauth2\..\admin`},
			{Name: "l", Client: client, TokenEndpoint: "https://idp/oauth2/%5c..%5cadmin"},
			{Name: "m", Client: client, TokenEndpoint: "https://idp/oauth2/token/"},
			// Found in review: other spellings of user info, a credential in
			// a fragment, and traversals that Java servers and proxies
			// decode.
			{Name: "n", Client: client, TokenEndpoint: "https:/alice:hunter2@idp.example.com/token"},
			{Name: "o", Client: client, TokenEndpoint: "//alice:hunter2@idp/token"},
			{Name: "p", Client: client, TokenEndpoint: "https://alice:hun/ter2@idp/token"},
			{Name: "q", Client: client, TokenEndpoint: "https://alice:hun#ter2@idp/token"},
			{Name: "r", Client: client, TokenEndpoint: "https://idp/token#client_secret=hunter2"},
			{Name: "s", Client: client, TokenEndpoint: "https://idp/oauth2/..;/admin/token"},
			{Name: "t", Client: client, TokenEndpoint: "https://idp/oauth2/%252e%252e/admin"},
			{Name: "u", Client: client, TokenEndpoint: "https://idp/oauth2/..%00/admin"},
			{Name: "v", Client: client, TokenEndpoint: "https://:443/token"},
		}}, want: []string{
			`tokens[0].tokenEndpoint "https://idp/oauth2/%2e%2e/admin/token": the path must not percent-encode . / \ or % (%2e)`,
			`tokens[1].tokenEndpoint "https://idp/oauth2/.%2E/admin/token": the path must not percent-encode . / \ or % (%2e)`,
			`tokens[2].idpDiscoveryEndpoint "https://idp/oauth2/a%2fb": the path must not percent-encode . / \ or % (%2f)`,
			`tokens[3].tokenEndpoint "https://idp/oauth2/../admin": the path must not have an empty, . or .. element`,
			`tokens[4].tokenEndpoint "https://idp/oauth2//token": the path must not have an empty, . or .. element`,
			`tokens[5].tokenEndpoint "https://idp/./token": the path must not have an empty, . or .. element`,
			`tokens[6].tokenEndpoint "https://<user info removed>@idp/token": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[7].tokenEndpoint "https://idp/token?<query or fragment removed>": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[8].tokenEndpoint "https://idp/token?<query or fragment removed>": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[9].tokenEndpoint "https://idp/` + strings.Repeat("x", 188) + `"... (1500012 bytes): must be at most 2048 bytes`,
			`tokens[10].tokenEndpoint "https://idp/oauth2\\..\\admin": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[11].tokenEndpoint "https://idp/oauth2/%5c..%5cadmin": the path must not percent-encode . / \ or % (%5c)`,
			`tokens[13].tokenEndpoint "https:/<user info removed>@idp.example.com/token": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[14].tokenEndpoint "//<user info removed>@idp/token": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[15].tokenEndpoint "https://<user info removed>@idp/token": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[16].tokenEndpoint "https://<user info removed>@idp/token": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[17].tokenEndpoint "https://idp/token?<query or fragment removed>": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
			`tokens[18].tokenEndpoint "https://idp/oauth2/..;/admin/token": the path must not hold ;`,
			`tokens[19].tokenEndpoint "https://idp/oauth2/%252e%252e/admin": the path must not percent-encode . / \ or % (%25)`,
			`tokens[20].tokenEndpoint "https://idp/oauth2/..%00/admin": the path must not percent-encode a control character (%00)`,
			`tokens[21].tokenEndpoint "https://:443/token": must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range tt.sc.Validate() {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
		})
	}
}

func TestApplyAndFromAnnotations(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}}}
	sc := &SecurityContext{Secrets: []Secret{{Group: "g", Key: "k", MountRequirement: MountEnvVar}}}
	if err := Apply(pod, sc); err != nil {
		t.Fatal(err)
	}
	if pod.Labels[LabelInject] != "true" || pod.Labels["app"] != "x" {
		t.Errorf("labels = %v, want the opt-in label added", pod.Labels)
	}
	got, ok, err := FromAnnotations(pod.Annotations)
	if err != nil || !ok {
		t.Fatalf("FromAnnotations = %v, %v", ok, err)
	}
	if diff := cmp.Diff(sc, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if err := Apply(pod, &SecurityContext{Secrets: []Secret{{}}}); err == nil {
		t.Error("Apply of an invalid SecurityContext: no error")
	}
	if _, ok, _ := FromAnnotations(nil); ok {
		t.Error("FromAnnotations(nil) reports an annotation")
	}
}

func TestValidateWithHTTPHosts(t *testing.T) {
	client := &OAuth2Client{ClientID: "c", ClientSecret: &Secret{Group: "s", Key: "k"}}
	sc := SecurityContext{Tokens: []OAuth2TokenRequest{
		{Name: "a", Client: client, TokenEndpoint: "http://10.0.0.200:8080/oauth/token"},
		{Name: "b", Client: client, IdpDiscoveryEndpoint: "http://10.0.0.200/.well-known/openid-configuration"},
	}}
	got := sc.ValidateWith(ValidateOptions{HTTPHosts: []string{"10.0.0.200:8080"}})
	want := ErrorList{Invalid("tokens[1].idpDiscoveryEndpoint", "http://10.0.0.200/.well-known/openid-configuration", "must be an https:// URL with a host")}
	if diff := cmp.Diff(want.Error(), got.Error()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if len(sc.Validate()) != 2 {
		t.Errorf("Validate allows http: %v", sc.Validate())
	}
}

// TestSecretNamesBounded: a group, groupVersion or key longer than
// MaxNameLength is refused, naming the field, before any store routes it
// (issue 23: routing costs each rule's pattern times the group's length).
func TestSecretNamesBounded(t *testing.T) {
	long := strings.Repeat("a", MaxNameLength+1)
	for _, s := range []Secret{{Group: long}, {Group: "g", GroupVersion: long}, {Group: "g", Key: long}} {
		s.MountRequirement = MountFile
		err := (&SecurityContext{Secrets: []Secret{s}}).Validate().Error()
		if !strings.Contains(err, "must be at most 4096 bytes") {
			t.Errorf("%+.40v: %v", s, err)
		}
	}
}
