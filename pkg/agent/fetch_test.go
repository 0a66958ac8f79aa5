package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	vault "github.com/hashicorp/vault/api"

	"github.com/secctx/secctx/pkg/agentapi"
)

// The stores' tests run the real servers that hack/tools builds into bin/:
// kumo (AWS Secrets Manager and STS) and Vault in dev mode. make test
// builds them first; without them these tests fail, except with -short.

func toolBinary(t testing.TB, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no real secret store")
	}
	_, file, _, _ := runtime.Caller(0)
	bin := filepath.Join(filepath.Dir(file), "..", "..", "bin", name)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v; build it with make tools (hack/tools/build.sh)", bin, err)
	}
	return bin
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

// startServer runs bin/name with args until the test ends, and waits for
// its port.
func startServer(t testing.TB, name string, port int, args ...string) {
	t.Helper()
	cmd := exec.Command(toolBinary(t, name), args...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, logs.String())
		}
	})
	waitFor(t, name+" listening", 60*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// kumo starts the AWS emulator and points the SDK's env at it, as the
// webhook points the fetch container (inject.aws.*Endpoint), with the
// web-identity settings of runAs.iamRole. kumo checks neither the token
// nor the signature: these tests prove the calls, the e2e suite the trust.
func kumo(t testing.TB) (endpoint string, sm *secretsmanager.Client) {
	port := freePort(t)
	startServer(t, "kumo", port, "--host", "127.0.0.1", "--port", fmt.Sprint(port))
	endpoint = fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_SESSION_NAME"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("a.projected.token"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
	t.Setenv("AWS_ENDPOINT_URL_STS", endpoint)
	t.Setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/my-workflow-role")
	t.Setenv("AWS_WEB_IDENTITY_TOKEN_FILE", tokenFile)
	t.Setenv("AWS_STS_REGIONAL_ENDPOINTS", "regional")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	sm = secretsmanager.New(secretsmanager.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
	})
	return endpoint, sm
}

// fastConfig is a config with short waits for secrets, each of store
// unless it names its own.
func fastConfig(store string, secrets ...agentapi.Secret) FetchConfig {
	cfg := DefaultFetchConfig()
	for i := range secrets {
		if secrets[i].Store == "" {
			secrets[i].Store = store
		}
	}
	cfg.Secrets = secrets
	cfg.Timeout, cfg.MinBackoff, cfg.MaxBackoff = 20*time.Second, 50*time.Millisecond, 200*time.Millisecond
	return cfg
}

func TestFetchAWS(t *testing.T) {
	_, sm := kumo(t)
	ctx := context.Background()
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("prod/db-password"), SecretString: aws.String("s3cr3t-value")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("blob"), SecretBinary: []byte{0, 1, 2, 0xff}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := fastConfig("aws",
		agentapi.Secret{Field: "secrets[0]", ID: *created.ARN, File: filepath.Join(dir, "arn/prod/db-password")},
		agentapi.Secret{Field: "secrets[1]", ID: "blob", File: filepath.Join(dir, "env/1")},
	)
	logs := &syncBuffer{}
	if err := Fetch(ctx, cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	for file, want := range map[string]string{"arn/prod/db-password": "s3cr3t-value", "env/1": "\x00\x01\x02\xff"} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", file, b, err, want)
		}
		if fi, _ := os.Stat(filepath.Join(dir, file)); fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v, want 0444", file, fi.Mode().Perm())
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "arn/prod")); fi.Mode().Perm() != 0o755 {
		t.Errorf("directory mode %v, want 0755", fi.Mode().Perm())
	}
	if strings.Contains(logs.String(), "s3cr3t") {
		t.Errorf("the logs carry the value:\n%s", logs)
	}
}

