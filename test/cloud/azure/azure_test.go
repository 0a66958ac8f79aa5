package azure

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"github.com/secctx/secctx/test/cloud/trust"
)

const (
	app      = "0f5e8a3c-2b1d-4c6e-8f7a-9b0c1d2e3f40"
	otherApp = "7d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
)

type fixture struct {
	srv        *Server
	dir        string
	db1, db2   string
	httpClient *http.Client
	// authority is the credential's authority host: the server's own
	// unless a test says.
	authority string
}

func start(t *testing.T) *fixture {
	t.Helper()
	srv, err := Start(context.Background(), Options{
		VaultPort: AnyPort,
		Reviewer: trust.Tokens{
			"reader-token":   {Audience: AssertionAudience, Username: "system:serviceaccount:team:reader"},
			"stranger-token": {Audience: AssertionAudience, Username: "system:serviceaccount:team:stranger"},
			"sts-token":      {Audience: "sts.amazonaws.com", Username: "system:serviceaccount:team:reader"},
		},
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	f := &fixture{srv: srv, dir: t.TempDir(), authority: srv.AuthorityHost()}
	srv.AddFederatedCredential(srv.TenantID(), app, "system:serviceaccount:team:reader")
	srv.AddFederatedCredential(srv.TenantID(), otherApp, "system:serviceaccount:team:other")
	f.db1 = srv.SetSecret("kv1", "db", "one")
	f.db2 = srv.SetSecret("kv1", "db", "two")
	srv.SetSecret("kv1", "private", "nobody's")
	srv.SetSecret("kv1", "off", "disabled")
	srv.SetSecret("kv2", "db", "another vault's")
	if err := srv.SetEnabled("kv1", "off", "", false); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"db", "off", "missing"} {
		srv.Grant(app, "kv1", s)
	}

	// Pods reach every vault and login.microsoftonline.com through
	// hostAliases to the server's IP; here a dialer does it, and the
	// client trusts the server's CA alone.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(srv.CAPEM())) {
		t.Fatal("the CA PEM holds no certificate")
	}
	var d net.Dialer
	f.httpClient = &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, port, _ := net.SplitHostPort(addr); port == "443" && (strings.HasSuffix(host, VaultDomain) || host == LoginHost) {
				addr = srv.VaultAddr()
			}
			return d.DialContext(ctx, network, addr)
		},
	}}
	return f
}

