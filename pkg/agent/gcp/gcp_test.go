package gcp

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	grpcmd "google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/secctx/secctx/pkg/agent"
	"github.com/secctx/secctx/pkg/agentapi"
)

// testPKI is a CA and a server certificate it signs for 127.0.0.1: the
// servers' TLS config, and the CA as PEM, for SECCTX_GCP_CA_BUNDLE. The
// system's CAs do not know it: a store that ignored its bundle would fail.
func testPKI(t testing.TB) (server *tls.Config, caPEM string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "secctx test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return server, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
}

// fakeJWT is a JWT-shaped token with claims, unsigned: the store reads
// its subject for messages, and STS (here the test's) checks it.
func fakeJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".c2lnbmF0dXJl"
}

// syncBuffer is a log sink the test reads while the fetch writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func testLogger(w *syncBuffer) logr.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zapr.NewLogger(zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.DebugLevel)))
}

// fastConfig is a config with short waits for secrets, each of the gcp
// store unless it names its own.
func fastConfig(secrets ...agentapi.Secret) agent.FetchConfig {
	cfg := agent.DefaultFetchConfig()
	for i := range secrets {
		secrets[i].Store = cmp.Or(secrets[i].Store, agentapi.StoreGCP)
	}
	cfg.Secrets = secrets
	cfg.Timeout, cfg.MinBackoff, cfg.MaxBackoff = 20*time.Second, 50*time.Millisecond, 200*time.Millisecond
	return cfg
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// secretManager is a Secret Manager of the test's: the gRPC service
// (google.cloud.secretmanager.v1.SecretManagerService, AccessSecretVersion
// alone) over TLS on loopback. It holds versions of secrets by name,
// latest being the highest; a version named in disabled answers
// FailedPrecondition, a secret named in denied PermissionDenied, a secret
// in badCRC a payload whose checksum does not match, and one in big a
// payload of 3 MiB. The first unavailable calls answer Unavailable. A
// call without the bearer token answers Unauthenticated.
type secretManager struct {
	secretmanagerpb.UnimplementedSecretManagerServiceServer
	token       string
	versions    map[string][]string // secret name -> values of versions 1, 2...
	disabled    map[string]bool     // projects/.../versions/n
	denied      map[string]bool
	badCRC      map[string]bool
	big         map[string]bool
	unavailable atomic.Int64
	mu          sync.Mutex
	hits        map[string]int // by version name
	conns       atomic.Int64   // connections accepted
	addr        string
}

func newSecretManager(t testing.TB, tlsConf *tls.Config, token string) *secretManager {
	sm := &secretManager{token: token, hits: map[string]int{},
		versions: map[string][]string{
			"projects/p/secrets/db":                       {"v1-value", "v2-value"},
			"projects/p/locations/europe-west1/secrets/r": {"regional"},
			"projects/p/secrets/json":                     {`{"user": "admin", "port": 5432, "tls": {"on": true}, "none": null}`},
			"projects/p/secrets/text":                     {"not json"},
			"projects/p/secrets/list":                     {`["a"]`},
			"projects/p/secrets/off":                      {"old", "new"},
			"projects/p/secrets/deny":                     {"x"},
			"projects/p/secrets/crc":                      {"x"},
			"projects/p/secrets/big":                      {"x"},
		},
		disabled: map[string]bool{"projects/p/secrets/off/versions/1": true},
		denied:   map[string]bool{"projects/p/secrets/deny": true},
		badCRC:   map[string]bool{"projects/p/secrets/crc": true},
		big:      map[string]bool{"projects/p/secrets/big": true},
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sm.addr = l.Addr().String()
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsConf)), grpc.MaxSendMsgSize(8<<20))
	secretmanagerpb.RegisterSecretManagerServiceServer(srv, sm)
	go srv.Serve(countingListener{l, &sm.conns})
	t.Cleanup(srv.Stop)
	return sm
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func (sm *secretManager) endpoint() string { return sm.addr }

func (sm *secretManager) hitsOf(name string) int {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.hits[name]
}

