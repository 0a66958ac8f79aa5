package gcp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/auth/credentials"
	"cloud.google.com/go/compute/metadata"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google/externalaccount"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpccreds "google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/secctx/secctx/test/cloud/trust"
)

const (
	cloudPlatform = "https://www.googleapis.com/auth/cloud-platform"
	readerGSA     = "reader@secctx-test.iam.gserviceaccount.com"
)

var audience = ProviderAudience("123456789012", "cluster-pool", "k8s")

// fakePods is the cluster as the metadata server sees it: pods by IP, and
// the annotations of their service accounts.
type fakePods struct {
	mu   sync.Mutex
	pods map[string]Pod
	sas  map[string]map[string]string // ns/name -> annotations
}

func (f *fakePods) PodByIP(_ context.Context, ip string) (string, string, string, time.Time, map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pods[ip]
	if !ok {
		return "", "", "", time.Time{}, nil, errors.New("no pod has IP " + ip)
	}
	return p.Namespace, p.Name, p.ServiceAccount, p.StartTime, p.Annotations, nil
}

func (f *fakePods) ServiceAccountAnnotations(_ context.Context, ns, name string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sas[ns+"/"+name], nil
}

func (f *fakePods) setSA(ns, name string, ann map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sas[ns+"/"+name] = ann
}

type fixture struct {
	srv    *Server
	pods   *fakePods
	reader string // the pool principal of team/reader
	dir    string
}

func start(t *testing.T) *fixture {
	t.Helper()
	pods := &fakePods{pods: map[string]Pod{}, sas: map[string]map[string]string{}}
	srv, err := Start(context.Background(), Options{
		Providers: []Provider{{Audience: audience}},
		Reviewer: trust.Tokens{
			"reader-token":   {Audience: "https:" + audience, Username: "system:serviceaccount:team:reader"},
			"stranger-token": {Audience: "https:" + audience, Username: "system:serviceaccount:team:stranger"},
			"wrong-audience": {Audience: "sts.amazonaws.com", Username: "system:serviceaccount:team:reader"},
		},
		Pods: pods,
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	f := &fixture{srv: srv, pods: pods, dir: t.TempDir(),
		reader: "principal://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/cluster-pool/subject/system:serviceaccount:team:reader"}
	must := func(_ string, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(srv.AddSecretVersion("projects/secctx-test/secrets/db", []byte("s3cr3t-1")))
	must(srv.AddSecretVersion("projects/secctx-test/secrets/db", []byte("s3cr3t-2")))
	must(srv.AddSecretVersion("projects/123456789012/secrets/rotated", []byte("old")))
	must(srv.AddSecretVersion("projects/123456789012/secrets/rotated", []byte("new")))
	must(srv.AddSecretVersion("projects/secctx-test/secrets/private", []byte("nobody's")))
	if err := srv.SetVersionState("projects/secctx-test/secrets/rotated/versions/2", secretmanagerpb.SecretVersion_DISABLED); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"db", "rotated", "missing"} {
		must("", srv.Grant(f.reader, "projects/secctx-test/secrets/"+s))
	}
	must("", srv.Grant(ServiceAccountPrincipal(readerGSA), "projects/secctx-test/secrets/db"))
	return f
}

func (f *fixture) caPool(t *testing.T) *x509.CertPool {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(f.srv.CAPEM())) {
		t.Fatal("the CA PEM holds no certificate")
	}
	return pool
}

func (f *fixture) httpClient(t *testing.T) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.caPool(t)}}}
}

// externalAccount loads, with the official auth library, the credential
// config a pod would mount: its projected token in a file.
func (f *fixture) externalAccount(t *testing.T, token, impersonate string) []option.ClientOption {
	t.Helper()
	file := filepath.Join(f.dir, "token")
	if err := os.WriteFile(file, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := credentials.NewCredentialsFromJSON(credentials.ExternalAccount, f.srv.ExternalAccountJSON(audience, file, impersonate),
		&credentials.DetectOptions{Scopes: []string{cloudPlatform}, Client: f.httpClient(t)})
	if err != nil {
		t.Fatal(err)
	}
	return []option.ClientOption{option.WithAuthCredentials(creds)}
}

// client is the official Secret Manager client, over the network, trusting
// the server's CA.
func (f *fixture) client(t *testing.T, opts ...option.ClientOption) *secretmanager.Client {
	t.Helper()
	opts = append(opts, option.WithEndpoint(f.srv.SecretManagerAddr()),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(grpccreds.NewTLS(&tls.Config{RootCAs: f.caPool(t)}))))
	c, err := secretmanager.NewClient(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func access(c *secretmanager.Client, name string) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return c.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name})
}

