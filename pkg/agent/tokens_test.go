package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/secctx/secctx/internal/oidctest"
	"github.com/secctx/secctx/pkg/agentapi"
)

// provider starts a real OpenID Provider (zitadel/oidc's pkg/op) on a
// loopback port, with client my-app / s3cret-value.
func provider(t *testing.T, lifetime time.Duration) (*oidctest.Provider, string) {
	t.Helper()
	return providerWith(t, lifetime, nil)
}

// providerWith is provider with its handler wrapped by wrap, to see the
// requests it gets.
func providerWith(t *testing.T, lifetime time.Duration, wrap func(http.Handler) http.Handler) (*oidctest.Provider, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String()
	p, err := oidctest.New(oidctest.Options{Issuer: issuer, Clients: map[string]string{"my-app": "s3cret-value"}, TokenLifetime: lifetime})
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = p
	if wrap != nil {
		h = wrap(p)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return p, issuer
}

// syncBuffer is a log sink the test reads while the sidecar writes.
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

// sidecar runs RunTokens on one token until the test ends.
func sidecar(t *testing.T, tok agentapi.Token, secret string, tune func(*TokensConfig)) (dir string, logs *syncBuffer) {
	t.Helper()
	dir = t.TempDir()
	secretFile := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok.ClientSecretFile = secretFile
	cfg := DefaultTokensConfig()
	cfg.Dir, cfg.Tokens = dir, []agentapi.Token{tok}
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 400*time.Millisecond
	cfg.MinRefresh = 100 * time.Millisecond
	for _, e := range []string{tok.TokenEndpoint, tok.DiscoveryEndpoint} {
		if u, err := url.Parse(e); err == nil && u.Scheme == "http" {
			cfg.HTTPHosts = append(cfg.HTTPHosts, u.Host)
		}
	}
	if tune != nil {
		tune(&cfg)
	}
	logs = &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- RunTokens(ctx, cfg, testLogger(logs)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunTokens: %v", err)
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the client secret is in the sidecar's log:\n%s", logs)
		}
	})
	return dir, logs
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readToken(dir, name string) string {
	b, _ := os.ReadFile(filepath.Join(dir, name))
	return string(b)
}

// TestTokensRefreshed: discovery finds the token endpoint; a token that
// lives 1.5 s is renewed several times, each a JWT the resource server
// accepts, and never logged.
func TestTokensRefreshed(t *testing.T) {
	p, issuer := provider(t, 1500*time.Millisecond)
	dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app",
		DiscoveryEndpoint: issuer + "/.well-known/openid-configuration"}, "s3cret-value", nil)

	waitFor(t, "the first token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	if msg, ok := Check(filepath.Join(dir, StatusFile)); !ok {
		t.Fatalf("Check = %q, not ready after the token was written", msg)
	}
	seen := map[string]bool{}
	waitFor(t, "three renewals", 10*time.Second, func() bool {
		tok := readToken(dir, "api")
		if tok != "" && !seen[tok] {
			seen[tok] = true
			if _, err := p.Verify(context.Background(), tok); err != nil {
				t.Fatalf("the resource server refuses token %d: %v", len(seen), err)
			}
		}
		return len(seen) >= 4
	})
	if p.Issued() < 4 {
		t.Errorf("provider issued %d tokens, want at least 4", p.Issued())
	}
	for tok := range seen {
		if strings.Contains(logs.String(), tok) {
			t.Fatalf("a token is in the sidecar's log")
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left in the token directory", e.Name())
		}
	}
}

// TestTokensProviderDown: while the provider is down the old token stays
// until it expires, then is removed; once the provider is back a new one
// comes.
func TestTokensProviderDown(t *testing.T) {
	// expires_in is whole seconds: 3 here, so renewal starts at about
	// 2.4 s and the token expires at 3 s.
	p, issuer := provider(t, 3900*time.Millisecond)
	dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "s3cret-value", nil)
	waitFor(t, "the first token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	first := readToken(dir, "api")
	p.SetDown(true)
	waitFor(t, "a failed renewal", 5*time.Second, func() bool { return strings.Contains(logs.String(), "token not renewed") })
	if got := readToken(dir, "api"); got != first {
		t.Fatalf("the token changed or went while the provider was down and it had not expired")
	}
	if msg, ok := Check(filepath.Join(dir, StatusFile)); !ok || !strings.Contains(msg, "the current token is kept") {
		t.Errorf("Check = %q, %v; want ready, saying the token is kept", msg, ok)
	}
	waitFor(t, "the expired token to be removed", 3*time.Second, func() bool { return readToken(dir, "api") == "" })
	if msg, _ := Check(filepath.Join(dir, StatusFile)); !strings.Contains(msg, "expired and not renewed") || !strings.Contains(msg, "HTTP 503") {
		t.Errorf("Check = %q, want it to say the token expired and why", msg)
	}
	p.SetDown(false)
	waitFor(t, "a new token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	if _, err := p.Verify(context.Background(), readToken(dir, "api")); err != nil {
		t.Errorf("the renewed token is refused: %v", err)
	}
	if !strings.Contains(logs.String(), "token not renewed") {
		t.Errorf("no log line for the failures:\n%s", logs)
	}
}