func (sm *secretManager) AccessSecretVersion(ctx context.Context, req *secretmanagerpb.AccessSecretVersionRequest) (*secretmanagerpb.AccessSecretVersionResponse, error) {
	name := req.GetName()
	sm.mu.Lock()
	sm.hits[name]++
	sm.mu.Unlock()
	md, _ := grpcmd.FromIncomingContext(ctx)
	if !slices.Equal(md.Get("authorization"), []string{"Bearer " + sm.token}) {
		return nil, status.Error(codes.Unauthenticated, "Request had invalid authentication credentials. Expected OAuth 2 access token.")
	}
	if !slices.Equal(md.Get("x-goog-request-params"), []string{"name=" + url.QueryEscape(name)}) {
		return nil, status.Errorf(codes.InvalidArgument, "routing header %q", md.Get("x-goog-request-params"))
	}
	if sm.unavailable.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "The service is currently unavailable.")
	}
	secret, version, ok := strings.Cut(name, "/versions/")
	values, found := sm.versions[secret]
	switch {
	case !ok:
		return nil, status.Errorf(codes.InvalidArgument, "invalid resource name [%s]", name)
	case !found:
		return nil, status.Errorf(codes.NotFound, "Secret [%s] not found or has no versions.", secret)
	case sm.denied[secret]:
		return nil, status.Errorf(codes.PermissionDenied, "Permission 'secretmanager.versions.access' denied for resource '%s' (or it may not exist).", name)
	case sm.disabled[name]:
		return nil, status.Errorf(codes.FailedPrecondition, "%s is in DISABLED state.", name)
	}
	n := len(values)
	if version != "latest" {
		var err error
		if n, err = strconv.Atoi(version); err != nil || n < 1 || n > len(values) {
			return nil, status.Errorf(codes.NotFound, "Secret Version [%s] not found.", name)
		}
	}
	v := []byte(values[n-1])
	if sm.big[secret] {
		v = bytes.Repeat([]byte("x"), 3<<20)
	}
	crc := int64(crc32.Checksum(v, crc32.MakeTable(crc32.Castagnoli)))
	if sm.badCRC[secret] {
		crc++
	}
	return &secretmanagerpb.AccessSecretVersionResponse{Name: fmt.Sprintf("%s/versions/%d", secret, n),
		Payload: &secretmanagerpb.SecretPayload{Data: v, DataCrc32C: &crc}}, nil
}

// googleSTS is STS and the IAM credentials API of the test's. STS
// exchanges the subject token for sts-token when the form is RFC 8693's
// with the audience wanted; IAM gives sa-token for service account sa to
// the holder of sts-token. refuseIAM makes IAM answer 403.
type googleSTS struct {
	audience, subject, sa string
	refuseIAM             bool
	stsHits, iamHits      atomic.Int64
	srv                   *httptest.Server
}

func newGoogleSTS(t testing.TB, tlsConf *tls.Config, audience, subject, sa string) *googleSTS {
	g := &googleSTS{audience: audience, subject: subject, sa: sa}
	g.srv = httptest.NewUnstartedServer(http.HandlerFunc(g.serve))
	g.srv.TLS = tlsConf.Clone()
	g.srv.StartTLS()
	t.Cleanup(g.srv.Close)
	return g
}