func TestFetchAWSMode(t *testing.T) {
	_, sm := kumo(t)
	ctx := context.Background()
	if _, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("m"), SecretString: aws.String("v")}); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o400, 0o440} {
		dir := t.TempDir()
		cfg := fastConfig("aws", agentapi.Secret{Field: "secrets[0]", ID: "m", File: filepath.Join(dir, "g/k")})
		cfg.Mode = mode
		if err := Fetch(ctx, cfg, testLogger(&syncBuffer{})); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(filepath.Join(dir, "g/k"))
		di, _ := os.Stat(filepath.Join(dir, "g"))
		wantDir := map[os.FileMode]os.FileMode{0o400: 0o700, 0o440: 0o750}[mode]
		if fi.Mode().Perm() != mode || di.Mode().Perm() != wantDir {
			t.Errorf("mode %v: file %v, directory %v; want %v", mode, fi.Mode().Perm(), di.Mode().Perm(), wantDir)
		}
	}
}

// A missing secret fails at once, naming the field and the secret; it is
// not retried until the timeout.
func TestFetchAWSMissing(t *testing.T) {
	kumo(t)
	cfg := fastConfig("aws", agentapi.Secret{Field: "secrets[3]", ID: "arn:aws:secretsmanager:us-east-1:000000000000:secret:nope", File: filepath.Join(t.TempDir(), "x")})
	t0 := time.Now()
	err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
	if err == nil || !strings.Contains(err.Error(), "secrets[3] (aws arn:aws:secretsmanager:us-east-1:000000000000:secret:nope)") ||
		!strings.Contains(err.Error(), "not found") {
		t.Fatalf("err = %v; want one naming secrets[3], its ARN and not found", err)
	}
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("took %v: a missing secret was retried", d)
	}
}

// A store that does not answer is retried with backoff, then given up on.
func TestFetchAWSUnreachable(t *testing.T) {
	kumo(t)
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", fmt.Sprintf("http://127.0.0.1:%d", freePort(t)))
	cfg := fastConfig("aws", agentapi.Secret{Field: "secrets[0]", ID: "arn:aws:secretsmanager:us-east-1:000000000000:secret:x", File: filepath.Join(t.TempDir(), "x")})
	cfg.Timeout = 3 * time.Second
	logs := &syncBuffer{}
	err := Fetch(context.Background(), cfg, testLogger(logs))
	if err == nil || !strings.Contains(err.Error(), "gave up after") {
		t.Fatalf("err = %v; want it to give up after retries", err)
	}
	if n := strings.Count(logs.String(), "transient error, will retry"); n < 2 {
		t.Errorf("%d retries logged, want at least 2:\n%s", n, logs)
	}
}

