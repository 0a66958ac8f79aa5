package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/secctx/secctx/pkg/securityctx"
)

// StatusFile is the sidecar's record of where each token stands, in the
// token directory: what the startup probe (tokens --check) reports. It holds
// no token and no secret.
const StatusFile = ".status"

// TokensConfig is the token sidecar's configuration.
type TokensConfig struct {
	// Dir is where each token is written, as a file named after it.
	Dir string
	// Tokens are the tokens to obtain.
	Tokens []securityctx.AgentToken
	// HTTPHosts may be reached over plain http (test providers).
	HTTPHosts []string
	// CABundle is PEM certificates to trust besides the system's.
	CABundle string
	// RefreshAt is the part of a token's lifetime after which it is
	// renewed (0.8); Jitter spreads that by up to this part of the
	// lifetime either way (0.05), so that many pods do not ask at once.
	RefreshAt, Jitter float64
	// MinBackoff and MaxBackoff bound the wait between failed attempts,
	// which doubles from one to the other.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds one request to the provider, so that a
	// provider that hangs is retried rather than waited on for ever.
	RequestTimeout time.Duration
	// NoExpiryRefresh is how often a token that says nothing of its
	// lifetime is renewed.
	NoExpiryRefresh time.Duration
}

// DefaultTokensConfig returns the sidecar's defaults.
func DefaultTokensConfig() TokensConfig {
	return TokensConfig{
		RefreshAt: 0.8, Jitter: 0.05,
		MinBackoff: time.Second, MaxBackoff: time.Minute,
		RequestTimeout:  30 * time.Second,
		NoExpiryRefresh: 15 * time.Minute,
	}
}