// TestTokensWrongSecret: a wrong client secret gives no token, a status
// that says invalid_client for the startup probe (and so the kubelet's
// events), and an error in the log.
func TestTokensWrongSecret(t *testing.T) {
	_, issuer := provider(t, time.Minute)
	dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "wrong-secret", nil)
	waitFor(t, "a failure in the status", 5*time.Second, func() bool {
		msg, ok := Check(filepath.Join(dir, StatusFile))
		return !ok && strings.Contains(msg, "invalid_client")
	})
	msg, _ := Check(filepath.Join(dir, StatusFile))
	if !strings.Contains(msg, "check the client id and the client secret") {
		t.Errorf("Check = %q, want a hint at the client secret", msg)
	}
	if readToken(dir, "api") != "" {
		t.Error("a token was written with a wrong secret")
	}
	if !strings.Contains(logs.String(), "invalid_client") {
		t.Errorf("log does not say invalid_client:\n%s", logs)
	}
}

// TestTokensEndpointHangs: a token endpoint that never answers is given up
// on after the request timeout and retried; once it answers, the token
// comes.
func TestTokensEndpointHangs(t *testing.T) {
	p, issuer := provider(t, time.Minute)
	p.SetHang(true)
	dir, _ := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "s3cret-value",
		func(c *TokensConfig) { c.RequestTimeout = 300 * time.Millisecond })
	waitFor(t, "a timeout in the status", 5*time.Second, func() bool {
		msg, _ := Check(filepath.Join(dir, StatusFile))
		return strings.Contains(msg, "no answer in time")
	})
	p.SetHang(false)
	waitFor(t, "the token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
}

func TestCheckBeforeStart(t *testing.T) {
	if msg, ok := Check(filepath.Join(t.TempDir(), StatusFile)); ok || !strings.Contains(msg, "starting") {
		t.Errorf("Check on an empty directory = %q, %v", msg, ok)
	}
}

// tokenRequest is what a token endpoint saw of one request.
type tokenRequest struct {
	basicAuth bool
	body      string
	at        time.Time
}

// recorder wraps a handler and keeps the requests to path.
type recorder struct {
	path string
	mu   sync.Mutex
	reqs []tokenRequest
}

func (rec *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == rec.path {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			_, _, basic := r.BasicAuth()
			rec.mu.Lock()
			rec.reqs = append(rec.reqs, tokenRequest{basicAuth: basic, body: string(b), at: time.Now()})
			rec.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

func (rec *recorder) requests() []tokenRequest {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return slices.Clone(rec.reqs)
}

// tlsServer is an httptest HTTPS server counting its requests; its
// certificate is also the CA bundle that trusts it (httptest's servers
// share one).
func tlsServer(t *testing.T, h http.HandlerFunc) (srv *httptest.Server, hits *atomic.Int64) {
	t.Helper()
	hits = &atomic.Int64{}
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, hits
}

func caBundle(srv *httptest.Server) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}))
}