func (g *googleSTS) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v1/token":
		g.stsHits.Add(1)
		r.ParseForm()
		want := url.Values{
			"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
			"subject_token":        {g.subject},
			"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
			"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
			"audience":             {g.audience},
			"scope":                {scope},
		}
		for k, v := range want {
			if r.PostForm.Get(k) != v[0] {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"%s is not what this pool takes"}`, k)
				return
			}
		}
		io.WriteString(w, `{"access_token":"sts-token","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}`)
	case r.Method == http.MethodPost && r.URL.Path == "/v1/projects/-/serviceAccounts/"+g.sa+":generateAccessToken":
		g.iamHits.Add(1)
		var body struct{ Scope []string }
		json.NewDecoder(r.Body).Decode(&body)
		if r.Header.Get("Authorization") != "Bearer sts-token" || len(body.Scope) != 1 || body.Scope[0] != scope || g.refuseIAM {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, `{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.getAccessToken' denied","status":"PERMISSION_DENIED"}}`)
			return
		}
		fmt.Fprintf(w, `{"accessToken":"sa-token","expireTime":%q}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

const testPool = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s"

// federation sets up federation against g: the pod's token in a file, as
// the webhook projects it.
func federation(t testing.TB, g *googleSTS, sm *secretManager, caPEM string) agent.GCPConfig {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(g.subject), 0o600); err != nil {
		t.Fatal(err)
	}
	return agent.GCPConfig{Endpoint: sm.endpoint(), Audience: g.audience, TokenURL: g.srv.URL + "/v1/token", TokenFile: tokenFile,
		IAMEndpoint: g.srv.URL, CABundle: caPEM}
}

// TestFetchGCPFederation: with workload identity federation, the pod's
// token is exchanged at STS (once for the fetch), and the secrets are read
// over one gRPC connection with the access token: whole values by version
// and latest, a regional secret, and fields of a JSON secret, a string as
// itself and any other value as JSON. Neither ADC nor a gcloud file is
// looked at, whatever the environment says.
func TestFetchGCPFederation(t *testing.T) {
	// Credentials that would read as someone else, where ADC looks.
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "not-a-file.json"))
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	tlsConf, caPEM := testPKI(t)
	subject := fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`)
	g := newGoogleSTS(t, tlsConf, testPool, subject, "")
	sm := newSecretManager(t, tlsConf, "sts-token")
	dir := t.TempDir()
	cfg := fastConfig(
		agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: filepath.Join(dir, "db")},
		agentapi.Secret{Field: "secrets[1]", ID: "projects/p/secrets/db", Version: "1", File: filepath.Join(dir, "db-1")},
		agentapi.Secret{Field: "secrets[2]", ID: "projects/p/secrets/json", Key: "user", File: filepath.Join(dir, "user")},
		agentapi.Secret{Field: "secrets[3]", ID: "projects/p/secrets/json", Key: "port", File: filepath.Join(dir, "port")},
		agentapi.Secret{Field: "secrets[4]", ID: "projects/p/secrets/json", Version: "latest", Key: "tls", File: filepath.Join(dir, "tls")},
		agentapi.Secret{Field: "secrets[5]", ID: "projects/p/locations/europe-west1/secrets/r", File: filepath.Join(dir, "regional")},
	)
	cfg.GCP = federation(t, g, sm, caPEM)
	logs := &syncBuffer{}
	if err := agent.Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	for file, want := range map[string]string{"db": "v2-value", "db-1": "v1-value", "user": "admin", "port": "5432", "tls": `{"on":true}`, "regional": "regional"} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", file, b, err, want)
		}
	}
	if n := g.stsHits.Load(); n != 1 {
		t.Errorf("%d token exchanges, want 1", n)
	}
	if n := sm.conns.Load(); n != 1 {
		t.Errorf("%d connections to Secret Manager, want 1", n)
	}
	if strings.Contains(logs.String(), "v2-value") || strings.Contains(logs.String(), "admin") {
		t.Errorf("the logs carry a value:\n%s", logs)
	}
}