func runTokens(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := DefaultTokensConfig()
	fs := flag.NewFlagSet("tokens", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var spec string
	var check bool
	fs.StringVar(&cfg.Dir, "dir", "", "directory the tokens are written to")
	fs.StringVar(&spec, "tokens", "", "the tokens, as JSON (written by the webhook)")
	fs.BoolVar(&check, "check", false, "exit 0 when every token is written, else print why not and exit 1 (the startup probe)")
	fs.Func("http-host", "a host that may be reached over plain http (repeatable)", func(h string) error {
		cfg.HTTPHosts = append(cfg.HTTPHosts, h)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.Dir == "" {
		fmt.Fprintln(stderr, "secctx-agent tokens: --dir is required")
		return 2
	}
	if check {
		if msg, ok := Check(cfg.Dir); !ok {
			fmt.Fprintln(stdout, msg)
			return 1
		}
		return 0
	}
	if err := json.Unmarshal([]byte(spec), &cfg.Tokens); err != nil || len(cfg.Tokens) == 0 {
		fmt.Fprintf(stderr, "secctx-agent tokens: --tokens: want a JSON list of tokens (%v)\n", err)
		return 2
	}
	cfg.CABundle = os.Getenv("SECCTX_CA_BUNDLE") // set by the webhook from inject.tokens.caBundle
	log := newLogger(stderr)
	if err := RunTokens(ctx, cfg, log); err != nil {
		log.Error(err, "token sidecar stopped")
		return 1
	}
	return 0
}

// Check reads the status the sidecar keeps in dir: ok when every token is
// written; else a line that says why, for the kubelet's events. When ok,
// the line lists renewals that are failing, if any.
func Check(dir string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(dir, StatusFile))
	if err != nil {
		return "tokens not written yet: the sidecar is starting", false
	}
	var st status
	if err := json.Unmarshal(b, &st); err != nil {
		return "tokens: unreadable status: " + err.Error(), false
	}
	if st.Ready {
		return strings.Join(st.Problems, "; "), true // problems of renewal, with every token still valid
	}
	return "tokens not written yet: " + strings.Join(st.Problems, "; "), false
}

// status is the content of StatusFile.
type status struct {
	Ready    bool     `json:"ready"`
	Problems []string `json:"problems,omitempty"`
}

// RunTokens obtains every token, writes each to its file and renews it
// until ctx ends. A token is renewed at about RefreshAt of its lifetime;
// while the provider fails, the attempts back off exponentially and the old
// token stays until it expires, when its file is removed (a task then sees
// no token rather than a dead one). It returns nil when ctx ends.
func RunTokens(ctx context.Context, cfg TokensConfig, log logr.Logger) error {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("token directory: %w", err)
	}
	client, err := httpClient(cfg)
	if err != nil {
		return err
	}
	r := &runner{cfg: cfg, client: client, log: log, problems: map[string]string{}, written: map[string]bool{}}
	for _, t := range cfg.Tokens {
		r.problems[t.Name] = "not obtained yet"
	}
	r.writeStatus()
	var wg sync.WaitGroup
	for _, t := range cfg.Tokens {
		wg.Go(func() { r.keep(ctx, t) })
	}
	log.Info("token sidecar started", "tokens", len(cfg.Tokens), "dir", cfg.Dir)
	wg.Wait()
	log.Info("token sidecar stopping: the pod is ending")
	return nil
}

type runner struct {
	cfg    TokensConfig
	client *http.Client
	log    logr.Logger

	mu       sync.Mutex
	problems map[string]string // by token; empty when it is fine
	written  map[string]bool
}

// keep obtains and renews one token until ctx ends.
func (r *runner) keep(ctx context.Context, t securityctx.AgentToken) {
	log := r.log.WithValues("token", t.Name)
	file := filepath.Join(r.cfg.Dir, t.Name)
	var expiry time.Time // of the token in the file; zero: none
	backoff := r.cfg.MinBackoff
	tokenURL := t.TokenEndpoint
	for {
		var wait time.Duration
		tok, err := r.fetch(ctx, t, &tokenURL)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			if err = writeAtomic(file, []byte(tok.AccessToken), tokenFileMode); err != nil {
				err = fmt.Errorf("write token file: %w", err)
				break
			}
			expiry = tok.Expiry
			backoff = r.cfg.MinBackoff
			wait = r.refreshIn(tok)
			r.setProblem(t.Name, "", true)
			log.Info("token renewed", "expiresAt", expiry, "nextRenewal", time.Now().Add(wait).Round(time.Millisecond))
		}
		if err != nil {
			if t.TokenEndpoint == "" {
				tokenURL = "" // discover again: the provider may have moved
			}
			wait = backoff
			backoff = min(2*backoff, r.cfg.MaxBackoff)
			now := time.Now()
			switch {
			case !r.has(t.Name):
				r.setProblem(t.Name, err.Error(), false)
			case expiry.IsZero():
				// A token that said nothing of its lifetime is kept.
				r.setProblem(t.Name, "renewal failing, the current token is kept: "+err.Error(), true)
			case !now.Before(expiry):
				// Expired: a dead token is removed, not served.
				if rmErr := os.Remove(file); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
					log.Error(rmErr, "remove expired token")
				}
				r.setProblem(t.Name, "expired and not renewed: "+err.Error(), false)
				expiry = time.Time{}
			default:
				r.setProblem(t.Name, "renewal failing, the current token is kept until "+expiry.UTC().Format(time.RFC3339)+": "+err.Error(), true)
				wait = min(wait, expiry.Sub(now))
			}
			log.Error(err, "token not renewed", "retryIn", wait.Round(time.Millisecond), "kept", r.has(t.Name))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// refreshIn is when to renew tok: RefreshAt of its lifetime, give or take
// the jitter.
func (r *runner) refreshIn(tok *oauth2.Token) time.Duration {
	if tok.Expiry.IsZero() {
		return r.cfg.NoExpiryRefresh
	}
	life := time.Until(tok.Expiry)
	if life <= 0 {
		return r.cfg.MinBackoff
	}
	f := r.cfg.RefreshAt + r.cfg.Jitter*(2*rand.Float64()-1)
	return time.Duration(float64(life) * f)
}

// fetch runs the client-credentials grant once. tokenURL is the endpoint
// found by discovery, kept between calls; empty, it is discovered first.
func (r *runner) fetch(ctx context.Context, t securityctx.AgentToken, tokenURL *string) (*oauth2.Token, error) {
	secret, err := os.ReadFile(t.ClientSecretFile) // read each time: the Secret may be rotated
	if err != nil {
		return nil, fmt.Errorf("read client secret: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	if *tokenURL == "" {
		u, err := r.discover(ctx, t.DiscoveryEndpoint)
		if err != nil {
			return nil, err
		}
		*tokenURL = u
	}
	cc := clientcredentials.Config{
		ClientID:     t.ClientID,
		ClientSecret: strings.TrimRight(string(secret), "\r\n"),
		TokenURL:     *tokenURL,
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, r.client))
	if err != nil {
		return nil, describe(err, *tokenURL)
	}
	if tok.AccessToken == "" {
		return nil, fmt.Errorf("token endpoint %s: answered without an access token", *tokenURL)
	}
	return tok, nil
}

// describe words an error of the grant without the response body, which
// the library includes and which a provider may fill with anything.
func describe(err error, tokenURL string) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("token endpoint %s: HTTP %d", tokenURL, re.Response.StatusCode)
		if re.ErrorCode != "" {
			msg += ": " + re.ErrorCode
		}
		if re.ErrorDescription != "" {
			msg += ": " + securityctx.Shorten(re.ErrorDescription)
		}
		if re.ErrorCode == "invalid_client" || re.ErrorCode == "unauthorized_client" {
			msg += " (check the client id and the client secret in its Secret)"
		}
		return errors.New(msg)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("token endpoint %s: no answer in time", tokenURL)
	}
	return fmt.Errorf("token endpoint %s: %w", tokenURL, err)
}

