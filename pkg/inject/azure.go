package inject

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/pkg/agentapi"
	"github.com/secctx/secctx/pkg/securityctx"
)

// BackendAzure is Azure Key Vault, read by the fetch init container.
const BackendAzure = "azure"

func init() { stores[BackendAzure] = azureStore{} }

// AzureConfig is the azure backend's settings (docs/backends.md).
type AzureConfig struct {
	// TenantID is the Entra tenant of the applications the pods run as.
	TenantID string `json:"tenantID"`
	// ClientID is the application (client) id a pod runs as when its
	// service account has no azure.workload.identity/client-id annotation.
	ClientID string `json:"clientID,omitempty"`
	// AuthorityHost is Entra's login endpoint (https://login.microsoftonline.com/).
	AuthorityHost string `json:"authorityHost,omitempty"`
	// VaultSuffix is the DNS suffix of the vaults (vault.azure.net; the
	// sovereign clouds have their own).
	VaultSuffix string `json:"vaultSuffix,omitempty"`
	// CABundle is PEM certificates to trust for Entra and the vaults
	// besides the system's.
	CABundle string `json:"caBundle,omitempty"`
	// TaskIdentity gives the target containers of a pod that reads Key
	// Vault the fetch's Azure Workload Identity too: the AZURE_* variables
	// and the token, read-only, so that the task's own Azure SDK signs in
	// as the same application, without the Azure Workload Identity webhook.
	TaskIdentity bool `json:"taskIdentity,omitempty"`
}

// What Azure Workload Identity gives a pod, the names its webhook uses, so
// that the SDKs' WorkloadIdentityCredential finds them.
const (
	EnvAzureClientID      = "AZURE_CLIENT_ID"
	EnvAzureTenantID      = "AZURE_TENANT_ID"
	EnvAzureAuthorityHost = "AZURE_AUTHORITY_HOST"
	EnvAzureTokenFile     = "AZURE_FEDERATED_TOKEN_FILE"
	// EnvAzureCABundle carries inject.azure.caBundle to the fetch.
	EnvAzureCABundle = "SECCTX_AZURE_CA_BUNDLE"
	// AzureClientIDAnnotation on a service account names the application
	// its pods run as (Azure Workload Identity's annotation).
	AzureClientIDAnnotation = "azure.workload.identity/client-id"
	azureTokenVolumeName    = "secctx-azure-token"
	// azureTokenDir is secctx's own, not Azure Workload Identity's
	// /var/run/secrets/azure/tokens: where that webhook runs too, it
	// mounts its volume there in every container, the fetch included.
	azureTokenDir  = "/var/run/secrets/secctx/azure"
	azureTokenFile = azureTokenDir + "/azure-identity-token"
	// azureAudience is the audience Entra accepts in a federated assertion.
	azureAudience                 = "api://AzureADTokenExchange"
	azureTokenSeconds       int64 = 3600
	azureDefaultAuthority         = "https://login.microsoftonline.com/"
	azureDefaultVaultSuffix       = "vault.azure.net"
)

// azureStore reads Azure Key Vault as the pod's own identity: the
// application its service account names, through Azure Workload Identity's
// federated token, built in (no Azure Workload Identity webhook needed).
//
// Two forms of a request. Flyte 2's: the group is the secret's URL,
// https://<vault>.vault.azure.net/secrets/<name>[/<version>], and the file
// is <secretsDir>/<lower name>[/<lower version>], where Flyte 2 writes it;
// the key is not used (Flyte 2's SDK always sets one). flytekit's: the group
// is the vault's name, the key the secret's and groupVersion its version,
// and the file is where flytekit looks, <secretsDir>/<lower vault>[/<lower
// version>]/<lower name>.
type azureStore struct{}

func (azureStore) fetched(Config) bool { return true }

// owns: a secret's URL in a vault of the configured suffix.
func (azureStore) owns(c Config, group string) bool {
	_, _, _, ok := parseVaultURL(c.Azure, group)
	return ok
}

var (
	azureGUID      = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	azureVaultName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]$`)
	azureSecret    = regexp.MustCompile(`^[A-Za-z0-9-]{1,127}$`)
	azureVersion   = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)
	dnsSuffix      = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$`)
)