// TestFetchGCPImpersonation: with a service account, the STS token buys
// the service account's at IAM, and that one reads.
func TestFetchGCPImpersonation(t *testing.T) {
	tlsConf, caPEM := testPKI(t)
	g := newGoogleSTS(t, tlsConf, testPool, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`), "reader@p.iam.gserviceaccount.com")
	sm := newSecretManager(t, tlsConf, "sa-token")
	file := filepath.Join(t.TempDir(), "db")
	cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: file})
	cfg.GCP = federation(t, g, sm, caPEM)
	cfg.GCP.ServiceAccount = g.sa
	if err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{})); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); string(b) != "v2-value" {
		t.Errorf("read %q", b)
	}
	if s, i := g.stsHits.Load(), g.iamHits.Load(); s != 1 || i != 1 {
		t.Errorf("%d STS and %d IAM calls, want 1 and 1", s, i)
	}
}

// TestFetchGCPRefused: what Secret Manager refuses, and a value that is
// not what the secret asks, fail the fetch at once, naming the field, the
// secret and why, and never the value.
func TestFetchGCPRefused(t *testing.T) {
	tlsConf, caPEM := testPKI(t)
	g := newGoogleSTS(t, tlsConf, testPool, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`), "")
	sm := newSecretManager(t, tlsConf, "sts-token")
	other := newSecretManager(t, tlsConf, "someone-else's-token")
	for name, tc := range map[string]struct {
		secret agentapi.Secret
		sm     *secretManager
		want   []string
	}{
		"not found": {agentapi.Secret{ID: "projects/p/secrets/nope"}, sm,
			[]string{`secrets[0] (gcp projects/p/secrets/nope)`, "gcp access projects/p/secrets/nope/versions/latest: NotFound: Secret [projects/p/secrets/nope] not found", "(not found in Secret Manager)"}},
		"version not found": {agentapi.Secret{ID: "projects/p/secrets/db", Version: "7"}, sm,
			[]string{`secrets[0] (gcp projects/p/secrets/db version "7")`, "gcp access projects/p/secrets/db/versions/7: NotFound"}},
		"permission denied": {agentapi.Secret{ID: "projects/p/secrets/deny"}, sm,
			[]string{"PermissionDenied: Permission 'secretmanager.versions.access' denied", "permission denied to the identity of the pod's service account system:serviceaccount:team-a:task"}},
		"token refused": {agentapi.Secret{ID: "projects/p/secrets/db"}, other,
			[]string{"Unauthenticated", "(the token of the identity of the pod's service account system:serviceaccount:team-a:task was refused)"}},
		"disabled version": {agentapi.Secret{ID: "projects/p/secrets/off", Version: "1"}, sm,
			[]string{"FailedPrecondition", "(version disabled or destroyed)"}},
		"checksum mismatch": {agentapi.Secret{ID: "projects/p/secrets/crc"}, sm,
			[]string{"gcp access projects/p/secrets/crc/versions/latest: the payload does not match its checksum (data_crc32c)"}},
		"answer too large": {agentapi.Secret{ID: "projects/p/secrets/big"}, sm,
			[]string{"gcp access projects/p/secrets/big/versions/latest: an answer of more than 2097152 bytes, for a value this agent writes up to 1048576"}},
		"missing field": {agentapi.Secret{ID: "projects/p/secrets/json", Key: "password"}, sm,
			[]string{`secrets[0] (gcp projects/p/secrets/json key "password"): key "password": the secret's JSON object has no such field`}},
		"not JSON": {agentapi.Secret{ID: "projects/p/secrets/text", Key: "k"}, sm,
			[]string{`key "k": the secret is not a JSON object`}},
		"not an object": {agentapi.Secret{ID: "projects/p/secrets/list", Key: "k"}, sm,
			[]string{`key "k": the secret is not a JSON object`}},
		"bad id": {agentapi.Secret{ID: "p/db"}, sm,
			[]string{"open store gcp: secrets[0] (gcp p/db): gcp: id must be projects/<project>/secrets/<secret>"}},
		"bad version": {agentapi.Secret{ID: "projects/p/secrets/db", Version: "1/../2"}, sm,
			[]string{"gcp: version must be a number, latest or an alias"}},
	} {
		t.Run(name, func(t *testing.T) {
			tc.secret.Field, tc.secret.File = "secrets[0]", filepath.Join(t.TempDir(), "f")
			cfg := fastConfig(tc.secret)
			cfg.GCP = federation(t, g, tc.sm, caPEM)
			vname := tc.secret.ID + "/versions/" + cmp.Or(tc.secret.Version, "latest")
			before := tc.sm.hitsOf(vname)
			err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if !agent.IsPermanent(err) {
				t.Errorf("err = %v: not permanent", err)
			}
			if n := tc.sm.hitsOf(vname) - before; n > 1 {
				t.Errorf("%d calls: a refusal was retried", n)
			}
			if strings.Contains(err.Error(), "admin") || strings.Contains(err.Error(), "not json") || strings.Contains(err.Error(), "xxxx") {
				t.Errorf("the error carries a value: %v", err)
			}
			if _, err := os.Stat(tc.secret.File); err == nil {
				t.Error("a file was written")
			}
		})
	}
}

