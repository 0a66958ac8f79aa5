package agent

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/secctx/secctx/internal/oidctest"
	"github.com/secctx/secctx/pkg/securityctx"
)

// provider starts a real OpenID Provider (zitadel/oidc's pkg/op) on a
// loopback port, with client my-app / s3cret-value.
func provider(t *testing.T, lifetime time.Duration) (*oidctest.Provider, string) {
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
	srv := &http.Server{Handler: p}
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
func sidecar(t *testing.T, tok securityctx.AgentToken, secret string, tune func(*TokensConfig)) (dir string, logs *syncBuffer) {
	t.Helper()
	dir = t.TempDir()
	secretFile := filepath.Join(t.TempDir(), "client-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok.ClientSecretFile = secretFile
	cfg := DefaultTokensConfig()
	cfg.Dir, cfg.Tokens = dir, []securityctx.AgentToken{tok}
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 400*time.Millisecond
	if tok.TokenEndpoint != "" {
		cfg.HTTPHosts = []string{strings.Split(strings.TrimPrefix(tok.TokenEndpoint, "http://"), "/")[0]}
	} else {
		cfg.HTTPHosts = []string{strings.Split(strings.TrimPrefix(tok.DiscoveryEndpoint, "http://"), "/")[0]}
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
	dir, logs := sidecar(t, securityctx.AgentToken{Name: "api", ClientID: "my-app",
		DiscoveryEndpoint: issuer + "/.well-known/openid-configuration"}, "s3cret-value", nil)

	waitFor(t, "the first token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	if msg, ok := Check(dir); !ok {
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
	dir, logs := sidecar(t, securityctx.AgentToken{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "s3cret-value", nil)
	waitFor(t, "the first token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
	first := readToken(dir, "api")
	p.SetDown(true)
	waitFor(t, "a failed renewal", 5*time.Second, func() bool { return strings.Contains(logs.String(), "token not renewed") })
	if got := readToken(dir, "api"); got != first {
		t.Fatalf("the token changed or went while the provider was down and it had not expired")
	}
	if msg, ok := Check(dir); !ok || !strings.Contains(msg, "the current token is kept") {
		t.Errorf("Check = %q, %v; want ready, saying the token is kept", msg, ok)
	}
	waitFor(t, "the expired token to be removed", 3*time.Second, func() bool { return readToken(dir, "api") == "" })
	if msg, _ := Check(dir); !strings.Contains(msg, "expired and not renewed") || !strings.Contains(msg, "HTTP 503") {
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
	dir, logs := sidecar(t, securityctx.AgentToken{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "wrong-secret", nil)
	waitFor(t, "a failure in the status", 5*time.Second, func() bool {
		msg, ok := Check(dir)
		return !ok && strings.Contains(msg, "invalid_client")
	})
	msg, _ := Check(dir)
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
	dir, _ := sidecar(t, securityctx.AgentToken{Name: "api", ClientID: "my-app", TokenEndpoint: issuer + oidctest.TokenPath}, "s3cret-value",
		func(c *TokensConfig) { c.RequestTimeout = 300 * time.Millisecond })
	waitFor(t, "a timeout in the status", 5*time.Second, func() bool {
		msg, _ := Check(dir)
		return strings.Contains(msg, "no answer in time")
	})
	p.SetHang(false)
	waitFor(t, "the token", 5*time.Second, func() bool { return readToken(dir, "api") != "" })
}

func TestCheckBeforeStart(t *testing.T) {
	if msg, ok := Check(t.TempDir()); ok || !strings.Contains(msg, "starting") {
		t.Errorf("Check on an empty directory = %q, %v", msg, ok)
	}
}