func wantCode(t *testing.T, err error, code codes.Code, contains ...string) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %v", err, code)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("error %q does not name %q", err, c)
		}
	}
}

func TestExternalAccount(t *testing.T) {
	f := start(t)
	c := f.client(t, f.externalAccount(t, "reader-token", "")...)

	res, err := access(c, "projects/secctx-test/secrets/db/versions/latest")
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Payload.Data) != "s3cr3t-2" || res.Name != "projects/123456789012/secrets/db/versions/2" {
		t.Errorf("latest: got %s = %q", res.Name, res.Payload.Data)
	}
	if got := uint32(res.Payload.GetDataCrc32C()); got != crc32.Checksum(res.Payload.Data, crc32.MakeTable(crc32.Castagnoli)) {
		t.Errorf("data_crc32c %d does not match the data", got)
	}
	res, err = access(c, "projects/secctx-test/secrets/db/versions/1")
	if err != nil || string(res.Payload.Data) != "s3cr3t-1" {
		t.Errorf("version 1: %v %v", res, err)
	}
	v, err := c.GetSecretVersion(context.Background(), &secretmanagerpb.GetSecretVersionRequest{Name: "projects/secctx-test/secrets/rotated/versions/2"})
	if err != nil || v.State != secretmanagerpb.SecretVersion_DISABLED {
		t.Errorf("GetSecretVersion of the disabled version: %v %v", v, err)
	}

	t.Run("disabled", func(t *testing.T) {
		// latest is the newest version, disabled or not, as Google's.
		_, err := access(c, "projects/secctx-test/secrets/rotated/versions/latest")
		wantCode(t, err, codes.FailedPrecondition, "rotated/versions/2] is in DISABLED state")
		res, err := access(c, "projects/secctx-test/secrets/rotated/versions/1")
		if err != nil || string(res.Payload.Data) != "old" {
			t.Errorf("version 1: %v %v", res, err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		_, err := access(c, "projects/secctx-test/secrets/missing/versions/latest")
		wantCode(t, err, codes.NotFound, "missing")
		_, err = access(c, "projects/secctx-test/secrets/db/versions/7")
		wantCode(t, err, codes.NotFound, "db/versions/7")
	})
	t.Run("no grant", func(t *testing.T) {
		_, err := access(c, "projects/secctx-test/secrets/private/versions/latest")
		wantCode(t, err, codes.PermissionDenied, "secretmanager.versions.access", f.reader, "projects/123456789012/secrets/private")
	})
	t.Run("another principal", func(t *testing.T) {
		c := f.client(t, f.externalAccount(t, "stranger-token", "")...)
		_, err := access(c, "projects/secctx-test/secrets/db/versions/latest")
		wantCode(t, err, codes.PermissionDenied, "subject/system:serviceaccount:team:stranger", "secrets/db")
	})
}

// TestREST reads through the REST mapping Secret Manager serves on the same
// port as gRPC (secctx's fetch uses gRPC), with golang.org/x/oauth2's
// external account source.
func TestREST(t *testing.T) {
	f := start(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(f.srv.SetAlias("projects/secctx-test/secrets/db", "prod", 1))
	_, err := f.srv.AddSecretVersion("projects/secctx-test/locations/us-east1/secrets/regional", []byte("near"))
	must(err)
	must(f.srv.Grant(f.reader, "projects/secctx-test/locations/us-east1/secrets/regional"))
	file := filepath.Join(f.dir, "token")
	must(os.WriteFile(file, []byte("reader-token"), 0o600))
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.httpClient(t))
	ts, err := externalaccount.NewTokenSource(ctx, externalaccount.Config{
		Audience: audience, SubjectTokenType: tokenTypeJWT, TokenURL: f.srv.STSURL(),
		CredentialSource: &externalaccount.CredentialSource{File: file}, Scopes: []string{cloudPlatform},
	})
	must(err)
	tok, err := ts.Token()
	must(err)

	get := func(name string) (int, map[string]any) {
		req, _ := http.NewRequest("GET", "https://"+f.srv.SecretManagerAddr()+"/v1/"+name, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		res, err := f.httpClient(t).Do(req)
		must(err)
		defer res.Body.Close()
		var body map[string]any
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("%s: %s", name, b)
		}
		return res.StatusCode, body
	}
	for name, want := range map[string]string{
		"projects/secctx-test/secrets/db/versions/latest:access":                     "s3cr3t-2",
		"projects/secctx-test/secrets/db/versions/prod:access":                       "s3cr3t-1",
		"projects/secctx-test/locations/us-east1/secrets/regional/versions/1:access": "near",
	} {
		code, body := get(name)
		payload, _ := body["payload"].(map[string]any)
		data, _ := base64.StdEncoding.DecodeString(fmt.Sprint(payload["data"]))
		crc := fmt.Sprint(crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)))
		if code != 200 || string(data) != want || payload["dataCrc32c"] != crc {
			t.Errorf("%s: %d %v, want %q with dataCrc32c %s", name, code, body, want, crc)
		}
	}
	if code, body := get("projects/secctx-test/secrets/rotated/versions/2"); code != 200 || body["state"] != "DISABLED" {
		t.Errorf("version metadata: %d %v", code, body)
	}
	for name, want := range map[string]struct {
		code   int
		status string
	}{
		"projects/secctx-test/secrets/private/versions/1:access":  {403, "PERMISSION_DENIED"},
		"projects/secctx-test/secrets/rotated/versions/2:access":  {400, "FAILED_PRECONDITION"},
		"projects/secctx-test/secrets/db/versions/staging:access": {404, "NOT_FOUND"},
	} {
		code, body := get(name)
		e, _ := body["error"].(map[string]any)
		if code != want.code || e["status"] != want.status || e["code"] != float64(want.code) || e["message"] == nil {
			t.Errorf("%s: %d %v, want %d %s", name, code, body, want.code, want.status)
		}
	}
	tok.AccessToken = "ya29.made-up"
	if code, body := get("projects/secctx-test/secrets/db/versions/latest:access"); code != 401 {
		t.Errorf("an unknown token: %d %v", code, body)
	}
}

