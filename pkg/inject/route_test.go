package inject

import (
	"strings"
	"testing"
)

func routedConfig() Config {
	c := DefaultConfig()
	c.Agent.Image = "ghcr.io/secctx/secctx:0.1.0"
	c.Backends = []BackendRule{{Store: BackendAWS}, {Store: BackendGCP}, {Store: BackendAzure},
		{Group: "secret/*", Store: BackendVault}, {Group: "gcp-*", Store: BackendGCP}}
	c.Vault = VaultConfig{Mode: VaultModeAgent, Role: "flyte", Address: "https://vault:8200", KVVersion: "2"}
	c.GCP = GCPConfig{Project: "my-project"}
	c.Azure = AzureConfig{TenantID: "11111111-2222-3333-4444-555555555555"}
	return c
}

func TestStoreFor(t *testing.T) {
	c := routedConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for group, want := range map[string]string{
		"arn:aws:secretsmanager:us-east-1:123456789012:secret": BackendAWS,
		"projects/my-project/secrets/db":                       BackendGCP,
		"projects/p/secrets/../x":                              BackendKubernetes, // not the shape: the default, which refuses the name
		"https://kv1.vault.azure.net/secrets/db":               BackendAzure,
		"https://kv1.vault.azure.net.evil.com/secrets/db":      BackendKubernetes,
		"https://kv1.vault.azure.net:444/secrets/db":           BackendKubernetes,
		"secret/my-app": BackendVault,
		"secret":        BackendKubernetes,
		"gcp-db":        BackendGCP,
		"db":            BackendKubernetes,
		"":              BackendKubernetes,
	} {
		if got := c.StoreFor(group); got != want {
			t.Errorf("StoreFor(%q) = %s, want %s", group, got, want)
		}
	}
	if got, want := strings.Join(c.Stores(), ","), "kubernetes,aws,gcp,azure,vault"; got != want {
		t.Errorf("Stores() = %s, want %s", got, want)
	}
	// No rules: inject.backend alone, as before.
	d := DefaultConfig()
	d.Backend = BackendAWS
	if got := d.StoreFor("db"); got != BackendAWS {
		t.Errorf("no rules: StoreFor = %s, want aws", got)
	}
}

func TestValidateRules(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"unknown store", func(c *Config) { c.Backends[0].Store = "s3" }, `inject.backends[0].store "s3": must be aws, azure, gcp, kubernetes or vault`},
		{"vault without a pattern", func(c *Config) { c.Backends[3].Group = "" }, "inject.backends[3].group: required for store vault"},
		{"long pattern", func(c *Config) { c.Backends[3].Group = strings.Repeat("a", 1025) }, "inject.backends[3].group: 1025 bytes"},
		{"a rule's store is checked", func(c *Config) { c.Azure.TenantID = "" }, "inject.azure.tenantID \"\": required with backend azure"},
		{"injector mode beside a fetched store", func(c *Config) { c.Vault.Mode = VaultModeInjector }, "inject.backends: vault in injector mode cannot share an installation with aws, gcp, azure"},
		{"gcp federation audience", func(c *Config) { c.GCP.Federation = &GCPFederation{Audience: "sts.googleapis.com"} }, "inject.gcp.federation.audience: must be a workload identity pool provider"},
		{"gcp impersonation", func(c *Config) {
			c.GCP.Federation = &GCPFederation{Audience: "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pool1/providers/prov1", ServiceAccount: "x@evil.com"}
		}, "inject.gcp.federation.serviceAccount"},
		{"gcp endpoint with a scheme", func(c *Config) { c.GCP.Endpoint = "https://x:443" }, `inject.gcp.endpoint "https://x:443": must be host:port`},
		{"azure client id", func(c *Config) { c.Azure.ClientID = "{{x}}" }, "inject.azure.clientID"},
		{"azure http authority", func(c *Config) { c.Azure.AuthorityHost = "http://login.example.com/" }, "inject.azure.authorityHost"},
		{"azure suffix", func(c *Config) { c.Azure.VaultSuffix = "vault.azure.net/x" }, "inject.azure.vaultSuffix"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := routedConfig()
			tt.edit(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}