// TestFetchGCPUnavailable: Unavailable is transient: the fetch's own loop
// retries it (the client's retries are off), and reads the secret once
// Secret Manager answers.
func TestFetchGCPUnavailable(t *testing.T) {
	tlsConf, caPEM := testPKI(t)
	g := newGoogleSTS(t, tlsConf, testPool, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`), "")
	sm := newSecretManager(t, tlsConf, "sts-token")
	sm.unavailable.Store(3)
	file := filepath.Join(t.TempDir(), "db")
	cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: file})
	cfg.GCP = federation(t, g, sm, caPEM)
	logs := &syncBuffer{}
	t0 := time.Now()
	if err := agent.Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	if b, _ := os.ReadFile(file); string(b) != "v2-value" {
		t.Errorf("read %q", b)
	}
	if n := sm.hitsOf("projects/p/secrets/db/versions/latest"); n != 4 {
		t.Errorf("%d calls, want 4", n)
	}
	// The client's own retries would wait 2 s and more.
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("took %v: the client retried on its own", d)
	}
	if n := strings.Count(logs.String(), "transient error, will retry"); n != 3 || !strings.Contains(logs.String(), "Unavailable") {
		t.Errorf("%d retries logged:\n%s", n, logs)
	}
}

// TestFetchGCPUntrusted: a Secret Manager whose certificate the CA bundle
// does not vouch for is not read: the connection's TLS is the store's, not
// one that trusts anything, and the fetch fails at once, saying so.
func TestFetchGCPUntrusted(t *testing.T) {
	tlsConf, caPEM := testPKI(t)
	_, otherCA := testPKI(t)
	g := newGoogleSTS(t, tlsConf, testPool, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`), "")
	smConf, _ := testPKI(t)
	sm := newSecretManager(t, smConf, "sts-token")
	cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: filepath.Join(t.TempDir(), "f")})
	cfg.GCP = federation(t, g, sm, caPEM+otherCA)
	cfg.Timeout = 2 * time.Second
	err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
	t.Log(err)
	// Final at once: retrying cannot make the certificate trusted.
	if err == nil || !strings.Contains(err.Error(), "certificate is not trusted") || strings.Contains(err.Error(), "gave up after") {
		t.Errorf("err = %v", err)
	}
	if n := sm.hitsOf("projects/p/secrets/db/versions/latest"); n != 0 {
		t.Errorf("%d calls answered", n)
	}
}

// TestFetchGCPTokenRefused: a refusal at STS or at IAM is for good, and
// says which step refused which identity.
func TestFetchGCPTokenRefused(t *testing.T) {
	tlsConf, caPEM := testPKI(t)
	sm := newSecretManager(t, tlsConf, "sa-token")
	subject := fakeJWT(`{"sub":"system:serviceaccount:team-b:other"}`)
	t.Run("STS", func(t *testing.T) {
		g := newGoogleSTS(t, tlsConf, testPool, subject, "")
		cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: filepath.Join(t.TempDir(), "f")})
		cfg.GCP = federation(t, g, sm, caPEM)
		cfg.GCP.Audience = testPool + "-other"
		err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
		t.Log(err)
		for _, w := range []string{"open store gcp: gcp: STS token exchange at " + g.srv.URL + "/v1/token, as the identity of the pod's service account system:serviceaccount:team-b:other: HTTP 400", "invalid_grant", "refused"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("err = %v\nwant it to contain %q", err, w)
			}
		}
		if n := g.stsHits.Load(); n != 1 {
			t.Errorf("%d token exchanges: a refusal was retried", n)
		}
	})
	t.Run("IAM", func(t *testing.T) {
		g := newGoogleSTS(t, tlsConf, testPool, subject, "reader@p.iam.gserviceaccount.com")
		g.refuseIAM = true
		cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: filepath.Join(t.TempDir(), "f")})
		cfg.GCP = federation(t, g, sm, caPEM)
		cfg.GCP.ServiceAccount = g.sa
		err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
		t.Log(err)
		want := "gcp: IAM generateAccessToken for reader@p.iam.gserviceaccount.com, as the identity of the pod's service account system:serviceaccount:team-b:other impersonating reader@p.iam.gserviceaccount.com: HTTP 403"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v\nwant it to contain %q", err, want)
		}
		if n := g.iamHits.Load(); n != 1 {
			t.Errorf("%d IAM calls: a refusal was retried", n)
		}
	})
}

// metadataServer is a GKE metadata server of the test's, which answers
// status to its first unready requests, as one that is not ready in a
// pod's first seconds, then tokens (gke-token) of the default service
// account to requests that carry Metadata-Flavor: Google. It is where
// GCE_METADATA_HOST points for the test.
func metadataServer(t *testing.T, unready int64, status int) (hits *atomic.Int64) {
	hits = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Metadata-Flavor", "Google")
		if r.Header.Get("Metadata-Flavor") != "Google" || r.URL.Path != "/computeMetadata/v1/instance/service-accounts/default/token" ||
			r.URL.Query().Get("scopes") != scope {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if n := hits.Add(1); n <= unready {
			w.WriteHeader(status)
			return
		}
		io.WriteString(w, `{"access_token":"gke-token","expires_in":3599,"token_type":"Bearer"}`)
	}))
	t.Cleanup(srv.Close)
	t.Setenv("GCE_METADATA_HOST", strings.TrimPrefix(srv.URL, "http://"))
	return hits
}