// TestTokensNeverRedirected: a token endpoint that redirects (307 or 308,
// which replay the body) gets its answer refused, whatever the auth style:
// the redirect's target receives no request at all, so neither the client
// secret in the header nor the one in the body leaves for another host,
// and the error names the target's host but not its user info or query.
func TestTokensNeverRedirected(t *testing.T) {
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for _, style := range []string{"", agentapi.AuthStyleHeader, agentapi.AuthStyleBody} {
			t.Run(fmt.Sprintf("%d,%q", code, style), func(t *testing.T) {
				target, targetHits := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, `{"access_token":"stolen","token_type":"Bearer","expires_in":3600}`)
				})
				u, _ := url.Parse(target.URL)
				u.User, u.Path, u.RawQuery = url.UserPassword("user-info", "in-location"), "/token", "q=query-in-location"
				idp, idpHits := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, u.String(), code)
				})
				dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: idp.URL + "/token", AuthStyle: style},
					"s3cret-value", func(c *TokensConfig) { c.CABundle = caBundle(idp) })
				waitFor(t, "two refused attempts", 5*time.Second, func() bool { return idpHits.Load() >= 2 })
				msg, ok := Check(filepath.Join(dir, StatusFile))
				if ok || !strings.Contains(msg, fmt.Sprintf("token endpoint %s/token: redirected (HTTP %d) to https://%s: refused: a token request is never redirected", idp.URL, code, u.Host)) {
					t.Errorf("Check = %q, %v; want not ready, naming the endpoint and the redirect's host", msg, ok)
				}
				for _, leak := range []string{"user-info", "in-location", "query-in-location"} {
					if strings.Contains(msg, leak) || strings.Contains(logs.String(), leak) {
						t.Errorf("the status or the log carries %q from the Location", leak)
					}
				}
				if n := targetHits.Load(); n != 0 {
					t.Errorf("the redirect's target received %d requests, want none", n)
				}
				if readToken(dir, "api") != "" {
					t.Error("a token was written")
				}
			})
		}
	}
}

// TestTokensHeaderStyleOnly: with the header style (and by default), the
// client secret is sent in the Authorization header only, also after the
// provider refused it: never again in the form body, which is how a
// library that guesses the style retries.
func TestTokensHeaderStyleOnly(t *testing.T) {
	for _, style := range []string{"", agentapi.AuthStyleHeader} {
		t.Run(fmt.Sprintf("%q", style), func(t *testing.T) {
			rec := &recorder{path: oidctest.TokenPath}
			_, issuer := providerWith(t, time.Minute, rec.wrap)
			dir, _ := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath, AuthStyle: style}, "wrong-secret", nil)
			waitFor(t, "three refusals", 5*time.Second, func() bool { return len(rec.requests()) >= 3 })
			if msg, _ := Check(filepath.Join(dir, StatusFile)); !strings.Contains(msg, "HTTP 401: invalid_client") {
				t.Errorf("Check = %q, want the 401", msg)
			}
			for i, r := range rec.requests() {
				if !r.basicAuth || strings.Contains(r.body, "client_secret") || strings.Contains(r.body, "wrong-secret") {
					t.Errorf("request %d: basic auth %v, body %q; want the secret in the header alone", i, r.basicAuth, r.body)
				}
			}
		})
	}
}

// TestTokensBodyStyle: the body style sends client_id and client_secret in
// the form and no Authorization header; the provider takes it.
func TestTokensBodyStyle(t *testing.T) {
	rec := &recorder{path: oidctest.TokenPath}
	p, issuer := providerWith(t, time.Minute, rec.wrap)
	dir, _ := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath, AuthStyle: agentapi.AuthStyleBody}, "s3cret-value", nil)
	waitFor(t, "the token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	if _, err := p.Verify(context.Background(), readToken(dir, "api")); err != nil {
		t.Errorf("the token is refused: %v", err)
	}
	reqs := rec.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d token requests, want 1", len(reqs))
	}
	form, _ := url.ParseQuery(reqs[0].body)
	if reqs[0].basicAuth || form.Get("client_secret") != "s3cret-value" || form.Get("client_id") != "my-app" {
		t.Errorf("basic auth %v, form %v; want the client in the form alone", reqs[0].basicAuth, form)
	}
}