func (c AzureConfig) vaultSuffix() string { return or(c.VaultSuffix, azureDefaultVaultSuffix) }

func (azureStore) validate(c Config) error {
	a := c.Azure
	if !azureGUID.MatchString(a.TenantID) {
		return fmt.Errorf("inject.azure.tenantID %q: required with backend azure: the Entra tenant's id, a GUID", a.TenantID)
	}
	if a.ClientID != "" && !azureGUID.MatchString(a.ClientID) {
		return fmt.Errorf("inject.azure.clientID %q: must be an application (client) id, a GUID", a.ClientID)
	}
	if a.AuthorityHost != "" {
		if err := checkURL("inject.azure.authorityHost", a.AuthorityHost, c.Tokens.HTTPHosts); err != nil {
			return err
		}
	}
	if a.VaultSuffix != "" && !dnsSuffix.MatchString(a.VaultSuffix) {
		return fmt.Errorf("inject.azure.vaultSuffix %q: must be a DNS suffix such as vault.azure.net", a.VaultSuffix)
	}
	if a.CABundle != "" {
		if err := checkPEM(a.CABundle); err != nil {
			return fmt.Errorf("inject.azure.caBundle: %w", err)
		}
	}
	return checkAgentImage(c, "backend azure")
}

func (azureStore) plan(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	a := cfg.Azure
	fp := &fetchPlan{store: BackendAzure, desc: "Azure Key Vault", keyOptional: true,
		env: []corev1.EnvVar{
			{Name: EnvAzureClientID, Value: a.ClientID},
			{Name: EnvAzureTenantID, Value: a.TenantID},
			{Name: EnvAzureAuthorityHost, Value: or(a.AuthorityHost, azureDefaultAuthority)},
			{Name: EnvAzureTokenFile, Value: azureTokenFile},
		},
		// The token Entra takes as the application's credential, for the
		// pod's final account.
		volumes: []corev1.Volume{loginTokenVolume(azureTokenVolumeName, azureAudience, "azure-identity-token", azureTokenSeconds)},
		mounts:  []corev1.VolumeMount{{Name: azureTokenVolumeName, MountPath: azureTokenDir, ReadOnly: true}},
		names: func(s *securityctx.Secret) securityctx.Secret {
			if _, name, version, ok := parseVaultURL(a, s.Group); ok {
				return securityctx.Secret{Group: name, GroupVersion: version}
			}
			return *s
		},
	}
	if a.CABundle != "" {
		fp.env = append(fp.env, corev1.EnvVar{Name: EnvAzureCABundle, Value: a.CABundle})
	}
	p, errs := planFetched(cfg, fp, secrets, fields, func(s *securityctx.Secret, field string) (agentapi.Secret, securityctx.ErrorList) {
		return locateAzure(a, s, field)
	})
	if !a.TaskIdentity || p == nil || p.fetch == nil {
		return p, errs
	}
	// The task gets what the fetch gets: the same variables (the client
	// id set for each pod, azureClientID) and the same token, whose volume
	// the plan then adds once, for the targets and the fetch.
	for _, e := range fp.env[:4] {
		if err := p.addEnv(envItem{env: e, by: azureTaskField}, azureTaskField); err != nil {
			errs = append(errs, err)
		}
	}
	p.volumes = append(p.volumes, &secretVolume{dir: azureTokenDir, by: azureTaskField, desc: "the Azure Workload Identity token", volume: fp.volumes[0]})
	fp.volumes = fp.volumes[1:]
	return p, errs
}

// azureTaskField names inject.azure.taskIdentity's env vars and volume in
// messages.
const azureTaskField = "inject.azure.taskIdentity"