// TestFetchGCPMetadataWait: without federation the token comes from the
// metadata server at GCE_METADATA_HOST; one that is not ready yet (503)
// is waited for, the retries logged, and the secret is read once it
// answers, with the token asked for once.
func TestFetchGCPMetadataWait(t *testing.T) {
	// More 503s than the metadata client's own retries (5): the fetch's
	// loop must wait too.
	hits := metadataServer(t, 8, http.StatusServiceUnavailable)
	tlsConf, caPEM := testPKI(t)
	sm := newSecretManager(t, tlsConf, "gke-token")
	dir := t.TempDir()
	cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", Version: "1", File: filepath.Join(dir, "db-1")},
		agentapi.Secret{Field: "secrets[1]", ID: "projects/p/secrets/db", File: filepath.Join(dir, "db")})
	cfg.GCP.Endpoint, cfg.GCP.CABundle = sm.endpoint(), caPEM
	logs := &syncBuffer{}
	if err := agent.Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	for file, want := range map[string]string{"db-1": "v1-value", "db": "v2-value"} {
		if b, _ := os.ReadFile(filepath.Join(dir, file)); string(b) != want {
			t.Errorf("%s: read %q", file, b)
		}
	}
	if n := hits.Load(); n != 9 {
		t.Errorf("%d requests to the metadata server, want 9", n)
	}
	if !strings.Contains(logs.String(), `"what":"open gcp"`) || !strings.Contains(logs.String(), "transient error, will retry") ||
		!strings.Contains(logs.String(), "GKE metadata server") {
		t.Errorf("no retry of the open logged:\n%s", logs)
	}
}

// TestFetchGCPMetadataRefused: a metadata server that refuses (403, as for
// an account bound to no Google service account) fails the fetch at once;
// one that never answers is given up on at the timeout.
func TestFetchGCPMetadataRefused(t *testing.T) {
	t.Run("403", func(t *testing.T) {
		hits := metadataServer(t, 1000, http.StatusForbidden)
		cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: filepath.Join(t.TempDir(), "f")})
		cfg.GCP.Endpoint = "127.0.0.1:1"
		err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), "gcp: token from the GKE metadata server at 127.0.0.1:") || !strings.Contains(err.Error(), "403") {
			t.Errorf("err = %v", err)
		}
		if n := hits.Load(); n != 1 {
			t.Errorf("%d requests: a refusal was retried", n)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		t.Setenv("GCE_METADATA_HOST", fmt.Sprintf("127.0.0.1:%d", freePort(t)))
		cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: filepath.Join(t.TempDir(), "f")})
		cfg.Timeout = 2 * time.Second
		err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
		t.Log(err)
		if err == nil || !strings.Contains(err.Error(), "gave up after") || !strings.Contains(err.Error(), "GKE metadata server") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestGCPConfigRefused: settings that cannot work fail before any call.
func TestGCPConfigRefused(t *testing.T) {
	for name, tc := range map[string]struct {
		tune func(*agent.GCPConfig)
		want string
	}{
		"service account without federation": {func(g *agent.GCPConfig) { g.ServiceAccount = "a@p.iam.gserviceaccount.com" }, "are for federation"},
		"federation without token file":      {func(g *agent.GCPConfig) { g.Audience = testPool }, "--gcp-token-file is required with --gcp-audience"},
		"token file missing":                 {func(g *agent.GCPConfig) { g.Audience, g.TokenFile = testPool, "/nonexistent/token" }, "read the pod's service-account token"},
		"endpoint with a scheme":             {func(g *agent.GCPConfig) { g.Endpoint = "https://x:443" }, `--gcp-endpoint "https://x:443": must be host:port`},
		"endpoint without a port":            {func(g *agent.GCPConfig) { g.Endpoint = "x" }, `--gcp-endpoint "x": must be host:port`},
		"CA bundle not PEM":                  {func(g *agent.GCPConfig) { g.CABundle = "nope" }, "SECCTX_GCP_CA_BUNDLE: no PEM certificate in it"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: filepath.Join(t.TempDir(), "f")})
			tc.tune(&cfg.GCP)
			t0 := time.Now()
			err := agent.Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !agent.IsPermanent(err) {
				t.Errorf("err = %v\nwant %q, permanent", err, tc.want)
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Errorf("took %v: retried", d)
			}
		})
	}
}