// vaultServer starts Vault in dev mode with KV v2 at secret/ and KV v1 at
// kv/, a policy that reads both, and the JWT auth method at jwt/ trusting
// key: its login takes the same role and jwt as the Kubernetes method's,
// which needs an API server (the e2e suite logs in through that one).
func vaultServer(t testing.TB, key *rsa.PrivateKey) (addr string) {
	port := freePort(t)
	startServer(t, "vault", port, "server", "-dev", "-dev-root-token-id=root", fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port))
	addr = fmt.Sprintf("http://127.0.0.1:%d", port)
	c, err := vault.NewClient(&vault.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken("root")
	l := c.Logical()
	ctx := context.Background()
	must := func(_ *vault.Secret, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "vault unsealed", 30*time.Second, func() bool {
		s, err := c.Sys().SealStatus()
		return err == nil && !s.Sealed
	})
	if err := c.Sys().Mount("kv", &vault.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	must(l.Write("secret/data/my-app", map[string]any{"data": map[string]any{"db_password": "kv2-value", "port": 5432}}))
	must(l.Write("kv/legacy", map[string]any{"api-key": "kv1-value"}))
	if err := c.Sys().PutPolicy("read", `path "secret/data/*" { capabilities = ["read"] }
path "kv/*" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	if err := c.Sys().EnableAuthWithOptions("jwt", &vault.EnableAuthOptions{Type: "jwt"}); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	must(l.WriteWithContext(ctx, "auth/jwt/config", map[string]any{
		"jwt_validation_pubkeys": []string{string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))},
	}))
	must(l.WriteWithContext(ctx, "auth/jwt/role/task", map[string]any{
		"role_type": "jwt", "bound_audiences": []string{"vault"}, "user_claim": "sub",
		"bound_subject": "system:serviceaccount:team-a:task", "token_policies": []string{"read"},
	}))
	return addr
}

// signJWT makes an RS256 token, as the API server signs service-account
// tokens.
func signJWT(t testing.TB, key *rsa.PrivateKey, claims map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]string{"alg": "RS256", "typ": "JWT"}) + "." + enc(claims)
	h := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, h[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func vaultFetchConfig(t testing.TB, addr string, key *rsa.PrivateKey, subject string, secrets ...agentapi.Secret) FetchConfig {
	tokenFile := filepath.Join(t.TempDir(), "token")
	now := time.Now().Unix()
	jwt := signJWT(t, key, map[string]any{"sub": subject, "aud": []string{"vault"}, "iat": now, "nbf": now, "exp": now + 600})
	if err := os.WriteFile(tokenFile, []byte(jwt), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig("vault", secrets...)
	cfg.Vault = VaultConfig{Address: addr, AuthPath: "jwt", Role: "task", TokenFile: tokenFile}
	return cfg
}

func TestFetchVault(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	addr := vaultServer(t, key)
	dir := t.TempDir()
	cfg := vaultFetchConfig(t, addr, key, "system:serviceaccount:team-a:task",
		// KV v2 without data/ in the path, as Flyte users write it.
		agentapi.Secret{Field: "secrets[0]", ID: "secret/my-app", Key: "db_password", Engine: "kv2", File: filepath.Join(dir, "secret/my-app/db_password")},
		agentapi.Secret{Field: "secrets[1]", ID: "secret/data/my-app", Key: "port", Engine: "kv2", File: filepath.Join(dir, "port")},
		agentapi.Secret{Field: "secrets[2]", ID: "kv/legacy", Key: "api-key", Engine: "kv1", File: filepath.Join(dir, "kv/legacy/kv1/api-key")},
	)
	logs := &syncBuffer{}
	if err := Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	for file, want := range map[string]string{"secret/my-app/db_password": "kv2-value", "port": "5432", "kv/legacy/kv1/api-key": "kv1-value"} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", file, b, err, want)
		}
	}
	if strings.Contains(logs.String(), "kv2-value") {
		t.Errorf("the logs carry a value:\n%s", logs)
	}
}

func TestFetchVaultRefused(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	addr := vaultServer(t, key)
	file := filepath.Join(t.TempDir(), "f")
	setDir := t.TempDir()
	for name, tc := range map[string]struct {
		subject string
		secret  agentapi.Secret
		want    []string
	}{
		"account the role does not allow": {"system:serviceaccount:team-b:other",
			agentapi.Secret{Field: "secrets[0]", ID: "secret/my-app", Key: "db_password", Engine: "kv2", File: file},
			[]string{`vault login at auth/jwt as role "task" with the pod's service account system:serviceaccount:team-b:other`, "HTTP 400", "denied"}},
		"path the policy does not allow": {"system:serviceaccount:team-a:task",
			agentapi.Secret{Field: "secrets[0]", ID: "private/x", Key: "k", Engine: "kv1", File: file},
			[]string{"secrets[0] (vault private/x key \"k\")", "HTTP 403", "permission denied"}},
		"missing secret": {"system:serviceaccount:team-a:task",
			agentapi.Secret{Field: "secrets[1]", ID: "secret/nope", Key: "k", Engine: "kv2", File: file},
			[]string{"secrets[1] (vault secret/nope key \"k\")", "vault read secret/data/nope: not found"}},
		"groupVersion db for a secret with no lease": {"system:serviceaccount:team-a:task",
			agentapi.Secret{Field: "secrets[2]", ID: "secret/data/my-app", Key: "data", Engine: "db", Leased: true, File: filepath.Join(setDir, "f")},
			[]string{`secrets[2] (vault secret/data/my-app key "data"): vault read secret/data/my-app: no lease in Vault's answer: groupVersion db is for a dynamic secret`}},
		"missing key": {"system:serviceaccount:team-a:task",
			agentapi.Secret{Field: "secrets[0]", ID: "secret/my-app", Key: "user", Engine: "kv2", File: file},
			[]string{`the secret has no key "user"`}},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := vaultFetchConfig(t, addr, key, tc.subject, tc.secret)
			if tc.secret.Leased {
				cfg.SetDir = setDir
			}
			t0 := time.Now()
			err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if d := time.Since(t0); d > 10*time.Second {
				t.Errorf("took %v: a refusal was retried", d)
			}
		})
	}
}

