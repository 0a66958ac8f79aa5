package inject

import (
	"context"
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
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"default", DefaultConfig(), ""},
		{"vault", vault(func(*Config) {}), ""},
		{"unknown backend", func() Config { c := DefaultConfig(); c.Backend = "aws"; return c }(), `inject.backend "aws": must be kubernetes or vault`},
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
