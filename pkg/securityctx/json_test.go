package securityctx

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *SecurityContext
	}{{
		name: "contract example, camelCase",
		in: `{
		  "runAs": {"k8sServiceAccount": "data-processing-sa", "iamRole": "arn:aws:iam::123456789012:role/r",
		            "executionIdentity": "alice@example.com",
		            "oauth2Client": {"clientId": "my-app", "clientSecret": {"group": "oauth", "key": "client-secret"}}},
		  "secrets": [
		    {"group": "my-credentials", "key": "db_password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"},
		    {"group": "my-certs", "key": "tls.key", "groupVersion": "v2", "mountRequirement": "FILE", "envVar": "TLS_KEY_PATH"}
		  ],
		  "tokens": [{"name": "external-api-access", "type": "CLIENT_CREDENTIALS",
		              "client": {"clientId": "my-app", "clientSecret": {"group": "oauth", "key": "client-secret"}},
		              "tokenEndpoint": "https://auth.example.com/oauth2/token"}]
		}`,
		want: &SecurityContext{
			RunAs: &Identity{
				K8sServiceAccount: "data-processing-sa", IAMRole: "arn:aws:iam::123456789012:role/r",
				ExecutionIdentity: "alice@example.com",
				OAuth2Client:      &OAuth2Client{ClientID: "my-app", ClientSecret: &Secret{Group: "oauth", Key: "client-secret"}},
			},
			Secrets: []Secret{
				{Group: "my-credentials", Key: "db_password", MountRequirement: MountEnvVar, EnvVar: "DB_PASSWORD"},
				{Group: "my-certs", Key: "tls.key", GroupVersion: "v2", MountRequirement: MountFile, EnvVar: "TLS_KEY_PATH"},
			},
			Tokens: []OAuth2TokenRequest{{
				Name: "external-api-access", Type: TokenClientCredentials,
				Client:        &OAuth2Client{ClientID: "my-app", ClientSecret: &Secret{Group: "oauth", Key: "client-secret"}},
				TokenEndpoint: "https://auth.example.com/oauth2/token",
			}},
		},
	}, {
		name: "snake_case names and enum numbers",
		in: `{"run_as": {"k8s_service_account": "sa", "execution_identity": "bob", "oauth2_client": {"client_id": "c", "client_secret": {"group": "g"}}},
		      "secrets": [{"group": "g", "group_version": "v1", "key": "k", "mount_requirement": 2, "env_var": "X"}],
		      "tokens": [{"name": "t", "type": 0, "idp_discovery_endpoint": "https://idp.example.com/.well-known/openid-configuration", "token_endpoint": ""}],
		      "connection_ref": "c1"}`,
		want: &SecurityContext{
			RunAs:         &Identity{K8sServiceAccount: "sa", ExecutionIdentity: "bob", OAuth2Client: &OAuth2Client{ClientID: "c", ClientSecret: &Secret{Group: "g"}}},
			Secrets:       []Secret{{Group: "g", GroupVersion: "v1", Key: "k", MountRequirement: MountFile, EnvVar: "X"}},
			Tokens:        []OAuth2TokenRequest{{Name: "t", IdpDiscoveryEndpoint: "https://idp.example.com/.well-known/openid-configuration"}},
			ConnectionRef: "c1",
		},
	}, {
		name: "nulls are unset",
		in:   `{"runAs": null, "secrets": [{"group": "g", "key": null, "mountRequirement": null}], "tokens": null}`,
		want: &SecurityContext{Secrets: []Secret{{Group: "g"}}},
	}, {
		name: "empty object",
		in:   ` {} `,
		want: &SecurityContext{},
	}, {
		name: "ANY by name",
		in:   `{"secrets": [{"group": "g", "mountRequirement": "ANY"}]}`,
		want: &SecurityContext{Secrets: []Secret{{Group: "g", MountRequirement: MountAny}}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode([]byte(tt.in))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"invalid JSON", `{"secrets": [`, "invalid JSON"},
		{"not an object", `[1]`, "must be a JSON object, not an array"},
		{"null document", `null`, "must be a JSON object, not null"},
		{"empty", ``, "invalid JSON: unexpected end of input"},
		{"trailing data", `{} {}`, "invalid JSON: data after the object"},
		{"unknown top-level field", `{"secret": []}`, `secret: unknown field; allowed: runAs, secrets, tokens, connectionRef`},
		{"unknown secret field", `{"secrets": [{"group": "g", "mount": "FILE"}]}`, `secrets[0].mount: unknown field; allowed: group, groupVersion, key, mountRequirement, envVar`},
		{"unknown identity field", `{"runAs": {"serviceAccount": "x"}}`, `runAs.serviceAccount: unknown field`},
		{"field twice under two names", `{"secrets": [{"group": "a", "env_var": "X", "envVar": "Y"}]}`, `secrets[0].envVar: given twice (also as "env_var")`},
		{"field twice", `{"secrets": [{"group": "a", "group": "b"}]}`, `secrets[0].group: given twice (also as "group")`},
		{"bad mount type name", `{"secrets": [{"group": "g", "mountRequirement": "DISK"}]}`, `secrets[0].mountRequirement "DISK": must be one of ANY, ENV_VAR, FILE (or 0, 1, 2)`},
		{"bad mount type number", `{"secrets": [{"group": "g", "mountRequirement": 7}]}`, `secrets[0].mountRequirement "7": must be one of ANY, ENV_VAR, FILE (or 0, 1, 2)`},
		{"mount type as bool", `{"secrets": [{"group": "g", "mountRequirement": true}]}`, `secrets[0].mountRequirement "true": must be one of`},
		{"bad token type", `{"tokens": [{"name": "t", "type": "PASSWORD"}]}`, `tokens[0].type "PASSWORD": must be one of CLIENT_CREDENTIALS (or 0)`},
		{"group not a string", `{"secrets": [{"group": 5}]}`, `secrets[0].group: must be a string, not a number`},
		{"secrets not an array", `{"secrets": {"group": "g"}}`, `secrets: must be a JSON array`},
		{"secret not an object", `{"secrets": ["g"]}`, `secrets[0]: must be a JSON object, not a string`},
		{"every error at once", `{"x": 1, "secrets": [{"y": 2}]}`, `x: unknown field; allowed: runAs, secrets, tokens, connectionRef; secrets[0].y: unknown field`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode(%s) = nil error, want %q", tt.in, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decode(%s) error:\n  %v\nwant it to contain:\n  %s", tt.in, err, tt.want)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	sc := &SecurityContext{
		RunAs:   &Identity{K8sServiceAccount: "sa"},
		Secrets: []Secret{{Group: "g", Key: "k", MountRequirement: MountEnvVar, EnvVar: "K"}, {Group: "h"}},
		Tokens: []OAuth2TokenRequest{{Name: "t", Client: &OAuth2Client{ClientID: "c", ClientSecret: &Secret{Group: "s"}},
			TokenEndpoint: "https://e.example.com/t"}},
	}
	s, err := Encode(sc)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"runAs":{"k8sServiceAccount":"sa"},"secrets":[{"group":"g","key":"k","mountRequirement":"ENV_VAR","envVar":"K"},{"group":"h"}],"tokens":[{"name":"t","client":{"clientId":"c","clientSecret":{"group":"s"}},"tokenEndpoint":"https://e.example.com/t"}]}`
	if s != want {
		t.Errorf("Encode:\n got %s\nwant %s", s, want)
	}
	var back SecurityContext
	if err := json.Unmarshal([]byte(s), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sc, &back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if _, err := Encode(&SecurityContext{Secrets: []Secret{{Group: "g", MountRequirement: 9}}}); err == nil {
		t.Error("Encode of an undefined mount type: no error")
	}
}

func TestUnmarshalJSONIsStrict(t *testing.T) {
	var sc SecurityContext
	err := json.Unmarshal([]byte(`{"secrets":[{"group":"g","extra":1}]}`), &sc)
	if err == nil || !strings.Contains(err.Error(), "secrets[0].extra: unknown field") {
		t.Errorf("json.Unmarshal error = %v, want the unknown field named", err)
	}
}

func TestParseReportsDecodeAndValidationErrors(t *testing.T) {
	sc, errs := Parse([]byte(`{"secrets": [{"group": "g", "envVar": "bad-name"}, {"group": 5, "mountRequirement": "DISK"}, {"key": "k"}]}`))
	if sc == nil {
		t.Fatal("Parse returned no value for well-formed JSON")
	}
	want := `secrets[1].group: must be a string, not a number; secrets[1].mountRequirement "DISK": must be one of ANY, ENV_VAR, FILE (or 0, 1, 2); ` +
		`secrets[0].envVar "bad-name": must match ^[A-Z_][A-Z0-9_]*$; secrets[2].group: required`
	if errs.Error() != want {
		t.Errorf("Parse errors:\n got %s\nwant %s", errs, want)
	}
	if sc, errs := Parse([]byte(`{"secrets": [`)); sc != nil || len(errs) != 1 {
		t.Errorf("Parse of malformed JSON = %v, %v", sc, errs)
	}
}
