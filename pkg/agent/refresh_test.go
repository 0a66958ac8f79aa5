package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/go-logr/logr"
	vault "github.com/hashicorp/vault/api"

	"github.com/secctx/secctx/pkg/agentapi"
)

// TestWriteSetAtomic: readers that resolve ..data once and read the whole
// set, while a writer replaces it again and again, always see one whole
// set (every file of one version), and readers of the files' own paths
// always see a whole file; the old directories are removed.
func TestWriteSetAtomic(t *testing.T) {
	dir := t.TempDir()
	files := []string{"db/v1/password", "db/v1/user", "api/key"}
	set := func(i int) map[string][]byte {
		m := map[string][]byte{}
		for _, f := range files {
			// Values of different lengths, so that a torn write shows.
			m[f] = []byte(fmt.Sprintf("%s=%d%s", f, i, strings.Repeat("x", i%7*100)))
		}
		return m
	}
	if _, err := writeSet(dir, set(0), 0o440); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var sets, mixed, torn atomic.Int64
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				got, err := readSet(dir)
				if err != nil {
					continue // the directory was removed under the walk: the reader tries again, as the kubelet's do
				}
				if len(got) != len(files) {
					continue
				}
				sets.Add(1)
				var version string
				for _, f := range files {
					v, _, _ := strings.Cut(strings.TrimPrefix(string(got[f]), f+"="), "x")
					if version == "" {
						version = v
					} else if v != version {
						mixed.Add(1)
					}
				}
			}
		})
		wg.Go(func() {
			for ctx.Err() == nil {
				for _, f := range files {
					b, err := os.ReadFile(filepath.Join(dir, f))
					if err != nil {
						torn.Add(1) // the path must always resolve
						continue
					}
					n, _, _ := strings.Cut(strings.TrimPrefix(string(b), f+"="), "x")
					var i int
					if _, err := fmt.Sscan(n, &i); err != nil || string(b) != string(set(i)[f]) {
						torn.Add(1)
					}
				}
			}
		})
	}
	for i := 1; i <= 300; i++ {
		if _, err := writeSet(dir, set(i), 0o440); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	if mixed.Load() > 0 || torn.Load() > 0 {
		t.Errorf("%d sets read mixed versions, %d file reads failed or were torn", mixed.Load(), torn.Load())
	}
	if sets.Load() == 0 {
		t.Error("no reader read a set")
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 { // ..<timestamp>, ..data, api, db
		t.Errorf("left in the directory: %v", names)
	}
	fi, err := os.Stat(filepath.Join(dir, "db/v1/password"))
	if err != nil || fi.Mode().Perm() != 0o440 {
		t.Errorf("mode %v, %v; want 0440", fi.Mode(), err)
	}
	got, _ := readSet(dir)
	if string(got["api/key"]) != string(set(300)["api/key"]) {
		t.Errorf("the last set is not the one there: %q", got["api/key"])
	}
}

// TestWriteSetRefuses: a name of the set that is a real directory (a
// Secret's mount point) or a path out of the set is refused, not replaced.
func TestWriteSetRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "k8s"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, files := range map[string]map[string][]byte{
		"mount point": {"k8s/key": []byte("v")},
		"escape":      {"../x": []byte("v")},
		"layout name": {"..data/x": []byte("v")},
		"unclean":     {"a//b": []byte("v")},
	} {
		if _, err := writeSet(dir, files, 0o444); err == nil {
			t.Errorf("%s: written", name)
		}
	}
}

// fakeClock fires every wait at once and records it.
type fakeClock struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch
}

// scriptStore answers each read with the next step of its script: a
// value, or an error.
type scriptStore struct {
	mu    sync.Mutex
	steps []any
	n     int
	done  func()
}

func (s *scriptStore) Read(context.Context, agentapi.Secret) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= len(s.steps) {
		s.done()
		return nil, errors.New("script over")
	}
	step := s.steps[s.n]
	s.n++
	if err, ok := step.(error); ok {
		return nil, err
	}
	return []byte(step.(string)), nil
}