func TestFetchRefusesBadFile(t *testing.T) {
	for _, f := range []string{"relative/x", "/a/../b", "/"} {
		cfg := fastConfig("aws", agentapi.Secret{Field: "secrets[0]", ID: "x", File: f})
		if err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{})); err == nil || !strings.Contains(err.Error(), "must be a clean absolute path") {
			t.Errorf("file %q: err = %v", f, err)
		}
	}
}

// FuzzFetchArgs: whatever the arguments, parsing them returns a config or
// an error, and never panics; a config it returns has a valid mode and a
// positive timeout.
func FuzzFetchArgs(f *testing.F) {
	f.Add("--gcp-audience=//iam.googleapis.com/x", "--mode=0400", `--secrets=[{"field":"secrets[0]","store":"aws","id":"arn:aws:secretsmanager:us-east-1:1:secret:x","file":"/etc/flyte/secrets/x"}]`)
	f.Add("--store=vault", "--timeout=0s", `--secrets=null`)
	f.Add("--mode=0777", "--vault-role=r", `--secrets=[{"file":1}]`)
	f.Add("extra", "--", "--secrets=[]")
	f.Add("--vault-role=r", "--mode=0440", `--secrets=[{"field":"secrets[1]","store":"vault","id":"secret/a","key":"k","engine":"kv2","file":"/var/run/secctx/env/1","envVar":true}]`)
	f.Add("--gcp-endpoint=127.0.0.1:1", "--timeout=1s", `--secrets=[{"field":"secrets[0]","store":"gcp","id":"projects/p/secrets/s","version":"3","key":"k","file":"/a"},{"field":"secrets[1]","store":"azure","id":"https://v.vault.azure.net/secrets/n","file":"/b"}]`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		cfg, err := parseFetchArgs([]string{a, b, c}, io.Discard)
		if err != nil {
			return
		}
		if cfg.Mode != 0o400 && cfg.Mode != 0o440 && cfg.Mode != 0o444 || cfg.Timeout <= 0 {
			t.Errorf("accepted %q %q %q: mode %v, timeout %v", a, b, c, cfg.Mode, cfg.Timeout)
		}
	})
}