// TestTokensDiscoveryRedirects: discovery follows a redirect on its own
// host, and refuses one to another host (which then receives nothing) or to
// plain http.
func TestTokensDiscoveryRedirects(t *testing.T) {
	p, issuer := provider(t, time.Minute)
	other, otherHits := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"token_endpoint":%q}`, issuer+oidctest.TokenPath)
	})
	var idp *httptest.Server
	idp, _ = tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/real", http.StatusFound)
		case "/real":
			fmt.Fprintf(w, `{"token_endpoint":%q}`, issuer+oidctest.TokenPath)
		case "/other":
			http.Redirect(w, r, other.URL+"/real?q=query-in-location", http.StatusFound)
		case "/plain":
			http.Redirect(w, r, strings.Replace(idp.URL, "https:", "http:", 1)+"/real", http.StatusFound)
		}
	})
	issuerHost := strings.TrimPrefix(issuer, "http://")
	run := func(t *testing.T, path string) (dir string) {
		dir, _ = sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", DiscoveryEndpoint: idp.URL + path}, "s3cret-value",
			func(c *TokensConfig) { c.CABundle, c.HTTPHosts = caBundle(idp), []string{issuerHost} })
		return dir
	}
	t.Run("same host", func(t *testing.T) {
		dir := run(t, "/same")
		waitFor(t, "the token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
		if _, err := p.Verify(context.Background(), readToken(dir, "api")); err != nil {
			t.Error(err)
		}
	})
	for path, want := range map[string]string{
		"/other": "redirected (HTTP 302) to " + other.URL + ": refused: another host than the discovery endpoint's",
		"/plain": "redirected (HTTP 302) to " + strings.Replace(idp.URL, "https:", "http:", 1) + ": refused: not https",
	} {
		t.Run(path, func(t *testing.T) {
			dir := run(t, path)
			waitFor(t, "the refusal", 5*time.Second, func() bool {
				msg, _ := Check(filepath.Join(dir, StatusFile))
				return strings.Contains(msg, "discovery")
			})
			if msg, ok := Check(filepath.Join(dir, StatusFile)); ok || !strings.Contains(msg, "discovery "+idp.URL+path+": "+want) || strings.Contains(msg, "query-in-location") {
				t.Errorf("Check = %q, %v\nwant it to say %q", msg, ok, want)
			}
		})
	}
	if n := otherHits.Load(); n != 0 {
		t.Errorf("the other host received %d requests, want none", n)
	}
}

// TestTokensDiscoveredEndpointHTTPS: discovery's token_endpoint must be
// https, or http to an --http-host host; else the grant is not run, and the
// client secret is not sent there.
func TestTokensDiscoveredEndpointHTTPS(t *testing.T) {
	var plainHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		io.WriteString(w, `{"access_token":"x","token_type":"Bearer","expires_in":3600}`)
	}))
	defer plain.Close()
	for _, endpoint := range []string{plain.URL + "/token", "/relative", "https:///no-host", "ftp://" + strings.TrimPrefix(plain.URL, "http://")} {
		t.Run(endpoint, func(t *testing.T) {
			disc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, `{"token_endpoint":%q}`, endpoint)
			}))
			defer disc.Close()
			dir, _ := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", DiscoveryEndpoint: disc.URL + "/.well-known/openid-configuration"}, "s3cret-value", nil)
			waitFor(t, "the refusal", 5*time.Second, func() bool {
				msg, _ := Check(filepath.Join(dir, StatusFile))
				return strings.Contains(msg, "token_endpoint "+fmt.Sprintf("%q", endpoint)+": must be an https URL")
			})
		})
	}
	if n := plainHits.Load(); n != 0 {
		t.Errorf("the plain http token endpoint received %d requests", n)
	}
}

// tokenServer is a token endpoint that answers request n (from 1) with
// answer(n): for the protocol's edges (a lifetime of 0, no expires_in, a
// huge token) that a conforming provider does not send.
func tokenServer(t *testing.T, answer func(n int64, w http.ResponseWriter)) (endpoint string, requests *atomic.Int64) {
	t.Helper()
	requests = &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		answer(requests.Add(1), w)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token", requests
}

// fakeJWT is a JWT-shaped token with claims, unsigned: the sidecar reads
// exp and verifies nothing.
func fakeJWT(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc([]byte(claims)) + ".c2lnbmF0dXJl"
}

// TestTokensDeadOnArrival: an answer whose lifetime is already over (a
// present expires_in of 0 or less, or no expires_in and a JWT whose exp is
// past) is an error: nothing is written, the status says why, and it is
// asked again with backoff.
func TestTokensDeadOnArrival(t *testing.T) {
	for name, tc := range map[string]struct{ body, want string }{
		"expires_in 0":                  {`{"access_token":"a","token_type":"Bearer","expires_in":0}`, "expires_in 0: the token is dead on arrival"},
		"expires_in -5":                 {`{"access_token":"a","token_type":"Bearer","expires_in":-5}`, "expires_in -5: the token is dead on arrival"},
		"expires_in string 0":           {`{"access_token":"a","token_type":"Bearer","expires_in":"0"}`, "expires_in 0: the token is dead on arrival"},
		"JWT exp past":                  {`{"access_token":"` + fakeJWT(`{"exp":1000000000}`) + `","token_type":"Bearer"}`, "exp 2001-09-09T01:46:40Z is past"},
		"JWT exp past, expires_in null": {`{"access_token":"` + fakeJWT(`{"exp":1000000000}`) + `","token_type":"Bearer","expires_in":null}`, "is past"},
	} {
		t.Run(name, func(t *testing.T) {
			endpoint, requests := tokenServer(t, func(_ int64, w http.ResponseWriter) { io.WriteString(w, tc.body) })
			dir, _ := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: endpoint}, "s3cret-value", nil)
			waitFor(t, "three attempts", 5*time.Second, func() bool { return requests.Load() >= 3 })
			if readToken(dir, "api") != "" {
				t.Error("a dead token was written")
			}
			if msg, ok := Check(filepath.Join(dir, StatusFile)); ok || !strings.Contains(msg, tc.want) {
				t.Errorf("Check = %q, %v; want not ready, saying %q", msg, ok, tc.want)
			}
		})
	}
}

// TestTokensRenewalFloor: a token that says it lives 1 s is renewed every
// MinRefresh, not every 0.8 s, and the sidecar says so once.
func TestTokensRenewalFloor(t *testing.T) {
	p, issuer := provider(t, 1900*time.Millisecond) // expires_in is whole seconds: 1
	dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "s3cret-value",
		func(c *TokensConfig) { c.MinRefresh = 2 * time.Second })
	waitFor(t, "the first token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	time.Sleep(4500 * time.Millisecond) // renewals at 2 s and 4 s; without the floor, 5 of them
	if n := p.Issued(); n < 2 || n > 3 {
		t.Errorf("%d tokens issued in 4.5 s, want 2 or 3 (one every 2 s)", n)
	}
	if n := strings.Count(logs.String(), "token lives less than the renewal floor"); n != 1 {
		t.Errorf("the short lifetime is logged %d times, want once:\n%s", n, logs)
	}
	if msg, ok := Check(filepath.Join(dir, StatusFile)); !ok {
		t.Errorf("Check = %q, not ready", msg)
	}
}

// TestTokensJWTExpiry: an answer without expires_in whose access token is
// a JWT expires at its exp: while renewal fails, the token is kept until
// then and removed after, not kept for ever.
func TestTokensJWTExpiry(t *testing.T) {
	exp := time.Now().Add(4 * time.Second).Unix()
	endpoint, _ := tokenServer(t, func(n int64, w http.ResponseWriter) {
		if n > 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer"}`, fakeJWT(fmt.Sprintf(`{"sub":"my-app","exp":%d}`, exp)))
	})
	dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: endpoint}, "s3cret-value", nil)
	waitFor(t, "the token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	waitFor(t, "a failed renewal", 5*time.Second, func() bool { return strings.Contains(logs.String(), "token not renewed") })
	if msg, ok := Check(filepath.Join(dir, StatusFile)); !ok || !strings.Contains(msg, "kept until "+time.Unix(exp, 0).UTC().Format(time.RFC3339)) {
		t.Errorf("Check = %q, %v; want ready, the token kept until its exp", msg, ok)
	}
	waitFor(t, "the token removed at its exp", 6*time.Second, func() bool { return readToken(dir, "api") == "" })
	if time.Now().Unix() < exp {
		t.Errorf("the token was removed before its exp")
	}
	// The file goes first, then the status says why: a moment apart.
	waitFor(t, "the status to say the token expired", 2*time.Second, func() bool {
		msg, _ := Check(filepath.Join(dir, StatusFile))
		return strings.Contains(msg, "expired and not renewed")
	})
}