// TestRefreshBackoff: with a fake clock, the refresh waits the interval
// plus up to the jitter, never less; when the store fails, the last good
// value stays and the retries back off, doubling from a tenth of the
// interval with jitter, to MaxBackoff and never past the interval; once the store answers, the new value is written and
// the wait is the interval again.
func TestRefreshBackoff(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "db", "password")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	down := errors.New("HTTP 503")
	st := &scriptStore{steps: []any{"v1", down, down, down, down, down, down, "v2", "v2"}, done: cancel}
	RegisterStore("test-script", func(context.Context, FetchConfig, []agentapi.Secret) (Store, error) { return st, nil })
	t.Cleanup(func() { delete(stores, "test-script") })
	cfg := DefaultRefreshConfig()
	cfg.Fetch.SetDir, cfg.Fetch.Mode = dir, 0o400
	cfg.Fetch.Secrets = []agentapi.Secret{{Field: "secrets[0]", Store: "test-script", ID: "db", File: file}}
	cfg.Interval, cfg.Jitter, cfg.MinBackoff, cfg.MaxBackoff = 10*time.Second, 0.1, 100*time.Millisecond, 4*time.Second
	if _, err := writeSet(dir, map[string][]byte{"db/password": []byte("v0")}, 0o400); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	book := newStatusBook(filepath.Join(dir, StatusName), testLogger(logs))
	r, err := newRefresher(cfg, book, testLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{}
	r.clock = clk
	r.run(ctx) // until the script is over
	final, _ := os.ReadFile(file)

	waits := clk.waits
	if len(waits) < 9 {
		t.Fatalf("waits %v: want 9", waits)
	}
	inInterval := func(d time.Duration) bool { return d >= 10*time.Second && d <= 11*time.Second }
	// Wait 0: the first refresh (v1); 1: after v1, the interval; 2..7:
	// after each failure, jitter(1s) (a tenth of the interval), jitter(2s),
	// jitter(4s), jitter(4s)...
	if !inInterval(waits[0]) || !inInterval(waits[1]) {
		t.Errorf("waits before and after a good refresh %v, %v: want 10s plus up to 10%%", waits[0], waits[1])
	}
	for i, max := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second} {
		if w := waits[2+i]; w < max/2 || w > max {
			t.Errorf("wait after failure %d: %v, want in [%v, %v]", i+1, w, max/2, max)
		}
	}
	if !inInterval(waits[8]) {
		t.Errorf("wait after the store came back %v: want the interval again", waits[8])
	}
	if string(final) != "v2" {
		t.Errorf("file %q at the end, want v2", final)
	}
	for _, w := range []string{`"msg":"refresh incomplete: the last good values are kept"`, `"msg":"secrets refreshed"`, `"changed":["secrets[0]"]`} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("no %s in the logs:\n%s", w, logs)
		}
	}
	if strings.Contains(logs.String(), "v1") || strings.Contains(logs.String(), "v2") {
		t.Errorf("a value is in the logs:\n%s", logs)
	}
}

