package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/secctx/secctx/pkg/agent/internal/storekit"
	"github.com/secctx/secctx/pkg/agentapi"
)

func init() { RegisterStore(agentapi.StoreAzure, openAzure) }

// AzureConfig is the pod's Azure Workload Identity, from the variables
// that the webhook sets in the fetch container as the Azure Workload
// Identity webhook would (AZURE_CLIENT_ID, AZURE_TENANT_ID,
// AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST).
type AzureConfig struct {
	// ClientID is the managed identity's or app registration's client id.
	ClientID string
	// TenantID is its Microsoft Entra tenant.
	TenantID string
	// TokenFile is the pod's projected service-account token, the
	// federated credential's assertion.
	TokenFile string
	// AuthorityHost is Microsoft Entra's URL; empty is the public cloud's.
	AuthorityHost string
	// CABundle is PEM certificates to trust besides the system's, for
	// Entra and Key Vault (SECCTX_AZURE_CA_BUNDLE).
	CABundle string

	// dial, when set, replaces the dialer: the tests reach a vault host
	// under vault.azure.net, as challenge verification requires, on a
	// loopback listener.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// azurePublicAuthorities are Microsoft's own Entra hosts, where the SDK's
// instance discovery applies; for any other it is turned off, since it
// would ask login.microsoftonline.com about a host it does not know.
var azurePublicAuthorities = []string{"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn", "login.microsoftonline.de"}

var azureSecretName = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

// azureStore reads Azure Key Vault as the pod's Workload Identity: Entra
// exchanges the pod's service-account token for an access token of the
// managed identity (or app) that trusts it.
type azureStore struct {
	cred    azcore.TokenCredential
	opts    azsecrets.ClientOptions
	clients map[string]*azsecrets.Client // by vault host
	// clientID and who name the identity in messages.
	clientID, tenantID, who string
}

func openAzure(_ context.Context, cfg FetchConfig, secrets []agentapi.Secret) (Store, error) {
	a := cfg.Azure
	for _, s := range secrets {
		if _, _, err := azureSecretURL(s); err != nil {
			return nil, Permanent(fmt.Errorf("%s (%s): %w", s.Field, storekit.Describe(s), err))
		}
	}
	if a.ClientID == "" || a.TenantID == "" || a.TokenFile == "" {
		return nil, Permanent(errors.New("azure: AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE are required (Azure Workload Identity)"))
	}
	jwt, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return nil, Permanent(fmt.Errorf("azure: read the pod's service-account token: %w", err))
	}
	tlsConf, err := storekit.TLS(a.CABundle, "SECCTX_AZURE_CA_BUNDLE")
	if err != nil {
		return nil, Permanent(fmt.Errorf("azure: %w", err))
	}
	hc := storekit.HTTPClient(tlsConf)
	if a.dial != nil {
		hc.Transport.(*http.Transport).DialContext = a.dial
	}
	authority := a.AuthorityHost
	if authority == "" {
		authority = cloud.AzurePublic.ActiveDirectoryAuthorityHost
	}
	au, err := url.Parse(authority)
	if err != nil || au.Scheme != "https" || au.Host == "" {
		return nil, Permanent(fmt.Errorf("azure: AZURE_AUTHORITY_HOST %q: must be an https URL", authority))
	}
	co := azcore.ClientOptions{
		// Set in full, so that the SDK reads nothing of the environment.
		Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: authority},
		Transport: hc,
		// The fetch's own loop retries, with its backoff and --timeout.
		Retry: policy.RetryOptions{MaxRetries: -1},
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: co, ClientID: a.ClientID, TenantID: a.TenantID, TokenFilePath: a.TokenFile,
		DisableInstanceDiscovery: !azurePublicAuthority(au.Hostname()),
	})
	if err != nil {
		return nil, Permanent(fmt.Errorf("azure: workload identity: %w", err))
	}
	return &azureStore{
		cred: cred,
		// Challenge resource verification stays on: the token goes to no
		// host but a vault's.
		opts:     azsecrets.ClientOptions{ClientOptions: co},
		clients:  map[string]*azsecrets.Client{},
		clientID: a.ClientID, tenantID: a.TenantID, who: storekit.TokenSubject(string(jwt)),
	}, nil
}

func azurePublicAuthority(host string) bool {
	for _, h := range azurePublicAuthorities {
		if strings.EqualFold(host, h) {
			return true
		}
	}
	return false
}