// TestTokensFailureBackoffJittered: the wait after a failure is spread
// over [backoff/2, backoff], so that pods that failed together do not ask
// again together.
func TestTokensFailureBackoffJittered(t *testing.T) {
	rec := &recorder{path: oidctest.TokenPath}
	p, issuer := providerWith(t, time.Minute, rec.wrap)
	p.SetDown(true)
	const backoff = 300 * time.Millisecond
	sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "s3cret-value",
		func(c *TokensConfig) { c.MinBackoff, c.MaxBackoff = backoff, backoff })
	waitFor(t, "13 attempts", 10*time.Second, func() bool { return len(rec.requests()) >= 13 })
	reqs := rec.requests()
	shortest := time.Hour
	for i := 1; i < len(reqs); i++ {
		d := reqs[i].at.Sub(reqs[i-1].at)
		shortest = min(shortest, d)
		if d < backoff/2-20*time.Millisecond {
			t.Errorf("attempt %d came %v after the one before, less than half the backoff %v", i, d, backoff)
		}
	}
	// Without jitter every wait is at least the backoff; with it, the
	// chance that 12 waits all fall in its last tenth is 1e-12.
	if shortest >= backoff*9/10 {
		t.Errorf("the shortest wait between attempts was %v: not spread below the backoff %v", shortest, backoff)
	}
}