// BenchmarkFetchProcess runs the real fetch binary (secctx-fetch fetch) as
// the kubelet does, against kumo (IRSA: AssumeRoleWithWebIdentity, then 3
// secrets) and Vault (Kubernetes-style login through the JWT method, then 3
// secrets), and reports each run's start-to-files time and the process's
// peak RSS: the numbers in docs/performance.md.
func BenchmarkFetchProcess(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "secctx-fetch")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/fetch")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	run := func(b *testing.B, env []string, args ...string) {
		var rss int64
		for b.Loop() {
			cmd := exec.Command(bin, append([]string{"fetch"}, args...)...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("fetch: %v\n%s", err, out)
			}
			rss = max(rss, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)
		}
		b.ReportMetric(float64(rss)/1024, "peak-RSS-MiB")
	}
	b.Run("aws,secrets=3", func(b *testing.B) {
		endpoint, sm := kumo(b)
		dir := b.TempDir()
		tokenFile := filepath.Join(dir, "token")
		os.WriteFile(tokenFile, []byte("a.projected.token"), 0o600)
		var secrets []agentapi.Secret
		for i := range 3 {
			out, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: aws.String(fmt.Sprintf("s%d", i)), SecretString: aws.String("value")})
			if err != nil {
				b.Fatal(err)
			}
			secrets = append(secrets, agentapi.Secret{Field: fmt.Sprintf("secrets[%d]", i), Store: agentapi.StoreAWS, ID: *out.ARN, File: filepath.Join(dir, "files", fmt.Sprint(i))})
		}
		spec, _ := json.Marshal(secrets)
		run(b, []string{"AWS_ENDPOINT_URL_SECRETS_MANAGER=" + endpoint, "AWS_ENDPOINT_URL_STS=" + endpoint,
			"AWS_ROLE_ARN=arn:aws:iam::123456789012:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE=" + tokenFile, "AWS_STS_REGIONAL_ENDPOINTS=regional",
			"AWS_EC2_METADATA_DISABLED=true", "HOME=" + dir}, "--secrets="+string(spec))
	})
	b.Run("vault,secrets=3", func(b *testing.B) {
		key, _ := rsa.GenerateKey(rand.Reader, 2048)
		addr := vaultServer(b, key)
		dir := b.TempDir()
		var secrets []agentapi.Secret
		for i, k := range []string{"db_password", "port", "db_password"} {
			secrets = append(secrets, agentapi.Secret{Field: fmt.Sprintf("secrets[%d]", i), Store: agentapi.StoreVault, ID: "secret/my-app", Key: k, Engine: "kv2", File: filepath.Join(dir, "files", fmt.Sprint(i))})
		}
		cfg := vaultFetchConfig(b, addr, key, "system:serviceaccount:team-a:task")
		spec, _ := json.Marshal(secrets)
		run(b, []string{"HOME=" + dir}, "--vault-address="+addr, "--vault-auth-path=jwt", "--vault-role=task",
			"--vault-token-file="+cfg.Vault.TokenFile, "--secrets="+string(spec))
	})
}

// TestParseFetchArgsMode: the files' mode is 0400, 0440 or 0444, nothing
// else: a wider one would let other users of the pod read the secrets.
func TestParseFetchArgsMode(t *testing.T) {
	for mode, want := range map[string]os.FileMode{"0400": 0o400, "0440": 0o440, "0444": 0o444, "400": 0o400} {
		cfg, err := parseFetchArgs([]string{"--mode=" + mode, "--secrets=[]"}, io.Discard)
		if err != nil || cfg.Mode != want {
			t.Errorf("--mode=%s: %v, %v; want %v", mode, cfg.Mode, err, want)
		}
	}
	if cfg, err := parseFetchArgs([]string{"--secrets=[]"}, io.Discard); err != nil || cfg.Mode != 0o444 {
		t.Errorf("no --mode: %v, %v; want 0444", cfg.Mode, err)
	}
	for _, mode := range []string{"0644", "0666", "0777", "0404", "0044", "0", "0o400", "0x100", "256", "-0400", "04000", "0400 ", ""} {
		if _, err := parseFetchArgs([]string{"--mode=" + mode, "--secrets=[]"}, io.Discard); err == nil || !strings.Contains(err.Error(), "must be 0400, 0440 or 0444") {
			t.Errorf("--mode=%q: %v; want it refused", mode, err)
		}
	}
}

// TestCheckSize: a value for an env var holds to MaxEnvValueBytes and has
// no NUL byte; any value to maxSecretSize.
func TestCheckSize(t *testing.T) {
	env := agentapi.Secret{Field: "secrets[0]", ID: "x", EnvVar: true}
	file := agentapi.Secret{Field: "secrets[0]", ID: "x"}
	for _, tc := range []struct {
		s    agentapi.Secret
		n    int
		nul  bool
		want string
	}{
		{env, agentapi.MaxEnvValueBytes, false, ""},
		{env, agentapi.MaxEnvValueBytes + 1, false, "130815 bytes, more than the 130814 an env var's value may have"},
		{env, 2 << 20, false, "2097152 bytes, more than the 130814 an env var's value may have"},
		{env, 10, true, "a NUL byte at offset 5, which an env var cannot hold"},
		{file, 10, true, ""},
		{file, maxSecretSize, false, ""},
		{file, maxSecretSize + 1, false, "1048577 bytes, more than the 1048576 this agent writes"},
	} {
		v := bytes.Repeat([]byte("v"), tc.n)
		if tc.nul {
			v[5] = 0
		}
		err := checkSize(tc.s, v)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("envVar %v, %d bytes, NUL %v: %v; want %q", tc.s.EnvVar, tc.n, tc.nul, err, tc.want)
		}
	}
}