func TestUnauthenticated(t *testing.T) {
	f := start(t)
	tok, _ := f.srv.mint("someone", time.Millisecond)
	time.Sleep(5 * time.Millisecond)
	for name, opt := range map[string]option.ClientOption{
		"none":    option.WithoutAuthentication(),
		"unknown": option.WithTokenSource(staticToken("ya29.made-up")),
		"expired": option.WithTokenSource(staticToken(tok)),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := access(f.client(t, opt), "projects/secctx-test/secrets/db/versions/latest")
			wantCode(t, err, codes.Unauthenticated)
		})
	}
}

func TestSTSRefusals(t *testing.T) {
	f := start(t)
	t.Run("bad subject token", func(t *testing.T) {
		for _, tok := range []string{"forged", "wrong-audience"} {
			_, err := access(f.client(t, f.externalAccount(t, tok, "")...), "projects/secctx-test/secrets/db/versions/latest")
			if err == nil || !strings.Contains(err.Error(), "status code 400") || !strings.Contains(err.Error(), "invalid_grant") {
				t.Errorf("%s: got %v, want STS's 400 invalid_grant", tok, err)
			}
		}
	})
	post := func(form url.Values) (int, map[string]any) {
		res, err := f.httpClient(t).PostForm(f.srv.STSURL(), form)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var body map[string]any
		b, _ := io.ReadAll(res.Body)
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("STS answered %s", b)
		}
		return res.StatusCode, body
	}
	good := url.Values{"grant_type": {grantTokenExchange}, "requested_token_type": {tokenTypeAccess},
		"subject_token_type": {tokenTypeJWT}, "subject_token": {"reader-token"}, "audience": {audience}, "scope": {cloudPlatform}}
	if code, body := post(good); code != 200 || body["access_token"] == nil || body["expires_in"] == nil {
		t.Fatalf("a good exchange: %d %v", code, body)
	}
	for name, tc := range map[string]struct{ key, value, want string }{
		"grant type":     {"grant_type", "client_credentials", "unsupported_grant_type"},
		"unknown pool":   {"audience", ProviderAudience("123456789012", "other", "k8s"), "invalid_target"},
		"subject type":   {"subject_token_type", "urn:ietf:params:oauth:token-type:saml2", "invalid_request"},
		"forged subject": {"subject_token", "forged", "invalid_grant"},
	} {
		form := url.Values{}
		for k, v := range good {
			form[k] = v
		}
		form.Set(tc.key, tc.value)
		if code, body := post(form); code != 400 || body["error"] != tc.want || body["error_description"] == nil {
			t.Errorf("%s: got %d %v, want 400 %s", name, code, body, tc.want)
		}
	}
	refused := false
	for _, r := range f.srv.Refusals() {
		refused = refused || (r.Service == "sts" && strings.Contains(r.Reason, "invalid_grant"))
	}
	if !refused {
		t.Errorf("no STS refusal recorded: %v", f.srv.Refusals())
	}
}