func TestJitter(t *testing.T) {
	for _, d := range []time.Duration{time.Nanosecond, 3 * time.Nanosecond, time.Second} {
		lo, hi := d, time.Duration(0)
		for range 2000 {
			j := jitter(d)
			lo, hi = min(lo, j), max(hi, j)
		}
		if lo < d/2 || hi > d {
			t.Errorf("jitter(%v) in [%v, %v], want within [%v, %v]", d, lo, hi, d/2, d)
		}
		if d == time.Second && (lo > 550*time.Millisecond || hi < 950*time.Millisecond) {
			t.Errorf("jitter(1s) in [%v, %v] over 2000 draws: not spread over [0.5s, 1s]", lo, hi)
		}
	}
	if jitter(0) != 0 {
		t.Error("jitter(0) != 0")
	}
}

// TestRefreshIn: a renewal comes at RefreshAt of the lifetime, give or
// take Jitter of it, never before MinRefresh; NoExpiryRefresh without an
// expiry.
func TestRefreshIn(t *testing.T) {
	r := &runner{cfg: DefaultTokensConfig()}
	for range 500 {
		if w := r.refreshIn(time.Now().Add(100 * time.Second)); w < 74*time.Second || w > 85*time.Second {
			t.Fatalf("refreshIn(100 s) = %v, want within 75 s to 85 s", w)
		}
		if w := r.refreshIn(time.Now().Add(time.Second)); w != r.cfg.MinRefresh {
			t.Fatalf("refreshIn(1 s) = %v, want the floor %v", w, r.cfg.MinRefresh)
		}
	}
	if w := r.refreshIn(time.Time{}); w != 15*time.Minute {
		t.Errorf("refreshIn(no expiry) = %v", w)
	}
}

// TestTokensSize: an access token of MaxTokenBytes is written; one byte
// more is refused, naming the token and the limit; an answer over x/oauth2's
// 1 MiB is cut there and refused.
func TestTokensSize(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{
		{agentapi.MaxTokenBytes, ""},
		{agentapi.MaxTokenBytes + 1, fmt.Sprintf("token api: token endpoint %%s: an access token of %d bytes, more than the %d a token may have", agentapi.MaxTokenBytes+1, agentapi.MaxTokenBytes)},
		{2 << 20, "cannot parse json"},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			endpoint, requests := tokenServer(t, func(_ int64, w http.ResponseWriter) {
				fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, strings.Repeat("a", tc.n))
			})
			dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: endpoint}, "s3cret-value", nil)
			if tc.want == "" {
				waitFor(t, "the token", 5*time.Second, func() bool { return len(readToken(dir, "api")) == tc.n })
				return
			}
			waitFor(t, "two attempts", 5*time.Second, func() bool { return requests.Load() >= 2 })
			want := tc.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, endpoint)
			}
			if msg, ok := Check(filepath.Join(dir, StatusFile)); ok || !strings.Contains(msg, want) {
				t.Errorf("Check = %.300q, %v; want %q", msg, ok, want)
			}
			if readToken(dir, "api") != "" || strings.Contains(logs.String(), "aaaaaaaa") {
				t.Error("the token was written, or logged")
			}
		})
	}
}

// TestTokensFileMode: token files (and the status) are 0644, whatever the
// umask: the task's containers run as users of their own.
func TestTokensFileMode(t *testing.T) {
	_, issuer := provider(t, time.Minute)
	dir, _ := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "s3cret-value", nil)
	waitFor(t, "the token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	for _, f := range []string{"api", StatusFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode() != 0o644 {
			t.Errorf("%s: mode %v, %v; want -rw-r--r--", f, fi.Mode(), err)
		}
	}
}

// TestTokensSecretRotated: the client secret is read for each request, so
// a rotated Secret mends a refused client without a restart.
func TestTokensSecretRotated(t *testing.T) {
	_, issuer := provider(t, time.Minute)
	var secretFile string
	dir, _ := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "old-secret",
		func(c *TokensConfig) { secretFile = c.Tokens[0].ClientSecretFile })
	waitFor(t, "the refusal", 5*time.Second, func() bool {
		msg, _ := Check(filepath.Join(dir, StatusFile))
		return strings.Contains(msg, "invalid_client")
	})
	if err := os.WriteFile(secretFile, []byte("s3cret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the token after the rotation", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
}

// TestTokensErrorBodyDropped: a refusal is reported by its status, error
// and (cut) error_description; the rest of the body, which a provider may
// fill with anything, is in no status or log line.
func TestTokensErrorBodyDropped(t *testing.T) {
	endpoint, _ := tokenServer(t, func(_ int64, w http.ResponseWriter) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_scope","error_description":%q,"debug":"BODY-MARKER"}`, strings.Repeat("d", 300)+"TAIL-MARKER")
	})
	dir, logs := sidecar(t, agentapi.Token{Name: "api", ClientID: "my-app", TokenEndpoint: endpoint}, "s3cret-value", nil)
	waitFor(t, "the refusal", 5*time.Second, func() bool {
		msg, _ := Check(filepath.Join(dir, StatusFile))
		return strings.Contains(msg, "HTTP 400: invalid_scope: ")
	})
	msg, _ := Check(filepath.Join(dir, StatusFile))
	for _, marker := range []string{"BODY-MARKER", "TAIL-MARKER"} {
		if strings.Contains(msg, marker) || strings.Contains(logs.String(), marker) {
			t.Errorf("%s is in the status or the log: %q", marker, msg)
		}
	}
}