// azureSecretURL splits a secret's id, https://<vault host>/secrets/<name>,
// into the vault's URL and the name.
func azureSecretURL(s agentapi.Secret) (vault, name string, err error) {
	u, err := url.Parse(s.ID)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", errors.New("azure: id must be https://<vault host>/secrets/<name>")
	}
	name, ok := strings.CutPrefix(strings.TrimSuffix(u.Path, "/"), "/secrets/")
	if !ok || !azureSecretName.MatchString(name) {
		return "", "", errors.New("azure: id must be https://<vault host>/secrets/<name>")
	}
	if s.Version != "" && !azureSecretName.MatchString(s.Version) {
		return "", "", errors.New("azure: version must be a Key Vault secret version")
	}
	if s.Key != "" {
		return "", "", errors.New("azure: key is not supported: a Key Vault secret is written whole")
	}
	return "https://" + strings.ToLower(u.Host), name, nil
}

func (a *azureStore) Read(ctx context.Context, s agentapi.Secret) ([]byte, error) {
	vault, name, err := azureSecretURL(s)
	if err != nil {
		return nil, Permanent(err)
	}
	client, ok := a.clients[vault]
	if !ok {
		if client, err = azsecrets.NewClient(vault, a.cred, &a.opts); err != nil {
			return nil, Permanent(fmt.Errorf("azure: %w", err))
		}
		a.clients[vault] = client
	}
	resp, err := client.GetSecret(ctx, name, s.Version, nil)
	if err != nil {
		return nil, a.failure(vault, err)
	}
	if resp.Value == nil {
		return nil, Permanent(fmt.Errorf("azure get %s/secrets/%s: Key Vault's answer has no value", vault, name))
	}
	return []byte(*resp.Value), nil
}

// nonRetriable is the mark of the SDK's errors that a retry cannot mend
// (azcore's errorinfo.NonRetriable).
type nonRetriable interface{ NonRetriable() }

// failure words an SDK error and says whether it is worth retrying: a
// missing secret, a denied read or a refused token is not.
func (a *azureStore) failure(vault string, err error) error {
	identity := fmt.Sprintf("client %s of tenant %s with the pod's service account %s", a.clientID, a.tenantID, a.who)
	var af *azidentity.AuthenticationFailedError
	if errors.As(err, &af) {
		if af.RawResponse == nil {
			return fmt.Errorf("azure: token from Microsoft Entra for %s: %s", identity, storekit.OneLine(af.Error()))
		}
		code := af.RawResponse.StatusCode
		msg := fmt.Errorf("azure: token from Microsoft Entra for %s: HTTP %d%s", identity, code, entraError(af.RawResponse))
		if storekit.Refused(code) || code >= 300 && code < 400 {
			return Permanent(fmt.Errorf("%w (refused: check the identity's federated credential for this service account)", msg))
		}
		return msg
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("azure get from %s: HTTP %d %s%s", vault, re.StatusCode, re.ErrorCode, vaultErrorMessage(re.RawResponse))
		switch {
		case re.StatusCode == http.StatusNotFound:
			return Permanent(fmt.Errorf("%s (not found in Key Vault)", msg))
		case re.StatusCode == http.StatusUnauthorized || re.StatusCode == http.StatusForbidden:
			return Permanent(fmt.Errorf("%s (access denied to %s: it needs the Key Vault Secrets User role, or a get-secret access policy)", msg, identity))
		case storekit.Refused(re.StatusCode) || re.StatusCode >= 300 && re.StatusCode < 400:
			return Permanent(errors.New(msg))
		}
		return errors.New(msg)
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("azure get from %s: %w", vault, err)
	}
	// Such as a challenge from a host that is not the vault's: the SDK
	// marks what it will not retry, and no retry of ours would mend it.
	var nr nonRetriable
	if errors.As(err, &nr) {
		return Permanent(fmt.Errorf("azure get from %s: %w", vault, err))
	}
	return fmt.Errorf("azure get from %s: %w", vault, err)
}

// entraError is ": <error>: <error_description>" of an Entra error answer
// (RFC 6749 section 5.2), or nothing.
func entraError(res *http.Response) string {
	b, err := runtime.Payload(res)
	if err != nil {
		return ""
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error == "" {
		return ""
	}
	return ": " + e.Error + ": " + storekit.OneLine(e.Description)
}

// vaultErrorMessage is ": <message>" of a Key Vault error answer, or
// nothing.
func vaultErrorMessage(res *http.Response) string {
	if res == nil {
		return ""
	}
	b, err := runtime.Payload(res)
	if err != nil {
		return ""
	}
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Message == "" {
		return ""
	}
	return ": " + storekit.OneLine(e.Error.Message)
}
