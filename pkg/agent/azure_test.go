package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azfake "github.com/Azure/azure-sdk-for-go/sdk/azcore/fake"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets/fake"

	"github.com/secctx/secctx/pkg/agentapi"
)

const (
	testTenant   = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	testClientID = "0b6f1d52-8f1e-4c1a-9a4c-3b5a5c9d6e7f"
	oldVersion   = "0123456789abcdef0123456789abcdef"
)

// TestAzureReadFake: the SDK's fake Key Vault shows how the store reads a
// secret and words what Key Vault answers: the current value or a
// version; a missing secret and a denied read for good, naming the
// identity; a busy vault worth a retry; an answer without a value an error.
func TestAzureReadFake(t *testing.T) {
	srv := fake.Server{GetSecret: func(_ context.Context, name, version string, _ *azsecrets.GetSecretOptions) (resp azfake.Responder[azsecrets.GetSecretResponse], errResp azfake.ErrorResponder) {
		switch {
		case name == "db" && version == "":
			resp.SetResponse(http.StatusOK, azsecrets.GetSecretResponse{Secret: azsecrets.Secret{Value: to.Ptr("current")}}, nil)
		case name == "db" && version == oldVersion:
			resp.SetResponse(http.StatusOK, azsecrets.GetSecretResponse{Secret: azsecrets.Secret{Value: to.Ptr("old")}}, nil)
		case name == "denied":
			errResp.SetResponseError(http.StatusForbidden, "Forbidden")
		case name == "busy":
			errResp.SetResponseError(http.StatusServiceUnavailable, "ServiceUnavailable")
		case name == "empty":
			resp.SetResponse(http.StatusOK, azsecrets.GetSecretResponse{}, nil)
		default:
			errResp.SetResponseError(http.StatusNotFound, "SecretNotFound")
		}
		return
	}}
	client, err := azsecrets.NewClient("https://x.vault.azure.net", &azfake.TokenCredential{}, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: fake.NewServerTransport(&srv), Retry: policy.RetryOptions{MaxRetries: -1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	st := &azureStore{clients: map[string]*azsecrets.Client{"https://x.vault.azure.net": client},
		clientID: testClientID, tenantID: testTenant, who: "system:serviceaccount:team-a:task"}
	secret := func(name, version string) agentapi.Secret {
		return agentapi.Secret{Field: "secrets[0]", Store: agentapi.StoreAzure, ID: "https://x.vault.azure.net/secrets/" + name, Version: version}
	}
	for _, tc := range []struct {
		secret    agentapi.Secret
		value     string
		err       string
		permanent bool
	}{
		{secret: secret("db", ""), value: "current"},
		{secret: secret("db", oldVersion), value: "old"},
		{secret: secret("nope", ""), err: "azure get from https://x.vault.azure.net: HTTP 404 SecretNotFound (not found in Key Vault)", permanent: true},
		{secret: secret("denied", ""), err: "HTTP 403 Forbidden (access denied to client " + testClientID + " of tenant " + testTenant +
			" with the pod's service account system:serviceaccount:team-a:task", permanent: true},
		{secret: secret("busy", ""), err: "HTTP 503 ServiceUnavailable"},
		{secret: secret("empty", ""), err: "Key Vault's answer has no value", permanent: true},
	} {
		v, err := st.Read(context.Background(), tc.secret)
		switch {
		case tc.err == "" && (err != nil || string(v) != tc.value):
			t.Errorf("%s %s: %q, %v; want %q", tc.secret.ID, tc.secret.Version, v, err, tc.value)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || IsPermanent(err) != tc.permanent):
			t.Errorf("%s: %v (permanent %v)\nwant %q (permanent %v)", tc.secret.ID, err, IsPermanent(err), tc.err, tc.permanent)
		}
	}
}

// entra is Microsoft Entra of the test's, for one tenant: OpenID discovery,
// and a token endpoint that gives az-token for a client credentials grant
// whose client_assertion is the pod's token and whose client is clientID.
type entra struct {
	srv       *httptest.Server
	assertion string
	clientID  string
	tokens    atomic.Int64
}

func newEntra(t *testing.T, tlsConf *tls.Config, assertion string) *entra {
	e := &entra{assertion: assertion, clientID: testClientID}
	e.srv = tlsTestServer(t, tlsConf, func(w http.ResponseWriter, r *http.Request) {
		base := e.srv.URL + "/" + testTenant
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/" + testTenant + "/v2.0/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]string{
				"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize",
				"issuer": base + "/v2.0", "tenant_region_scope": "NA",
			})
		case "/" + testTenant + "/oauth2/v2.0/token":
			e.tokens.Add(1)
			r.ParseForm()
			f := r.PostForm
			if f.Get("grant_type") != "client_credentials" || f.Get("client_id") != e.clientID || f.Get("client_assertion") != e.assertion ||
				f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || !strings.Contains(f.Get("scope"), "https://vault.azure.net/.default") {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found for presented assertion subject.\r\nTrace ID: 1"}`)
				return
			}
			io.WriteString(w, `{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"az-token"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	})
	return e
}

// keyVault is Key Vault of the test's: it answers a request without the
// token with the challenge that names the tenant's authority and Key
// Vault's resource, as Key Vault does, and reads secrets to the holder of
// az-token. Requests to every vault host reach it: the test's dialer
// sends them here.
type keyVault struct {
	srv        *httptest.Server
	mu         sync.Mutex
	challenges map[string]int // by host
	values     map[string]string
}

func newKeyVault(t *testing.T, tlsConf *tls.Config, authority string) *keyVault {
	kv := &keyVault{challenges: map[string]int{}, values: map[string]string{
		"x.vault.azure.net/db": "x-current", "x.vault.azure.net/db/" + oldVersion: "x-old", "y.vault.azure.net/api-key": "y-current",
		"evil.example.com/db": "evil",
	}}
	kv.srv = tlsTestServer(t, tlsConf, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("api-version") == "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if r.Header.Get("Authorization") == "" {
			kv.mu.Lock()
			kv.challenges[r.Host]++
			kv.mu.Unlock()
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="%s/%s", resource="https://vault.azure.net"`, authority, testTenant))
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer az-token" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		key := r.Host + strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/secrets"), "/")
		v, ok := kv.values[key]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":"SecretNotFound","message":"A secret with (name/id) nope was not found in this key vault."}}`)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"value": v, "id": "https://" + key, "attributes": map[string]any{"enabled": true}})
	})
	return kv
}