// TestAccessErrorCodes: which gRPC codes are for good, which are worth
// retrying.
func TestAccessErrorCodes(t *testing.T) {
	for c, perm := range map[codes.Code]bool{
		codes.NotFound: true, codes.PermissionDenied: true, codes.FailedPrecondition: true, codes.InvalidArgument: true,
		codes.Unauthenticated: true, codes.Unimplemented: true,
		codes.Unavailable: false, codes.DeadlineExceeded: false, codes.ResourceExhausted: false, codes.Internal: false,
		codes.Aborted: false, codes.Unknown: false, codes.Canceled: false,
	} {
		err := accessError("projects/p/secrets/s/versions/latest", "of someone", status.Error(c, "the\nmessage"))
		if agent.IsPermanent(err) != perm {
			t.Errorf("%v: permanent %v, want %v", c, agent.IsPermanent(err), perm)
		}
		if want := "gcp access projects/p/secrets/s/versions/latest: " + c.String() + ": the message"; !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%v: %q, want it to start with %q", c, err, want)
		}
	}
	if err := accessError("n", "w", errors.New("not a status")); agent.IsPermanent(err) || err.Error() != "gcp access n: not a status" {
		t.Errorf("a plain error: %v", err)
	}
}

// TestFetchGCPWithOtherStore: gcp, registered from its own package, and a
// store registered by the test share one fetch: each opened once, with
// its own secrets, in the order of first use.
func TestFetchGCPWithOtherStore(t *testing.T) {
	var events []string
	agent.RegisterStore("test-other", func(_ context.Context, _ agent.FetchConfig, secrets []agentapi.Secret) (agent.Store, error) {
		events = append(events, fmt.Sprintf("open test-other %d", len(secrets)))
		return otherStore{&events}, nil
	})
	tlsConf, caPEM := testPKI(t)
	g := newGoogleSTS(t, tlsConf, testPool, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`), "")
	sm := newSecretManager(t, tlsConf, "sts-token")
	dir := t.TempDir()
	cfg := fastConfig(
		agentapi.Secret{Field: "secrets[0]", Store: "test-other", ID: "a", File: filepath.Join(dir, "a")},
		agentapi.Secret{Field: "secrets[1]", ID: "projects/p/secrets/db", File: filepath.Join(dir, "db")},
		agentapi.Secret{Field: "secrets[2]", Store: "test-other", ID: "b", File: filepath.Join(dir, "b")},
	)
	cfg.GCP = federation(t, g, sm, caPEM)
	logs := &syncBuffer{}
	if err := agent.Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	for file, want := range map[string]string{"a": "other-a", "db": "v2-value", "b": "other-b"} {
		if b, _ := os.ReadFile(filepath.Join(dir, file)); string(b) != want {
			t.Errorf("%s: read %q", file, b)
		}
	}
	if want := []string{"open test-other 2", "read a", "read b"}; !slices.Equal(events, want) {
		t.Errorf("events %q, want %q", events, want)
	}
	if !strings.Contains(logs.String(), `"stores":["test-other","gcp"]`) {
		t.Errorf("logs:\n%s", logs)
	}
}

type otherStore struct{ events *[]string }

func (o otherStore) Read(_ context.Context, s agentapi.Secret) ([]byte, error) {
	*o.events = append(*o.events, "read "+s.ID)
	return []byte("other-" + s.ID), nil
}

func TestJSONField(t *testing.T) {
	v := []byte(`{"s": "a\"b", "n": 1.50, "o": {"x": [1, 2]}, "z": null, "b": false}`)
	for key, want := range map[string]string{"s": `a"b`, "n": "1.50", "o": `{"x":[1,2]}`, "z": "null", "b": "false"} {
		got, err := jsonField(v, key)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", key, got, err, want)
		}
	}
	for _, bad := range []string{`"string"`, `[1]`, `null`, `{"a":`, ``, "\xff"} {
		if _, err := jsonField([]byte(bad), "a"); err == nil || !agent.IsPermanent(err) || strings.Contains(err.Error(), bad) && bad != "" {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzJSONField: whatever the secret and the key, jsonField returns a
// value or a permanent error, never panics, and no error quotes the
// secret.
func FuzzJSONField(f *testing.F) {
	f.Add([]byte(`{"user": "admin", "port": 5432, "tls": {"on": true}, "none": null}`), "user")
	f.Add([]byte(`{"s": "a\"b\u00e9"}`), "s")
	f.Add([]byte(`["a"]`), "a")
	f.Add([]byte("\xff{"), "")
	f.Fuzz(func(t *testing.T, v []byte, key string) {
		got, err := jsonField(v, key)
		if err != nil {
			if !agent.IsPermanent(err) {
				t.Errorf("%v: not permanent", err)
			}
			// The messages say what is wrong with the secret, and quote
			// only the key.
			if !slices.Contains([]string{
				fmt.Sprintf("key %q: the secret is not a JSON object", key),
				fmt.Sprintf("key %q: the secret's JSON object has no such field", key),
				fmt.Sprintf("key %q: not valid JSON", key),
			}, err.Error()) {
				t.Errorf("an unexpected message: %v", err)
			}
			return
		}
		if got == nil {
			t.Error("no value and no error")
		}
	})
}

// BenchmarkFetchProcess runs the real secctx-fetch binary (cmd/fetch) as
// the kubelet does, with workload identity federation against the test's
// STS and Secret Manager (one token exchange, then 3 secrets over gRPC),
// and reports each run's start-to-exit time and the process's peak RSS.
func BenchmarkFetchProcess(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "secctx-fetch")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/fetch")
	build.Dir = filepath.Join("..", "..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build secctx-fetch: %v\n%s", err, out)
	}
	tlsConf, caPEM := testPKI(b)
	g := newGoogleSTS(b, tlsConf, testPool, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`), "")
	sm := newSecretManager(b, tlsConf, "sts-token")
	gc := federation(b, g, sm, caPEM)
	dir := b.TempDir()
	var secrets []agentapi.Secret
	for i, s := range []agentapi.Secret{{ID: "projects/p/secrets/db"}, {ID: "projects/p/secrets/db", Version: "1"}, {ID: "projects/p/secrets/json", Key: "user"}} {
		s.Field, s.Store, s.File = fmt.Sprintf("secrets[%d]", i), agentapi.StoreGCP, filepath.Join(dir, "files", fmt.Sprint(i))
		secrets = append(secrets, s)
	}
	spec, _ := json.Marshal(secrets)
	var rss int64
	for b.Loop() {
		cmd := exec.Command(bin, "fetch", "--gcp-endpoint="+gc.Endpoint, "--gcp-audience="+gc.Audience, "--gcp-token-url="+gc.TokenURL,
			"--gcp-token-file="+gc.TokenFile, "--secrets="+string(spec))
		cmd.Env = []string{"HOME=" + dir, "SECCTX_GCP_CA_BUNDLE=" + caPEM}
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("fetch: %v\n%s", err, out)
		}
		rss = max(rss, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "files", "2")); string(got) != "admin" {
		b.Errorf("secrets[2]: %q", got)
	}
	b.ReportMetric(float64(rss)/1024, "peak-RSS-MiB")
}

// TestRefreshGCP: the sidecar, with the gcp store linked in (as
// secctx-fetch runs it), keeps a Secret Manager secret fresh: a new
// version reaches the set's file, on the connection and identity it opened
// once.
func TestRefreshGCP(t *testing.T) {
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "not-a-file.json"))
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	tlsConf, caPEM := testPKI(t)
	g := newGoogleSTS(t, tlsConf, testPool, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`), "")
	sm := newSecretManager(t, tlsConf, "sts-token")
	dir := t.TempDir()
	file := filepath.Join(dir, "db", "password")
	cfg := fastConfig(agentapi.Secret{Field: "secrets[0]", ID: "projects/p/secrets/db", File: file})
	cfg.GCP = federation(t, g, sm, caPEM)
	cfg.SetDir = dir
	if err := agent.Fetch(context.Background(), cfg, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	rc := agent.DefaultRefreshConfig()
	rc.Fetch, rc.Interval = cfg, time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- agent.RunSidecar(ctx, agent.SidecarConfig{Refresh: &rc, Status: filepath.Join(dir, agent.StatusName)}, testLogger(logs))
	}()
	sm.mu.Lock()
	sm.versions["projects/p/secrets/db"] = append(sm.versions["projects/p/secrets/db"], "v3-value")
	sm.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for b, _ := os.ReadFile(file); string(b) != "v3-value"; b, _ = os.ReadFile(file) {
		if time.Now().After(deadline) {
			t.Fatalf("the new version did not arrive: %q\n%s", b, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := g.stsHits.Load(); n != 2 { // the fetch's, the sidecar's
		t.Errorf("%d token exchanges, want 2", n)
	}
}