// TestRefreshKeepsLastGood: while the store fails, the file keeps the last
// good value and the status names the secret and the error; a secret of
// another store that answers is refreshed meanwhile.
func TestRefreshKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	var failing atomic.Bool
	vals := map[string]*atomic.Value{"a": {}, "b": {}}
	vals["a"].Store("a1")
	vals["b"].Store("b1")
	for _, name := range []string{"test-a", "test-b"} {
		RegisterStore(name, func(context.Context, FetchConfig, []agentapi.Secret) (Store, error) {
			return storeFunc(func(_ context.Context, s agentapi.Secret) ([]byte, error) {
				if name == "test-a" && failing.Load() {
					return nil, errors.New("HTTP 503 Service Unavailable")
				}
				return []byte(vals[s.ID].Load().(string)), nil
			}), nil
		})
		t.Cleanup(func() { delete(stores, name) })
	}
	cfg := DefaultRefreshConfig()
	cfg.Fetch.SetDir, cfg.Fetch.Mode = dir, 0o444
	cfg.Fetch.Secrets = []agentapi.Secret{
		{Field: "secrets[0]", Store: "test-a", ID: "a", File: filepath.Join(dir, "a", "key")},
		{Field: "secrets[1]", Store: "test-b", ID: "b", File: filepath.Join(dir, "b", "key")},
	}
	cfg.Interval, cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 10*time.Millisecond, 20*time.Millisecond
	if _, err := writeSet(dir, map[string][]byte{"a/key": []byte("a1"), "b/key": []byte("b1")}, 0o444); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	status := filepath.Join(dir, StatusName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunSidecar(ctx, SidecarConfig{Refresh: &cfg, Status: status}, testLogger(logs)) }()
	read := func(f string) string { b, _ := os.ReadFile(filepath.Join(dir, f)); return string(b) }

	failing.Store(true)
	vals["a"].Store("a2")
	vals["b"].Store("b2")
	waitFor(t, "b refreshed while a's store fails", 5*time.Second, func() bool { return read("b/key") == "b2" })
	waitFor(t, "a's failure in the status", 5*time.Second, func() bool {
		msg, ok := Check(status)
		return ok && strings.Contains(msg, "secrets[0]: not refreshed, the last value is kept: HTTP 503")
	})
	if got := read("a/key"); got != "a1" {
		t.Errorf("a while its store fails: %q, want the last good a1", got)
	}
	failing.Store(false)
	waitFor(t, "a refreshed once its store is back", 5*time.Second, func() bool { return read("a/key") == "a2" })
	waitFor(t, "the status clear", 5*time.Second, func() bool { msg, ok := Check(status); return ok && msg == "" })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("RunSidecar on SIGTERM: %v, want nil (exit 0)", err)
	}
}

type storeFunc func(context.Context, agentapi.Secret) ([]byte, error)

func (f storeFunc) Read(ctx context.Context, s agentapi.Secret) ([]byte, error) { return f(ctx, s) }