func (kv *keyVault) challengesOf(host string) int {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return kv.challenges[host]
}

// azureIdentity is the Azure settings of a pod whose token is in a file,
// trusting the test's CA, whose vault hosts resolve to kv.
func azureIdentity(t *testing.T, e *entra, kv *keyVault, caPEM string) AzureConfig {
	tokenFile := filepath.Join(t.TempDir(), "azure-identity-token")
	if err := os.WriteFile(tokenFile, []byte(e.assertion), 0o600); err != nil {
		t.Fatal(err)
	}
	vaultAddr := kv.srv.Listener.Addr().String()
	var d net.Dialer
	return AzureConfig{ClientID: testClientID, TenantID: testTenant, TokenFile: tokenFile, AuthorityHost: e.srv.URL + "/", CABundle: caPEM,
		dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, port, _ := net.SplitHostPort(addr); port == "443" && (strings.HasSuffix(host, ".vault.azure.net") || host == "evil.example.com") {
				addr = vaultAddr
			}
			return d.DialContext(ctx, network, addr)
		}}
}

// TestFetchAzure: the pod's token is exchanged at Entra (once), for the
// resource Key Vault's challenge names, and the secrets of two vaults are
// read, each vault through its own client (one challenge each).
func TestFetchAzure(t *testing.T) {
	tlsConf, caPEM := testPKI(t, "127.0.0.1", "x.vault.azure.net", "y.vault.azure.net")
	e := newEntra(t, tlsConf, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`))
	kv := newKeyVault(t, tlsConf, e.srv.URL)
	dir := t.TempDir()
	cfg := fastConfig(agentapi.StoreAzure,
		agentapi.Secret{Field: "secrets[0]", ID: "https://x.vault.azure.net/secrets/db", File: filepath.Join(dir, "x/db")},
		agentapi.Secret{Field: "secrets[1]", ID: "https://y.vault.azure.net/secrets/api-key", File: filepath.Join(dir, "y/api-key")},
		agentapi.Secret{Field: "secrets[2]", ID: "https://x.vault.azure.net/secrets/db", Version: oldVersion, File: filepath.Join(dir, "x/db-old")},
	)
	cfg.Azure = azureIdentity(t, e, kv, caPEM)
	logs := &syncBuffer{}
	if err := Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	for file, want := range map[string]string{"x/db": "x-current", "y/api-key": "y-current", "x/db-old": "x-old"} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", file, b, err, want)
		}
	}
	if n := e.tokens.Load(); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
	if x, y := kv.challengesOf("x.vault.azure.net"), kv.challengesOf("y.vault.azure.net"); x != 1 || y != 1 {
		t.Errorf("challenges: x %d, y %d; want 1 each (one client per vault)", x, y)
	}
	if strings.Contains(logs.String(), "x-current") {
		t.Errorf("the logs carry a value:\n%s", logs)
	}
}

// TestFetchAzureRefused: Entra refusing the pod's token, a missing secret,
// and a challenge from a host that is not a vault's fail the fetch at
// once; in the last case no token is asked for, so none can leave.
func TestFetchAzureRefused(t *testing.T) {
	tlsConf, caPEM := testPKI(t, "127.0.0.1", "x.vault.azure.net", "evil.example.com")
	e := newEntra(t, tlsConf, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`))
	kv := newKeyVault(t, tlsConf, e.srv.URL)
	for name, tc := range map[string]struct {
		id       string
		clientID string
		want     []string
		tokens   int64
	}{
		"token refused": {"https://x.vault.azure.net/secrets/db", "11111111-2222-3333-4444-555555555555", []string{
			"azure: token from Microsoft Entra for client 11111111-2222-3333-4444-555555555555 of tenant " + testTenant +
				" with the pod's service account system:serviceaccount:team-a:task: HTTP 400: invalid_client: AADSTS700213", "(refused"}, 1},
		"not found": {"https://x.vault.azure.net/secrets/nope", testClientID, []string{
			"secrets[0] (azure https://x.vault.azure.net/secrets/nope): azure get from https://x.vault.azure.net: HTTP 404 SecretNotFound: A secret with (name/id) nope was not found in this key vault. (not found in Key Vault)"}, 1},
		"not a vault": {"https://evil.example.com/secrets/db", testClientID, []string{
			"azure get from https://evil.example.com", `challenge resource "https://vault.azure.net" doesn't match the requested domain`}, 0},
	} {
		t.Run(name, func(t *testing.T) {
			before := e.tokens.Load()
			cfg := fastConfig(agentapi.StoreAzure, agentapi.Secret{Field: "secrets[0]", ID: tc.id, File: filepath.Join(t.TempDir(), "f")})
			cfg.Azure = azureIdentity(t, e, kv, caPEM)
			cfg.Azure.ClientID = tc.clientID
			t0 := time.Now()
			err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
			t.Log(err)
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if err != nil && !IsPermanent(err) {
				t.Errorf("not permanent: %v", err)
			}
			if n := e.tokens.Load() - before; n != tc.tokens {
				t.Errorf("%d token requests, want %d", n, tc.tokens)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Errorf("took %v: retried", d)
			}
		})
	}
}