// TestFetchVaultEnvBounds: a value that is to be an env var and would not
// fit one (2 MB, one byte over the bound, a NUL byte) fails the fetch
// naming the field, the secret, the size and the limit, and is not
// written; the same value as a file is written when it fits in one.
func TestFetchVaultEnvBounds(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	addr := vaultServer(t, key)
	c, _ := vault.NewClient(&vault.Config{Address: addr})
	c.SetToken("root")
	// Vault refuses a JSON string over 1 MiB: the 2 MB value is a list
	// of four strings, which the fetch writes as JSON.
	quarter := strings.Repeat("h", 512<<10-4)
	huge := []any{quarter, quarter, quarter, quarter}
	hugeJSON, _ := json.Marshal(huge)
	values := map[string]any{
		"huge": huge, "over": strings.Repeat("o", agentapi.MaxEnvValueBytes+1),
		"fits": strings.Repeat("f", agentapi.MaxEnvValueBytes), "nul": "before\x00after",
	}
	if _, err := c.Logical().Write("secret/data/big", map[string]any{"data": values}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key    string
		envVar bool
		want   string
	}{
		{"huge", true, fmt.Sprintf(`secrets[4] (vault secret/big key "huge"): %d bytes, more than the 130814 an env var's value may have`, len(hugeJSON))},
		{"over", true, `secrets[4] (vault secret/big key "over"): 130815 bytes, more than the 130814`},
		{"nul", true, `secrets[4] (vault secret/big key "nul"): a NUL byte at offset 6, which an env var cannot hold`},
		{"huge", false, fmt.Sprintf(`secrets[4] (vault secret/big key "huge"): %d bytes, more than the 1048576 this agent writes`, len(hugeJSON))},
		{"fits", true, ""},
		{"over", false, ""},
		{"nul", false, ""},
	} {
		t.Run(fmt.Sprintf("%s,envVar=%v", tc.key, tc.envVar), func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "env", "4")
			cfg := vaultFetchConfig(t, addr, key, "system:serviceaccount:team-a:task",
				agentapi.Secret{Field: "secrets[4]", ID: "secret/big", Key: tc.key, Engine: "kv2", File: file, EnvVar: tc.envVar})
			err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
			b, _ := os.ReadFile(file)
			if tc.want == "" {
				if want := values[tc.key].(string); err != nil || string(b) != want {
					t.Errorf("Fetch: %v; %d bytes written, want %d", err, len(b), len(want))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "too long") {
				t.Errorf("err = %v\nwant %q", err, tc.want)
			}
			if b != nil {
				t.Errorf("%d bytes written", len(b))
			}
		})
	}
}

// loginTokens lists the live Vault tokens made by a login at auth/jwt.
func loginTokens(t *testing.T, addr string) []string {
	t.Helper()
	c, _ := vault.NewClient(&vault.Config{Address: addr})
	c.SetToken("root")
	list, err := c.Logical().List("auth/token/accessors")
	if err != nil || list == nil {
		t.Fatalf("list token accessors: %v", err)
	}
	var out []string
	for _, a := range list.Data["keys"].([]any) {
		s, err := c.Auth().Token().LookupAccessor(a.(string))
		if err != nil {
			continue // revoked meanwhile
		}
		if p, _ := s.Data["path"].(string); strings.HasPrefix(p, "auth/jwt/login") {
			out = append(out, a.(string))
		}
	}
	return out
}