// client is the official azsecrets client for vault, with the official
// workload identity credential reading token from a file.
func (f *fixture) client(t *testing.T, vault, clientID, token string, instanceDiscovery bool) *azsecrets.Client {
	t.Helper()
	file := filepath.Join(f.dir, clientID+"-"+token)
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientID: clientID, TenantID: f.srv.TenantID(), TokenFilePath: file,
		ClientOptions: azcore.ClientOptions{
			Cloud:     cloud.Configuration{ActiveDirectoryAuthorityHost: f.authority},
			Transport: f.httpClient,
		},
		DisableInstanceDiscovery: !instanceDiscovery,
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := azsecrets.NewClient(VaultURL(vault), cred, &azsecrets.ClientOptions{ClientOptions: azcore.ClientOptions{Transport: f.httpClient}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func get(c *azsecrets.Client, name, version string) (azsecrets.GetSecretResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.GetSecret(ctx, name, version, nil)
}

func wantStatus(t *testing.T, err error, code int, errCode string) {
	t.Helper()
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want an azcore.ResponseError %d", err, code)
	}
	if re.StatusCode != code || re.ErrorCode != errCode {
		t.Errorf("got %d %s, want %d %s: %v", re.StatusCode, re.ErrorCode, code, errCode, err)
	}
}

func TestReadSecrets(t *testing.T) {
	f := start(t)
	for _, discovery := range []bool{false, true} {
		c := f.client(t, "kv1", app, "reader-token", discovery)
		res, err := get(c, "db", "")
		if err != nil {
			t.Fatal(err)
		}
		if *res.Value != "two" || res.ID.Name() != "db" || res.ID.Version() != f.db2 || !*res.Attributes.Enabled {
			t.Errorf("latest (instance discovery %v): %s = %q", discovery, *res.ID, *res.Value)
		}
		if !strings.HasPrefix(string(*res.ID), "https://kv1.vault.azure.net/secrets/db/") {
			t.Errorf("id %s is not of vault kv1", *res.ID)
		}
		res, err = get(c, "db", f.db1)
		if err != nil || *res.Value != "one" {
			t.Errorf("version %s: %v %v", f.db1, res, err)
		}
	}
}

func TestKeyVaultRefusals(t *testing.T) {
	f := start(t)
	c := f.client(t, "kv1", app, "reader-token", false)
	t.Run("not granted", func(t *testing.T) {
		_, err := get(c, "private", "")
		wantStatus(t, err, 403, "Forbidden")
		if !strings.Contains(err.Error(), "AccessDenied") || !strings.Contains(err.Error(), app) {
			t.Errorf("the 403 does not say access denied to %s: %v", app, err)
		}
		// Vaults are told apart by host: the grant is on kv1's db.
		_, err = get(f.client(t, "kv2", app, "reader-token", false), "db", "")
		wantStatus(t, err, 403, "Forbidden")
	})
	t.Run("missing", func(t *testing.T) {
		_, err := get(c, "missing", "")
		wantStatus(t, err, 404, "SecretNotFound")
		_, err = get(c, "db", strings.Repeat("0", 32))
		wantStatus(t, err, 404, "SecretNotFound")
	})
	t.Run("disabled", func(t *testing.T) {
		_, err := get(c, "off", "")
		wantStatus(t, err, 403, "Forbidden")
		if !strings.Contains(err.Error(), "SecretDisabled") {
			t.Errorf("no SecretDisabled: %v", err)
		}
	})
	t.Run("challenge", func(t *testing.T) {
		req, _ := http.NewRequest("GET", VaultURL("kv1")+"/secrets/db/?api-version=2025-07-01", nil)
		res, err := f.httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		want := `Bearer authorization="` + f.srv.AuthorityHost() + f.srv.TenantID() + `", resource="https://vault.azure.net"`
		if res.StatusCode != 401 || res.Header.Get("WWW-Authenticate") != want {
			t.Errorf("unauthenticated: %d %q, want 401 %q", res.StatusCode, res.Header.Get("WWW-Authenticate"), want)
		}
	})
}

func TestEntraRefusals(t *testing.T) {
	f := start(t)
	for name, tc := range map[string]struct{ clientID, token, want string }{
		"no federated credential": {app, "stranger-token", "AADSTS700213"},
		"another app's subject":   {otherApp, "reader-token", "AADSTS700213"},
		"forged assertion":        {app, "forged", "AADSTS700027"},
		"assertion for STS":       {app, "sts-token", "AADSTS700027"},
		"unknown app":             {"a4b3c2d1-0000-4000-8000-000000000000", "reader-token", "AADSTS700016"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := get(f.client(t, "kv1", tc.clientID, tc.token, false), "db", "")
			var afe *azidentity.AuthenticationFailedError
			if !errors.As(err, &afe) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an azidentity.AuthenticationFailedError with %s", err, tc.want)
			}
		})
	}
	n := 0
	for _, r := range f.srv.Refusals() {
		if r.Service == "entra" {
			n++
		}
	}
	if n == 0 {
		t.Errorf("no Entra refusal recorded: %v", f.srv.Refusals())
	}
}

func TestLoginHost(t *testing.T) {
	f := start(t)
	// A pod that maps login.microsoftonline.com to the server needs no
	// authority host of its own.
	f.authority = "https://" + LoginHost + "/"
	res0, err := get(f.client(t, "kv1", app, "reader-token", true), "db", "")
	if err != nil || *res0.Value != "two" {
		t.Fatalf("with the public authority host: %v %v", res0, err)
	}
	res, err := f.httpClient.Get("https://" + LoginHost + "/" + f.srv.TenantID() + "/v2.0/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), `"token_endpoint":"https://`+LoginHost+"/"+f.srv.TenantID()+`/oauth2/v2.0/token"`) {
		t.Errorf("%d %s", res.StatusCode, b)
	}
}
