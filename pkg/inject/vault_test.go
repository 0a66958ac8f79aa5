package inject

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestVaultIsDeterministic: the same pod gets the same annotations from two
// injectors (two replicas, or a re-applied pod), unlike Flyte's random ids.
func TestVaultIsDeterministic(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Backend = BackendVault
	pod := testPod(`{"secrets":[{"group":"secret/data/a","groupVersion":"kv2","key":"k","mountRequirement":"FILE"},{"group":"database/creds/ro","groupVersion":"db","key":"creds"}]}`)
	var patches []string
	for range 3 {
		out, err := newTestInjector(t, cfg).Patch(context.Background(), pod.DeepCopy(), "default")
		if err != nil {
			t.Fatal(err)
		}
		patches = append(patches, string(out.Patch))
	}
	if patches[0] != patches[1] || patches[1] != patches[2] {
		t.Errorf("patches differ:\n%s\n%s", patches[0], patches[1])
	}
	if !strings.Contains(patches[0], "agent-inject-secret-") {
		t.Errorf("no Vault annotations: %s", patches[0])
	}
}

func TestVaultAnnotationClash(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Backend = BackendVault
	pod := testPod(`{"secrets":[{"group":"secret/a","key":"k"}]}`)
	pod.Annotations["vault.hashicorp.com/role"] = "someone-else"
	_, _, err := newTestInjector(t, cfg).Inject(context.Background(), pod, "default")
	if want := `annotation vault.hashicorp.com/role is "someone-else"; secctx would set it to "flyte"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestConfigValidateBackend(t *testing.T) {
	vault := func(f func(*Config)) Config {
		c := DefaultConfig()
		c.Backend = BackendVault
		f(&c)
		return c
	}
	agent := func(f func(*Config)) Config {
		return vault(func(c *Config) {
			c.Vault.Mode, c.Vault.Address, c.Agent.Image = VaultModeAgent, "https://vault.example.com:8200", "secctx:1"
			f(c)
		})
	}
	aws := func(f func(*Config)) Config {
		c := DefaultConfig()
		c.Backend, c.Agent.Image = BackendAWS, "secctx:1"
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"default", DefaultConfig(), ""},
		{"vault agent", agent(func(*Config) {}), ""},
		{"vault agent without address", agent(func(c *Config) { c.Vault.Address = "" }), "inject.vault.address: required in vault agent mode: Vault's URL as the pods reach it"},
		{"vault agent plain http", agent(func(c *Config) { c.Vault.Address = "http://vault:8200" }), `inject.vault.address "http://vault:8200": must be https (http only for a host in inject.tokens.httpHosts)`},
		{"vault agent http allowed", agent(func(c *Config) { c.Vault.Address, c.Tokens.HTTPHosts = "http://vault:8200", []string{"vault:8200"} }), ""},
		{"vault agent address with query", agent(func(c *Config) { c.Vault.Address = "https://vault/?x=1" }), `inject.vault.address "https://vault/?x=1": must be an https URL with a host, and no user, query or fragment`},
		{"vault agent bad auth path", agent(func(c *Config) { c.Vault.AuthPath = "../sys" }), `inject.vault.authPath "../sys": must be a Vault path such as kubernetes`},
		{"vault agent role with slash", agent(func(c *Config) { c.Vault.Role = "a/b" }), `inject.vault.role "a/b": must be one Vault role name`},
		{"vault agent bad CA", agent(func(c *Config) { c.Vault.CABundle = "nope" }), "inject.vault.caBundle: must be PEM certificates (-----BEGIN CERTIFICATE-----) and nothing else"},
		{"vault agent without image", agent(func(c *Config) { c.Agent.Image = "" }), "inject.agent.image: required with vault agent mode: the fetch init container runs secctx's own image"},
		{"vault bad mode", vault(func(c *Config) { c.Vault.Mode = "sidecar" }), `inject.vault.mode "sidecar": must be injector or agent`},
		{"aws", aws(func(*Config) {}), ""},
		{"aws without image", aws(func(c *Config) { c.Agent.Image = "" }), "inject.agent.image: required with backend aws: the fetch init container runs secctx's own image"},
		{"aws endpoint", aws(func(c *Config) { c.AWS.STSEndpoint = "https://sts.us-east-1.amazonaws.com" }), ""},
		{"aws endpoint not a URL", aws(func(c *Config) { c.AWS.SecretsManagerEndpoint = "vpce-123" }), `inject.aws.secretsManagerEndpoint "vpce-123": must be an https URL with a host, and no user, query or fragment`},
		{"fetch timeout", aws(func(c *Config) { c.Agent.FetchTimeoutSeconds = 7200 }), "inject.agent.fetchTimeoutSeconds 7200: must be between 1 and 3600 (0: the default)"},
		{"refresh", aws(func(c *Config) { c.Refresh = RefreshConfig{IntervalSeconds: 300, Jitter: 0.2} }), ""},
		{"refresh too often", aws(func(c *Config) { c.Refresh.IntervalSeconds = 5 }), "inject.refresh.intervalSeconds 5: must be between 10 and 604800 (a week), or 0 for no refresh"},
		{"refresh jitter", aws(func(c *Config) { c.Refresh = RefreshConfig{IntervalSeconds: 300, Jitter: 0.9} }), "inject.refresh.jitter 0.9: must be between 0 and 0.5 (0: the default, 0.1)"},
		{"refresh without native sidecars", aws(func(c *Config) { c.Refresh.IntervalSeconds, c.Agent.NativeSidecars = 300, NativeSidecarsFalse }),
			"inject.refresh.intervalSeconds 300: needs native sidecars (Kubernetes 1.29 and later), which inject.agent.nativeSidecars says this cluster does not run; set it to 0"},
		{"vault", vault(func(*Config) {}), ""},
		{"unknown backend", func() Config { c := DefaultConfig(); c.Backend = "gcs"; return c }(), `inject.backend "gcs": must be aws, azure, gcp, kubernetes or vault`},
		{"no role", vault(func(c *Config) { c.Vault.Role = "" }), "inject.vault.role: required with backend vault"},
		{"bad kv version", vault(func(c *Config) { c.Vault.KVVersion = "3" }), `inject.vault.kvVersion "3": must be 1 or 2`},
		{"foreign annotation", vault(func(c *Config) { c.Vault.Annotations = map[string]string{"x/y": "1"} }), `inject.vault.annotations "x/y": must start with vault.hashicorp.com/`},
		{"per-secret annotation", vault(func(c *Config) {
			c.Vault.Annotations = map[string]string{"vault.hashicorp.com/agent-inject-secret-x": "p"}
		}), `inject.vault.annotations "vault.hashicorp.com/agent-inject-secret-x": secctx sets vault.hashicorp.com/agent-inject-secret-<id> for each secret`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestVaultTemplates: every key that is admitted renders its own value with
// Go's text/template and Vault Agent's function names, for KV v1 and v2;
// names that could change the template or the path are denied before
// admission, naming the field.
func TestVaultTemplates(t *testing.T) {
	tests := []struct {
		group, groupVersion, key string
		want                     string // a refusal, or "" to render
	}{
		{"secret/data/app", "", "api-key", ""},
		{"secret/data/app", "kv2", "tls.crt", ""},
		{"secret/legacy", "kv1", "Token", ""},
		{"secret/data/app", "", "with", ""},
		{"secret/data/app", "", "end", ""},
		{"secret/data/üñí", "", "schlüssel", ""},
		{"arn:aws:secretsmanager:us-east-1:1:secret:x", "", "user@example", ""},
		{"secret/data/app", "", `a"b`, `secrets[0].key "a\"b": with the vault backend, must be one path element`},
		{"secret/data/app", "", `}}{{ env "HOME" }}{{`, `secrets[0].key "}}{{ env \"HOME\" }}{{": with the vault backend`},
		{"secret/data/app", "", "a b", `secrets[0].key "a b"`},
		{"secret/data/app", "", "a/b", `secrets[0].key "a/b"`},
		{"secret/data/app", "", "..", `secrets[0].key ".."`},
		{"secret/data/app", "", "k\nx", `secrets[0].key "k\nx"`},
		{"secret/data/app", "../x", "k", `secrets[0].groupVersion "../x"`},
		{"/secret/app", "", "k", `secrets[0].group "/secret/app": with the vault backend, must be a Vault path`},
		{"secret//app", "", "k", `secrets[0].group "secret//app"`},
		{"secret/../../etc", "", "k", `secrets[0].group "secret/../../etc"`},
		{`secret/{{"x"}}`, "", "k", `secrets[0].group "secret/{{\"x\"}}"`},
		{"secret/app", "", strings.Repeat("k", 256), `must be at most 255 bytes with the vault backend`},
	}
	cfg := DefaultConfig()
	cfg.Backend = BackendVault
	cfg.Vault.Mounts = append(DefaultVaultMounts(), "arn:aws:secretsmanager:us-east-1:1:secret:x")
	for _, tt := range tests {
		t.Run(tt.group+"/"+tt.groupVersion+"/"+tt.key, func(t *testing.T) {
			sc, _ := json.Marshal(map[string]any{"secrets": []map[string]string{
				{"group": tt.group, "groupVersion": tt.groupVersion, "key": tt.key, "mountRequirement": "FILE"}}})
			out, _, err := newTestInjector(t, cfg).Inject(context.Background(), testPod(string(sc)), "default")
			if tt.want != "" {
				if !IsDenied(err) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("want a refusal containing %s, got %v", tt.want, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st := newStore()
			st.put(tt.group, tt.groupVersion, tt.key)
			_, files := runAsVaultAgent(t, out, st)
			want := fakeValue(tt.group, tt.groupVersion, tt.key)
			if len(files) != 1 || slices.Collect(maps.Values(files))[0] != want {
				t.Errorf("rendered %v, want one file holding %q", files, want)
			}
		})
	}
}