// TestAzureConfigRefused: settings that cannot work fail before any call.
func TestAzureConfigRefused(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("a.b.c"), 0o600)
	ok := AzureConfig{ClientID: testClientID, TenantID: testTenant, TokenFile: tokenFile}
	for name, tc := range map[string]struct {
		tune   func(*AzureConfig)
		secret agentapi.Secret
		want   string
	}{
		"no client id":   {func(a *AzureConfig) { a.ClientID = "" }, agentapi.Secret{}, "AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE are required"},
		"no token":       {func(a *AzureConfig) { a.TokenFile = "/nonexistent" }, agentapi.Secret{}, "azure: read the pod's service-account token"},
		"http authority": {func(a *AzureConfig) { a.AuthorityHost = "http://login.example.com/" }, agentapi.Secret{}, `AZURE_AUTHORITY_HOST "http://login.example.com/": must be an https URL`},
		"bad CA bundle":  {func(a *AzureConfig) { a.CABundle = "x" }, agentapi.Secret{}, "SECCTX_AZURE_CA_BUNDLE: no PEM certificate in it"},
		"not a URL":      {nil, agentapi.Secret{ID: "x/db"}, "secrets[0] (azure x/db): azure: id must be https://<vault host>/secrets/<name>"},
		"http vault":     {nil, agentapi.Secret{ID: "http://x.vault.azure.net/secrets/db"}, "azure: id must be https://<vault host>/secrets/<name>"},
		"other path":     {nil, agentapi.Secret{ID: "https://x.vault.azure.net/keys/db"}, "azure: id must be https://<vault host>/secrets/<name>"},
		"a key":          {nil, agentapi.Secret{ID: "https://x.vault.azure.net/secrets/db", Key: "k"}, "azure: key is not supported"},
	} {
		t.Run(name, func(t *testing.T) {
			s := tc.secret
			if s.ID == "" {
				s.ID = "https://x.vault.azure.net/secrets/db"
			}
			s.Field, s.File = "secrets[0]", filepath.Join(t.TempDir(), "f")
			cfg := fastConfig(agentapi.StoreAzure, s)
			cfg.Azure = ok
			if tc.tune != nil {
				tc.tune(&cfg.Azure)
			}
			err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !IsPermanent(err) {
				t.Errorf("err = %v\nwant %q, permanent", err, tc.want)
			}
		})
	}
}

// TestFetchAzureUnreachable: an Entra that does not answer is retried,
// then given up on at the timeout, saying what the last try met.
func TestFetchAzureUnreachable(t *testing.T) {
	tlsConf, caPEM := testPKI(t, "127.0.0.1", "x.vault.azure.net")
	e := newEntra(t, tlsConf, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`))
	kv := newKeyVault(t, tlsConf, fmt.Sprintf("https://127.0.0.1:%d", freePort(t)))
	cfg := fastConfig(agentapi.StoreAzure, agentapi.Secret{Field: "secrets[0]", ID: "https://x.vault.azure.net/secrets/db", File: filepath.Join(t.TempDir(), "f")})
	cfg.Azure = azureIdentity(t, e, kv, caPEM)
	cfg.Azure.AuthorityHost = fmt.Sprintf("https://127.0.0.1:%d/", freePort(t))
	cfg.Timeout = 2 * time.Second
	logs := &syncBuffer{}
	err := Fetch(context.Background(), cfg, testLogger(logs))
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "azure: token from Microsoft Entra for client "+testClientID) ||
		!strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %v", err)
	}
	if n := strings.Count(logs.String(), "transient error, will retry"); n < 2 {
		t.Errorf("%d retries logged, want at least 2:\n%s", n, logs)
	}
}