// countingProxy stands before a store and counts the API calls by their
// action (X-Amz-Target), as the store would bill them; it answers the
// actions in deny AccessDeniedException, as IAM would for a role without
// them.
func countingProxy(t testing.TB, target string, deny ...string) (string, func() map[string]int) {
	u, _ := url.Parse(target)
	p := httputil.NewSingleHostReverseProxy(u)
	var mu sync.Mutex
	calls := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		action := r.Header.Get("X-Amz-Target")
		if action == "" { // STS is a query API
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			q, _ := url.ParseQuery(string(body))
			action = q.Get("Action")
		}
		mu.Lock()
		calls[action]++
		mu.Unlock()
		if slices.Contains(deny, action) {
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"__type":"AccessDeniedException","message":"not authorized to perform: `+action+` (test)"}`)
			return
		}
		p.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int{}
		for k, v := range calls {
			out[k] = v
		}
		return out
	}
}

// awsRefreshSetup is kumo behind a counting proxy that denies deny, with
// one secret "db" of value "one", and a fetch configuration of it in a set
// directory.
func awsRefreshSetup(t *testing.T, deny ...string) (*secretsmanager.Client, *string, FetchConfig, func() map[string]int) {
	endpoint, sm := kumo(t)
	proxy, calls := countingProxy(t, endpoint, deny...)
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", proxy)
	t.Setenv("AWS_ENDPOINT_URL_STS", proxy)
	out, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: aws.String("db"), SecretString: aws.String("one")})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fc := fastConfig("aws", agentapi.Secret{Field: "secrets[0]", ID: *out.ARN, File: filepath.Join(dir, "db", "password")})
	fc.SetDir = dir
	return sm, out.ARN, fc, calls
}

// TestRefreshAWSVersionCheck: against kumo, a refresh of an unchanged
// secret costs one DescribeSecret and no GetSecretValue; a new version is
// read (one DescribeSecret and one GetSecretValue) and written; the web
// identity is assumed once for all of it.
func TestRefreshAWSVersionCheck(t *testing.T) {
	sm, arn, fc, calls := awsRefreshSetup(t)
	ctx := context.Background()
	dir := fc.SetDir
	if err := Fetch(ctx, fc, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultRefreshConfig()
	cfg.Fetch, cfg.Interval = fc, time.Minute
	r, err := newRefresher(cfg, newStatusBook("", logr.Discard()), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	set, _ := readSet(dir)
	r.remember(set)
	defer r.close()
	before := calls()
	for range 3 {
		if failed := r.round(ctx, everySecret); failed > 0 {
			t.Fatal("refresh failed")
		}
	}
	got := calls()
	// The store opens (one AssumeRoleWithWebIdentity), then reads: the
	// first read of a store that has not seen the secret is a
	// GetSecretValue, the next ones DescribeSecret alone.
	if d, g := got["secretsmanager.DescribeSecret"]-before["secretsmanager.DescribeSecret"], got["secretsmanager.GetSecretValue"]-before["secretsmanager.GetSecretValue"]; d != 2 || g != 1 {
		t.Errorf("3 refreshes of an unchanged secret: %d DescribeSecret, %d GetSecretValue; want 2 and 1 (all: %v)", d, g, got)
	}
	if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: arn, SecretString: aws.String("two")}); err != nil {
		t.Fatal(err)
	}
	before = calls()
	r.round(ctx, everySecret)
	got = calls()
	if d, g := got["secretsmanager.DescribeSecret"]-before["secretsmanager.DescribeSecret"], got["secretsmanager.GetSecretValue"]-before["secretsmanager.GetSecretValue"]; d != 1 || g != 1 {
		t.Errorf("a refresh of a changed secret: %d DescribeSecret, %d GetSecretValue; want 1 and 1", d, g)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "db", "password")); string(b) != "two" {
		t.Errorf("after the change: %q, want two", b)
	}
	if n := got["AssumeRoleWithWebIdentity"]; n != 2 { // the fetch's and the refresher's
		t.Errorf("%d AssumeRoleWithWebIdentity, want 2 (one per process)", n)
	}
}

// TestRefreshAWSWithoutDescribe: a role that may GetSecretValue but not
// DescribeSecret still refreshes: after the first denial every refresh
// reads the value, and the change arrives.
func TestRefreshAWSWithoutDescribe(t *testing.T) {
	sm, arn, fc, calls := awsRefreshSetup(t, "secretsmanager.DescribeSecret")
	ctx := context.Background()
	dir := fc.SetDir
	cfg := DefaultRefreshConfig()
	cfg.Fetch, cfg.Interval = fc, time.Minute
	r, err := newRefresher(cfg, newStatusBook("", logr.Discard()), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	for i, v := range []string{"one", "one", "two", "three"} {
		if i >= 2 {
			if _, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: arn, SecretString: aws.String(v)}); err != nil {
				t.Fatal(err)
			}
		}
		if failed := r.round(ctx, everySecret); failed > 0 {
			t.Fatalf("refresh %d failed", i)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "db", "password")); string(b) != v {
			t.Errorf("refresh %d: %q, want %q", i, b, v)
		}
	}
	if c := calls(); c["secretsmanager.DescribeSecret"] != 1 || c["secretsmanager.GetSecretValue"] != 4 {
		t.Errorf("calls %v: want DescribeSecret tried once, then GetSecretValue each time", c)
	}
}

// TestWriteSetKeepsSetgid: in a directory with the setgid bit (an
// fsGroup's emptyDir), the set's directories keep it, so that what is
// made in them belongs to the fsGroup that the 0440 files are for.
func TestWriteSetKeepsSetgid(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777|fs.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	if _, err := writeSet(dir, map[string][]byte{"g/v/k": []byte("x")}, 0o440); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dataLink, filepath.Join(dataLink, "g"), filepath.Join(dataLink, "g", "v")} {
		fi, err := os.Stat(filepath.Join(dir, d))
		if err != nil || fi.Mode()&fs.ModeSetgid == 0 {
			t.Errorf("%s: %v, %v: want the setgid bit", d, fi.Mode(), err)
		}
	}
}

// TestRefreshVaultOutlivesTTL: with a login token of 2 s TTL and 6 s max
// TTL, the refresher keeps reading Vault for 4 max TTLs: the token is
// renewed, then replaced by a new login when its max TTL nears; a new KV v2
// version arrives; when the sidecar stops, its login token is revoked.
func TestRefreshVaultOutlivesTTL(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a 25 s test")
	}
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	addr := vaultServer(t, key)
	root, _ := vault.NewClient(&vault.Config{Address: addr})
	root.SetToken("root")
	if _, err := root.Logical().Write("auth/jwt/role/task", map[string]any{
		"role_type": "jwt", "bound_audiences": []string{"vault"}, "user_claim": "sub",
		"bound_subject": "system:serviceaccount:team-a:task", "token_policies": []string{"read"},
		"token_ttl": "2s", "token_max_ttl": "6s",
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	fc := vaultFetchConfig(t, addr, key, "system:serviceaccount:team-a:task",
		agentapi.Secret{Field: "secrets[0]", ID: "secret/my-app", Key: "db_password", Engine: "kv2", File: filepath.Join(dir, "my-app", "db_password")})
	fc.SetDir = dir
	ctx, cancel := context.WithCancel(context.Background())
	if err := Fetch(ctx, fc, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultRefreshConfig()
	cfg.Fetch, cfg.Interval, cfg.MinBackoff = fc, 500*time.Millisecond, 100*time.Millisecond
	logs := &syncBuffer{}
	status := filepath.Join(dir, StatusName)
	done := make(chan error, 1)
	go func() { done <- RunSidecar(ctx, SidecarConfig{Refresh: &cfg, Status: status}, testLogger(logs)) }()
	read := func() string { b, _ := os.ReadFile(filepath.Join(dir, "my-app", "db_password")); return string(b) }
	time.Sleep(12 * time.Second) // two max TTLs
	if _, err := root.Logical().Write("secret/data/my-app", map[string]any{"data": map[string]any{"db_password": "rotated"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new version", 5*time.Second, func() bool { return read() == "rotated" })
	time.Sleep(12 * time.Second)
	if msg, ok := Check(status); !ok || msg != "" {
		t.Errorf("status after 4 max TTLs: %q", msg)
	}
	for _, w := range []string{"vault login token renewed", "vault logged in again"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("no %q in the logs:\n%s", w, logs)
		}
	}
	if strings.Contains(logs.String(), "secret not refreshed") {
		t.Errorf("a refresh failed:\n%s", logs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if left := loginTokens(t, addr); len(left) != 0 {
		t.Errorf("%d login tokens left after the sidecar stopped, want 0\n%s", len(left), logs)
	}
}

// BenchmarkSidecarRefresh runs the real sidecar (secctx-agent sidecar)
// against kumo with 20 refreshed secrets every second, and reports its RSS
// after 10 refreshes (VmRSS, and the peak VmHWM) and the store calls each
// refresh made: the numbers in docs/refresh.md.
func BenchmarkSidecarRefresh(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "secctx-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/agent")
	build.Dir = filepath.Join("..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	endpoint, sm := kumo(b)
	proxy, calls := countingProxy(b, endpoint)
	dir := b.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("a.projected.token"), 0o600)
	set := filepath.Join(dir, "secrets")
	var secrets []agentapi.Secret
	for i := range 20 {
		out, err := sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{Name: aws.String(fmt.Sprintf("s%d", i)), SecretString: aws.String(strings.Repeat("v", 64))})
		if err != nil {
			b.Fatal(err)
		}
		secrets = append(secrets, agentapi.Secret{Field: fmt.Sprintf("secrets[%d]", i), Store: agentapi.StoreAWS, ID: *out.ARN, File: filepath.Join(set, "g", fmt.Sprint(i))})
	}
	spec, _ := json.Marshal(secrets)
	env := []string{"AWS_ENDPOINT_URL_SECRETS_MANAGER=" + proxy, "AWS_ENDPOINT_URL_STS=" + proxy,
		"AWS_ROLE_ARN=arn:aws:iam::123456789012:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE=" + tokenFile, "AWS_STS_REGIONAL_ENDPOINTS=regional",
		"AWS_EC2_METADATA_DISABLED=true", "HOME=" + dir}
	for b.Loop() {
		os.RemoveAll(set)
		fetch := exec.Command(bin, "fetch", "--set-dir="+set, "--secrets="+string(spec))
		fetch.Env = env
		if out, err := fetch.CombinedOutput(); err != nil {
			b.Fatalf("fetch: %v\n%s", err, out)
		}
		before := calls()
		cmd := exec.Command(bin, "sidecar", "--set-dir="+set, "--refresh=1s", "--refresh-jitter=0", "--secrets="+string(spec))
		cmd.Env = env
		logs := &syncBuffer{}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		time.Sleep(10500 * time.Millisecond) // 10 refreshes
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			b.Fatalf("the sidecar on SIGTERM: %v (want exit 0)\n%s", err, logs)
		}
		for _, l := range strings.Split(string(status), "\n") {
			if f := strings.Fields(l); len(f) == 3 && (f[0] == "VmRSS:" || f[0] == "VmHWM:") {
				kb, _ := strconv.Atoi(f[1])
				b.ReportMetric(float64(kb)/1024, map[string]string{"VmRSS:": "RSS-MiB", "VmHWM:": "peak-RSS-MiB"}[f[0]])
			}
		}
		after := calls()
		b.ReportMetric(float64(after["secretsmanager.DescribeSecret"]-before["secretsmanager.DescribeSecret"])/10, "DescribeSecret/refresh")
		b.ReportMetric(float64(after["secretsmanager.GetSecretValue"]-before["secretsmanager.GetSecretValue"])/10, "GetSecretValue/refresh")
	}
}

// TestSidecarWait: --wait (the sidecar's postStart hook) returns 0 as soon
// as the status is ready, and after --wait-timeout exits 1 saying what is
// not ready, for the kubelet's PostStartHookError.
func TestSidecarWait(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, StatusFile)
	write := func(st status) {
		b, _ := json.Marshal(st)
		if err := writeAtomic(file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(status{Problems: []string{"token api: HTTP 401: invalid_client"}})
	var out bytes.Buffer
	t0 := time.Now()
	code := runSidecar(context.Background(), []string{"--wait", "--wait-timeout=300ms", "--dir=" + dir}, &out, io.Discard)
	if code != 1 || !strings.Contains(out.String(), "tokens not written yet: token api: HTTP 401: invalid_client") || time.Since(t0) < 300*time.Millisecond {
		t.Errorf("not ready: exit %d after %s, %q", code, time.Since(t0), out.String())
	}
	go func() {
		time.Sleep(200 * time.Millisecond)
		write(status{Ready: true})
	}()
	t0 = time.Now()
	if code := runSidecar(context.Background(), []string{"--wait", "--dir=" + dir}, io.Discard, io.Discard); code != 0 || time.Since(t0) > 2*time.Second {
		t.Errorf("ready after 200 ms: exit %d after %s", code, time.Since(t0))
	}
}

// TestSetTrustsOnlyItsOwnDirs: a ..data that names anything but a set
// directory of writeSet's (.., a path out of the volume, a link) is not
// read and, replaced, not removed; directories an interrupted write left
// are removed at the next write.
func TestSetTrustsOnlyItsOwnDirs(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "secrets")
	outside := filepath.Join(root, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(outside, "keep"), []byte("not the set's"), 0o644)
	if _, err := writeSet(dir, map[string][]byte{"g/k": []byte("v1")}, 0o444); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"..", "../outside", outside, "..2026_01_01_00_00_00.1/../.."} {
		os.Remove(filepath.Join(dir, dataLink))
		if err := os.Symlink(target, filepath.Join(dir, dataLink)); err != nil {
			t.Fatal(err)
		}
		if got, _ := readSet(dir); len(got) != 0 {
			t.Errorf("..data -> %s: read %v", target, got)
		}
		if _, err := writeSet(dir, map[string][]byte{"g/k": []byte("v2")}, 0o444); err != nil {
			t.Fatalf("..data -> %s: %v", target, err)
		}
		if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
			t.Fatalf("..data -> %s: a file outside the set was removed: %v", target, err)
		}
	}
	// An interrupted write's directory.
	stray := filepath.Join(dir, "..2026_01_01_00_00_00.99")
	os.MkdirAll(filepath.Join(stray, "g"), 0o700)
	if _, err := writeSet(dir, map[string][]byte{"g/k": []byte("v3")}, 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the interrupted write's directory is still there: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "g", "k")); string(b) != "v3" {
		t.Errorf("g/k: %q", b)
	}
}

// TestSidecarFetch: with --fetch-secrets the sidecar fetches as the fetch
// init container would, then refreshes what it fetched. Its status is
// ready once every secret is written; when one cannot be had it is ready
// and failed, with the reason the exec wrapper fails the task with; the
// sidecar stays up (a native sidecar that exits is started again) and
// tries again, and once it can, the status clears.
func TestSidecarFetch(t *testing.T) {
	var gen atomic.Int64
	var denied atomic.Bool
	gen.Store(1)
	denied.Store(true)
	RegisterStore("test-fetch", func(context.Context, FetchConfig, []agentapi.Secret) (Store, error) {
		return storeFunc(func(_ context.Context, s agentapi.Secret) ([]byte, error) {
			if s.ID == "denied" && denied.Load() {
				return nil, Permanent(errors.New("AccessDeniedException: not allowed"))
			}
			return []byte(fmt.Sprintf("%s-%d", s.ID, gen.Load())), nil
		}), nil
	})
	t.Cleanup(func() { delete(stores, "test-fetch") })
	run := func(t *testing.T, ids ...string) (dir, status string, cancel func() error) {
		dir = t.TempDir()
		fc := DefaultFetchConfig()
		fc.SetDir, fc.Mode, fc.MinBackoff, fc.MaxBackoff = dir, 0o444, 10*time.Millisecond, 20*time.Millisecond
		for i, id := range ids {
			fc.Secrets = append(fc.Secrets, agentapi.Secret{Field: fmt.Sprintf("secrets[%d]", i), Store: "test-fetch", ID: id, File: filepath.Join(dir, id)})
		}
		rc := DefaultRefreshConfig()
		rc.Fetch, rc.Interval, rc.MinBackoff = fc, 50*time.Millisecond, 10*time.Millisecond
		status = filepath.Join(t.TempDir(), ".status")
		ctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- RunSidecar(ctx, SidecarConfig{Fetch: &fc, Refresh: &rc, Status: status}, testLogger(&syncBuffer{}))
		}()
		return dir, status, func() error { stop(); return <-done }
	}
	t.Run("fetched", func(t *testing.T) {
		dir, status, stop := run(t, "a", "b")
		waitFor(t, "ready", 5*time.Second, func() bool { _, ok := Check(status); return ok })
		for _, id := range []string{"a", "b"} {
			if b, err := os.ReadFile(filepath.Join(dir, id)); string(b) != id+"-1" {
				t.Errorf("%s: %q, %v", id, b, err)
			}
		}
		if why, err := FetchFailure(status); why != "" || err != nil {
			t.Errorf("FetchFailure: %q, %v", why, err)
		}
		gen.Store(2)
		waitFor(t, "refreshed after the fetch", 5*time.Second, func() bool { b, _ := os.ReadFile(filepath.Join(dir, "b")); return string(b) == "b-2" })
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("denied", func(t *testing.T) {
		dir, status, stop := run(t, "a", "denied")
		waitFor(t, "ready and failed", 5*time.Second, func() bool { _, ok := Check(status); return ok })
		why, err := FetchFailure(status)
		if err != nil || !strings.Contains(why, `secrets[1] (test-fetch denied): AccessDeniedException: not allowed`) {
			t.Errorf("FetchFailure: %q, %v", why, err)
		}
		if msg, _ := Check(status); !strings.HasPrefix(msg, "secrets not fetched: secrets[1]") {
			t.Errorf("Check: %q", msg)
		}
		if _, err := os.Stat(filepath.Join(dir, "a")); err == nil {
			t.Error("a file was written although a secret could not be read")
		}
		// The fetch is tried again: once the secret can be read, the
		// status clears, for a container the kubelet starts again.
		denied.Store(false)
		waitFor(t, "fetched on a later try", 10*time.Second, func() bool { why, err := FetchFailure(status); return why == "" && err == nil })
		if b, err := os.ReadFile(filepath.Join(dir, "a")); string(b) != "a-1" && string(b) != "a-2" {
			t.Errorf("a after the later try: %q, %v", b, err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}