// discover reads the token endpoint from an OpenID Provider's metadata.
func (r *runner) discover(ctx context.Context, endpoint string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return "", fmt.Errorf("discovery %s: %w", endpoint, err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return "", fmt.Errorf("discovery %s: no answer in time", endpoint)
		}
		return "", fmt.Errorf("discovery %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery %s: HTTP %d", endpoint, resp.StatusCode)
	}
	var meta struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&meta); err != nil {
		return "", fmt.Errorf("discovery %s: %w", endpoint, err)
	}
	u, err := url.Parse(meta.TokenEndpoint)
	if err != nil || u.Host == "" || !(u.Scheme == "https" || u.Scheme == "http" && slices.Contains(r.cfg.HTTPHosts, u.Host)) {
		return "", fmt.Errorf("discovery %s: token_endpoint %s: must be an https URL", endpoint, securityctx.Quote(meta.TokenEndpoint))
	}
	return meta.TokenEndpoint, nil
}

func (r *runner) has(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.written[name]
}

// setProblem records a token's state and rewrites the status file.
func (r *runner) setProblem(name, problem string, written bool) {
	r.mu.Lock()
	r.problems[name] = problem
	r.written[name] = written
	r.mu.Unlock()
	r.writeStatus()
}

func (r *runner) writeStatus() {
	r.mu.Lock()
	st := status{Ready: true}
	for _, t := range r.cfg.Tokens {
		if !r.written[t.Name] {
			st.Ready = false
		}
		if p := r.problems[t.Name]; p != "" {
			st.Problems = append(st.Problems, "token "+t.Name+": "+p)
		}
	}
	r.mu.Unlock()
	b, _ := json.Marshal(st)
	if err := writeAtomic(filepath.Join(r.cfg.Dir, StatusFile), b, tokenFileMode); err != nil {
		r.log.Error(err, "write status")
	}
}

// tokenFileMode: the token files are readable by every user of the pod, as
// the task's containers run as their own users.
const tokenFileMode = 0o644

// writeAtomic writes b to path with mode through a temporary file and a
// rename, so that a reader sees the old content or the new, never a part.
func writeAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// httpClient trusts the system's CAs and CABundle, and refuses redirects
// to plain http.
func httpClient(cfg TokensConfig) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CABundle != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(cfg.CABundle)) {
			return nil, errors.New("SECCTX_CA_BUNDLE: no PEM certificate in it")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "https" && !slices.Contains(cfg.HTTPHosts, req.URL.Host) {
				return fmt.Errorf("redirect to %s: not https", req.URL.Redacted())
			}
			return nil
		},
	}, nil
}