// azureClientID is the application a pod reading Key Vault runs as: its
// service account's azure.workload.identity/client-id annotation, else
// inject.azure.clientID. The account is runAs.k8sServiceAccount when set
// (sa), which the pod moves to, else the pod's own. msg, when set, is why
// the pod is refused.
func (in *Injector) azureClientID(ctx context.Context, pod *corev1.Pod, namespace, sa string) (id, msg string, err error) {
	account := sa
	if account == "" {
		account = podServiceAccount(pod)
	}
	if account == "" {
		account = defaultServiceAccount
	}
	if in.sas != nil {
		acct, err := in.sas.ServiceAccount(ctx, namespace, account)
		if err != nil {
			return "", "", fmt.Errorf("get service account %s/%s: %w", namespace, account, err)
		}
		if v := annotation(acct, AzureClientIDAnnotation); v != "" {
			if !azureGUID.MatchString(v) {
				return "", fmt.Sprintf("service account %s/%s: annotation %s %s must be an application (client) id, a GUID",
					namespace, account, AzureClientIDAnnotation, securityctx.Quote(v)), nil
			}
			return v, "", nil
		}
	}
	if in.cfg.Azure.ClientID == "" {
		return "", fmt.Sprintf("the pod reads Azure Key Vault as the application its service account %s/%s names, and it names none: "+
			"annotate the account with %s: <application (client) id>, or set inject.azure.clientID", namespace, account, AzureClientIDAnnotation), nil
	}
	return in.cfg.Azure.ClientID, "", nil
}

// parseVaultURL splits https://<vault>.<suffix>/secrets/<name>[/<version>];
// ok only for exactly that: no port, user, query, fragment or other path.
func parseVaultURL(a AzureConfig, group string) (vault, name, version string, ok bool) {
	if !strings.HasPrefix(group, "https://") || len(group) > 512 {
		return "", "", "", false
	}
	u, err := url.Parse(group)
	if err != nil || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Port() != "" || u.RawPath != "" {
		return "", "", "", false
	}
	vault, found := strings.CutSuffix(u.Host, "."+a.vaultSuffix())
	if !found || !azureVaultName.MatchString(vault) {
		return "", "", "", false
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != "secrets" || !azureSecret.MatchString(parts[1]) {
		return "", "", "", false
	}
	if len(parts) == 3 {
		if !azureVersion.MatchString(parts[2]) {
			return "", "", "", false
		}
		version = parts[2]
	}
	return vault, parts[1], version, true
}

func locateAzure(a AzureConfig, s *securityctx.Secret, field string) (agentapi.Secret, securityctx.ErrorList) {
	suffix := a.vaultSuffix()
	if strings.HasPrefix(s.Group, "https://") {
		vault, name, version, ok := parseVaultURL(a, s.Group)
		if !ok {
			return agentapi.Secret{}, securityctx.ErrorList{securityctx.Invalid(field+".group", s.Group, fmt.Sprintf(
				"with backend azure, a Key Vault secret's URL must be https://<vault>.%s/secrets/<name>[/<version>]: a vault name of 3 to 24 letters, digits and -, "+
					"a secret name of 1 to 127 letters, digits and -, a version of 32 hex digits, and no port, query or fragment", suffix))}
		}
		if s.GroupVersion != "" {
			return agentapi.Secret{}, securityctx.ErrorList{securityctx.Invalid(field+".groupVersion", s.GroupVersion,
				"with backend azure, leave it out when the group is a secret's URL: the version is the URL's last element")}
		}
		return agentapi.Secret{ID: "https://" + vault + "." + suffix + "/secrets/" + name, Version: version}, nil
	}
	var errs securityctx.ErrorList
	if !azureVaultName.MatchString(s.Group) {
		errs = append(errs, securityctx.Invalid(field+".group", s.Group, fmt.Sprintf(
			"with backend azure, a vault's name (3 to 24 letters, digits and -, starting with a letter), or a secret's URL https://<vault>.%s/secrets/<name>", suffix)))
	}
	switch {
	case s.Key == "":
		errs = append(errs, &securityctx.FieldError{Field: field + ".key",
			Detail: "required with backend azure when the group is a vault's name: the secret's name in the vault"})
	case !azureSecret.MatchString(s.Key):
		errs = append(errs, securityctx.Invalid(field+".key", s.Key, "with backend azure, a Key Vault secret's name: 1 to 127 letters, digits and -"))
	}
	if v := s.GroupVersion; v != "" && !azureVersion.MatchString(v) {
		errs = append(errs, securityctx.Invalid(field+".groupVersion", v, "with backend azure, a Key Vault secret's version: 32 hex digits"))
	}
	return agentapi.Secret{ID: "https://" + strings.ToLower(s.Group) + "." + suffix + "/secrets/" + s.Key, Version: s.GroupVersion}, errs
}