// TestFetchVaultRevokesLoginToken: the login token is revoked once the
// reads are done, whether they succeeded or not: no token of the fetch
// outlives it.
func TestFetchVaultRevokesLoginToken(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	addr := vaultServer(t, key)
	dir := t.TempDir()
	for name, s := range map[string]agentapi.Secret{
		"reads succeed": {Field: "secrets[0]", ID: "secret/my-app", Key: "db_password", Engine: "kv2", File: filepath.Join(dir, "ok")},
		"a read fails":  {Field: "secrets[0]", ID: "private/x", Key: "k", Engine: "kv1", File: filepath.Join(dir, "denied")},
	} {
		t.Run(name, func(t *testing.T) {
			logs := &syncBuffer{}
			err := Fetch(context.Background(), vaultFetchConfig(t, addr, key, "system:serviceaccount:team-a:task", s), testLogger(logs))
			if (err == nil) != (name == "reads succeed") {
				t.Fatalf("Fetch: %v", err)
			}
			if left := loginTokens(t, addr); len(left) != 0 {
				t.Errorf("%d login tokens left after the fetch, want 0\n%s", len(left), logs)
			}
			if !strings.Contains(logs.String(), "vault login token revoked") {
				t.Errorf("no log line for the revocation:\n%s", logs)
			}
		})
	}
	// A login of its own shows that the listing sees such a token.
	c, _ := vault.NewClient(&vault.Config{Address: addr})
	jwt, _ := os.ReadFile(vaultFetchConfig(t, addr, key, "system:serviceaccount:team-a:task").Vault.TokenFile)
	if _, err := c.Logical().Write("auth/jwt/login", map[string]any{"role": "task", "jwt": string(jwt)}); err != nil {
		t.Fatal(err)
	}
	if n := len(loginTokens(t, addr)); n != 1 {
		t.Errorf("a login's token is not listed: %d", n)
	}
}

// TestFetchVaultRefusesDB: engine db (dynamic credentials) is refused
// before any login, for good, unless the sidecar keeps its lease (leased,
// with the refreshed set's --set-dir), and never as an env var: the
// database user changes when the lease ends.
func TestFetchVaultRefusesDB(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("a.b.c"), 0o600)
	for _, tc := range []struct {
		engine         string
		leased, envVar bool
		setDir         string
		want           string
	}{
		{engine: "db", want: `secrets[1] (vault database/creds/app key "username"): vault engine db: dynamic database credentials need the sidecar that keeps their lease (inject.refresh), as a lease dies with the Vault token that read it`},
		{engine: "db", leased: true, want: "need the sidecar that keeps their lease (inject.refresh)"},
		{engine: "db", setDir: "/set", want: "need the sidecar that keeps their lease (inject.refresh)"},
		{engine: "db", leased: true, setDir: "/set", envVar: true, want: "vault engine db: an env var cannot follow the database user the sidecar replaces when its lease ends; use FILE"},
		{engine: "kv2", leased: true, setDir: "/set", want: `vault engine "kv2": not leased; only db is`},
		{engine: "kv3", want: `secrets[1] (vault database/creds/app key "username"): vault engine "kv3": unknown`},
	} {
		file := filepath.Join(t.TempDir(), "b")
		if tc.setDir != "" {
			file = tc.setDir + "/b"
		}
		cfg := fastConfig("vault",
			agentapi.Secret{Field: "secrets[0]", ID: "secret/my-app", Key: "k", Engine: "kv2", File: tc.setDir + "/a"},
			agentapi.Secret{Field: "secrets[1]", ID: "database/creds/app", Key: "username", Engine: tc.engine, Leased: tc.leased, EnvVar: tc.envVar, File: file})
		if tc.setDir == "" {
			cfg.Secrets[0].File = filepath.Join(t.TempDir(), "a")
		}
		cfg.SetDir = tc.setDir
		cfg.Vault = VaultConfig{Address: srv.URL, AuthPath: "kubernetes", Role: "task", TokenFile: tokenFile}
		t0 := time.Now()
		err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v\nwant %q", tc, err, tc.want)
		}
		if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("%+v: took %v: retried", tc, d)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("Vault received %d requests: the refusal must come before the login", n)
	}
}