func TestImpersonation(t *testing.T) {
	f := start(t)
	f.srv.AllowImpersonation(f.reader, readerGSA)
	res, err := access(f.client(t, f.externalAccount(t, "reader-token", readerGSA)...), "projects/secctx-test/secrets/db/versions/1")
	if err != nil || string(res.Payload.Data) != "s3cr3t-1" {
		t.Fatalf("as %s: %v %v", readerGSA, res, err)
	}
	// The service account has no grant on rotated, though the pool
	// subject has: the token is the service account's.
	_, err = access(f.client(t, f.externalAccount(t, "reader-token", readerGSA)...), "projects/secctx-test/secrets/rotated/versions/1")
	wantCode(t, err, codes.PermissionDenied, "serviceAccount:"+readerGSA)

	_, err = access(f.client(t, f.externalAccount(t, "stranger-token", readerGSA)...), "projects/secctx-test/secrets/db/versions/1")
	if err == nil || !strings.Contains(err.Error(), "status code 403") || !strings.Contains(err.Error(), "iam.serviceAccounts.getAccessToken") {
		t.Errorf("a subject not allowed to impersonate: got %v, want 403", err)
	}
}

func TestMetadataServer(t *testing.T) {
	f := start(t)
	// The official libraries find the metadata server by this variable;
	// nothing else may give them credentials.
	t.Setenv("GCE_METADATA_HOST", f.srv.MetadataHost())
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", "")
	t.Setenv("HOME", f.dir)
	const delay = 2 * time.Second
	started := time.Now()
	f.pods.pods["127.0.0.1"] = Pod{Namespace: "team", Name: "app-1", ServiceAccount: "app", StartTime: started,
		Annotations: map[string]string{DelayAnnotation: delay.String()}}
	f.pods.setSA("team", "app", map[string]string{GSAAnnotation: readerGSA})

	get := func(path string, header bool) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+f.srv.MetadataHost()+path, nil)
		if header {
			req.Header.Set("Metadata-Flavor", "Google")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.Header.Get("Metadata-Flavor") != "Google" {
			t.Errorf("%s: no Metadata-Flavor: Google in the answer", path)
		}
		return res.StatusCode, string(b)
	}
	if code, _ := get("/", false); code != 200 {
		t.Errorf("the root answered %d", code)
	}
	if code, body := get("/computeMetadata/v1/instance/service-accounts/default/token", true); code != 503 {
		t.Errorf("during the startup delay: %d %s, want 503", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := metadata.NewClient(nil).GetWithContext(ctx, "instance/service-accounts/default/email"); err == nil {
		t.Errorf("the official metadata client read the email during the startup delay")
	}
	time.Sleep(time.Until(started.Add(delay)))
	if code, _ := get("/computeMetadata/v1/project/project-id", false); code != 403 {
		t.Errorf("without Metadata-Flavor: %d, want 403", code)
	}
	if code, body := get("/computeMetadata/v1/instance/service-accounts/default/email", true); code != 200 || body != readerGSA {
		t.Errorf("email: %d %q", code, body)
	}

	// The KSA names the GSA but may not act as it yet.
	_, err := access(f.client(t), "projects/secctx-test/secrets/db/versions/latest")
	if err == nil {
		t.Fatal("read the secret as a GSA that the KSA may not act as")
	}
	f.srv.AllowImpersonation(f.srv.KSAPrincipal("team", "app"), readerGSA)
	res, err := access(f.client(t), "projects/secctx-test/secrets/db/versions/latest")
	if err != nil || string(res.Payload.Data) != "s3cr3t-2" {
		t.Fatalf("as the pod's GSA through the metadata server: %v %v", res, err)
	}

	// Without the annotation the token is the KSA's own principal, which
	// has no grant.
	f.pods.setSA("team", "app", nil)
	_, err = access(f.client(t), "projects/secctx-test/secrets/db/versions/latest")
	wantCode(t, err, codes.PermissionDenied, "serviceAccount:secctx-test.svc.id.goog[team/app]")
	if code, body := get("/computeMetadata/v1/instance/service-accounts/default/email", true); body != "secctx-test.svc.id.goog" {
		t.Errorf("email without a GSA: %d %q", code, body)
	}

	var delayed bool
	for _, r := range f.srv.Refusals() {
		delayed = delayed || (r.Service == "metadata" && strings.Contains(r.Reason, "startup delay"))
	}
	if !delayed {
		t.Errorf("no startup-delay refusal recorded: %v", f.srv.Refusals())
	}
}

func staticToken(tok string) oauth2.TokenSource {
	return oauth2.StaticTokenSource(&oauth2.Token{AccessToken: tok, TokenType: "Bearer"})
}