// TestTokensStatusNotLost: the status is written whole by one writer at a
// time, so the newest state is the one in the file: once every token is
// written and the sidecar has stopped, the probe is ready, every time.
func TestTokensStatusNotLost(t *testing.T) {
	_, issuer := provider(t, time.Hour)
	secretFile := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(secretFile, []byte("s3cret-value"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultTokensConfig()
	cfg.HTTPHosts = []string{strings.TrimPrefix(issuer, "http://")}
	cfg.MinRefresh = time.Millisecond
	for i := range 16 {
		cfg.Tokens = append(cfg.Tokens, agentapi.Token{Name: fmt.Sprintf("t%d", i), ClientID: "my-app", ClientSecretFile: secretFile, TokenEndpoint: issuer + oidctest.TokenPath})
	}
	runs := 200
	if testing.Short() {
		runs = 20
	}
	notReady := 0
	root := t.TempDir()
	for run := range runs {
		cfg.Dir = filepath.Join(root, strconv.Itoa(run))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- RunTokens(ctx, cfg, logr.Discard()) }()
		waitFor(t, "16 tokens", 10*time.Second, func() bool {
			for _, tok := range cfg.Tokens {
				if _, err := os.Stat(filepath.Join(cfg.Dir, tok.Name)); err != nil {
					return false
				}
			}
			return true
		})
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if msg, ok := Check(filepath.Join(cfg.Dir, StatusFile)); !ok {
			notReady++
			t.Logf("run %d: Check = %q", run, msg)
		}
	}
	if notReady > 0 {
		t.Errorf("%d of %d runs not ready after every token was written", notReady, runs)
	}
}

// TestTokensConfigRefused: a configuration the sidecar cannot keep to
// stops it at start (exit 2), not at the first request.
func TestTokensConfigRefused(t *testing.T) {
	tok := func(mod func(*agentapi.Token)) string {
		tk := agentapi.Token{Name: "api", ClientID: "c", ClientSecretFile: "/s", TokenEndpoint: "https://idp.example/token"}
		if mod != nil {
			mod(&tk)
		}
		b, _ := json.Marshal([]agentapi.Token{tk})
		return "--tokens=" + string(b)
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"auth style":           {[]string{tok(func(t *agentapi.Token) { t.AuthStyle = "basic" })}, `token api: authStyle "basic": must be header or body`},
		"name escapes":         {[]string{tok(func(t *agentapi.Token) { t.Name = "../x" })}, `tokens[0]: name "../x"`},
		"name is the status":   {[]string{tok(func(t *agentapi.Token) { t.Name = StatusFile })}, `tokens[0]: name ".status"`},
		"no endpoint":          {[]string{tok(func(t *agentapi.Token) { t.TokenEndpoint = "" })}, "neither tokenEndpoint nor idpDiscoveryEndpoint"},
		"http endpoint":        {[]string{tok(func(t *agentapi.Token) { t.TokenEndpoint = "http://idp.example/token" })}, `token api: tokenEndpoint "http://idp.example/token": must be an https URL`},
		"http discovery":       {[]string{tok(func(t *agentapi.Token) { t.TokenEndpoint, t.DiscoveryEndpoint = "", "http://idp.example/" })}, "idpDiscoveryEndpoint"},
		"min refresh 0":        {[]string{"--min-refresh=0s", tok(nil)}, "min refresh 0s"},
		"min refresh negative": {[]string{"--min-refresh=-1s", tok(nil)}, "min refresh -1s"},
		"no tokens":            {[]string{"--tokens=[]"}, "nothing to keep"},
		"extra argument":       {[]string{tok(nil), "extra"}, `unexpected arguments ["extra"]`},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := parseTokensArgsT(append([]string{"--dir=/d"}, tc.args...), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	cfg, _, err := parseTokensArgsT([]string{"--dir=/d", "--http-host=idp:8080", tok(func(t *agentapi.Token) { t.TokenEndpoint = "http://idp:8080/token" })}, io.Discard)
	if err != nil || cfg.MinRefresh != 10*time.Second {
		t.Errorf("an http endpoint of an --http-host: %v; min refresh %v, want the default 10s", err, cfg.MinRefresh)
	}
	if cfg, _, err := parseTokensArgsT([]string{"--dir=/d", "--min-refresh=250ms", tok(func(t *agentapi.Token) { t.AuthStyle = "body" })}, io.Discard); err != nil || cfg.MinRefresh != 250*time.Millisecond {
		t.Errorf("--min-refresh=250ms: %v, %v", cfg.MinRefresh, err)
	}
	// RunTokens holds to the same rules.
	bad := DefaultTokensConfig()
	bad.Dir, bad.Tokens = t.TempDir(), []agentapi.Token{{Name: "api", TokenEndpoint: "https://idp.example/token", AuthStyle: "auto"}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // a sidecar that starts runs until then
	defer cancel()
	if err := RunTokens(ctx, bad, logr.Discard()); err == nil || !strings.Contains(err.Error(), `authStyle "auto"`) {
		t.Errorf("RunTokens: %v", err)
	}
}

// FuzzTokensArgs: whatever the arguments, parsing the sidecar's does not
// panic, and what it accepts (other than --check) is a configuration
// RunSidecar keeps to: valid tokens, or secrets to refresh, or both.
func FuzzTokensArgs(f *testing.F) {
	f.Add("--dir=/etc/flyte/tokens", "--http-host=idp:8080", `--tokens=[{"name":"api","clientId":"c","clientSecretFile":"/s","tokenEndpoint":"http://idp:8080/t"}]`)
	f.Add("--dir=/d", "--min-refresh=10s", `--tokens=[{"name":"a","idpDiscoveryEndpoint":"https://idp/.well-known/openid-configuration","authStyle":"body"}]`)
	f.Add("--dir=/d", "--min-refresh=-1s", `--tokens=[{"name":"a","tokenEndpoint":"https://i/t","authStyle":"basic"}]`)
	f.Add("--check", "--dir=/d", "")
	f.Add("--dir=/d", "x", `--tokens=[{"name":"../a"}]`)
	f.Fuzz(func(t *testing.T, a, b, c string) {
		cfg, check, err := parseSidecarArgs([]string{a, b, c}, io.Discard)
		if err != nil || check {
			return
		}
		tokensOK := cfg.Tokens.Dir != "" && len(cfg.Tokens.Tokens) > 0 && cfg.Tokens.validate() == nil
		refreshOK := cfg.Refresh != nil && len(cfg.Refresh.Fetch.Secrets) > 0 && cfg.Refresh.Interval >= time.Second
		if !tokensOK && !refreshOK || len(cfg.Tokens.Tokens) > 0 && !tokensOK {
			t.Errorf("accepted %q %q %q: %+v", a, b, c, cfg)
		}
	})
}

// FuzzJWTExpiry: whatever the token, reading its exp does not panic; an
// exp it returns is a time it was given, from a token of three parts.
func FuzzJWTExpiry(f *testing.F) {
	f.Add(fakeJWT(`{"exp":1700000000}`), int64(1700000000))
	f.Add(fakeJWT(`{"exp":"1700000000"}`), int64(-1))
	f.Add(fakeJWT(`{"exp":1.5e9}`), int64(0))
	f.Add(fakeJWT(`{"exp":1e300}`), int64(maxJWTExp+1))
	f.Add("opaque-token", int64(1))
	f.Add("a.b.c", int64(1))
	f.Add("..", int64(1))
	f.Add("a."+base64.RawURLEncoding.EncodeToString([]byte(`null`))+".", int64(1))
	f.Fuzz(func(t *testing.T, token string, exp int64) {
		if got, ok := jwtExpiry(token); ok && (strings.Count(token, ".") != 2 || got.Unix() <= 0 || got.Unix() > maxJWTExp) {
			t.Errorf("jwtExpiry(%q) = %v", token, got)
		}
		got, ok := jwtExpiry(fakeJWT(fmt.Sprintf(`{"exp":%d}`, exp)))
		if want := exp > 0 && exp <= maxJWTExp; ok != want || ok && got.Unix() != exp {
			t.Errorf("exp %d read as %v, %v", exp, got, ok)
		}
	})
}

// parseTokensArgsT is the sidecar's parser as a token sidecar's.
func parseTokensArgsT(args []string, stderr io.Writer) (TokensConfig, bool, error) {
	cfg, check, err := parseSidecarArgs(args, stderr)
	return cfg.Tokens, check, err
}
