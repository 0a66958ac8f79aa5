package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/secctx/secctx/pkg/agentapi"
)

// TokensConfig is the token sidecar's configuration.
type TokensConfig struct {
	// Dir is where each token is written, as a file named after it.
	Dir string
	// Tokens are the tokens to obtain.
	Tokens []agentapi.Token
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
	// MinRefresh is the least wait between two successful renewals of a
	// token (10 s; --min-refresh): a provider that hands out tokens of a
	// second is then asked every MinRefresh, not several times a second by
	// every pod. A token that lives less is served past its expiry until
	// then, and the sidecar logs that once.
	MinRefresh time.Duration
}

// DefaultTokensConfig returns the sidecar's defaults.
func DefaultTokensConfig() TokensConfig {
	return TokensConfig{
		RefreshAt: 0.8, Jitter: 0.05,
		MinBackoff: time.Second, MaxBackoff: time.Minute,
		RequestTimeout:  30 * time.Second,
		NoExpiryRefresh: 15 * time.Minute,
		MinRefresh:      10 * time.Second,
	}
}

// validate refuses a configuration the sidecar cannot keep to, at start
// rather than at the first request.
func (c TokensConfig) validate() error {
	if c.MinRefresh <= 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("min refresh %s, backoff %s to %s: must be positive and in order", c.MinRefresh, c.MinBackoff, c.MaxBackoff)
	}
	seen := map[string]bool{}
	for i, t := range c.Tokens {
		// The name is a file in Dir: it must stay there and be neither the
		// status file nor a temporary file.
		if t.Name == "" || strings.ContainsAny(t.Name, "/\x00") || t.Name[0] == '.' {
			return fmt.Errorf("tokens[%d]: name %q: must be a file name not starting with a dot", i, t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("tokens[%d]: name %q: given twice", i, t.Name)
		}
		seen[t.Name] = true
		if t.TokenEndpoint == "" && t.DiscoveryEndpoint == "" {
			return fmt.Errorf("token %s: neither tokenEndpoint nor idpDiscoveryEndpoint", t.Name)
		}
		for _, e := range [][2]string{{"tokenEndpoint", t.TokenEndpoint}, {"idpDiscoveryEndpoint", t.DiscoveryEndpoint}} {
			if u, err := url.Parse(e[1]); e[1] != "" && (err != nil || !allowedURL(u, c.HTTPHosts)) {
				return fmt.Errorf("token %s: %s %.200q: must be an https URL (or http to an --http-host host)", t.Name, e[0], e[1])
			}
		}
		switch t.AuthStyle {
		case "", agentapi.AuthStyleHeader, agentapi.AuthStyleBody:
		default:
			return fmt.Errorf("token %s: authStyle %q: must be %s or %s", t.Name, t.AuthStyle, agentapi.AuthStyleHeader, agentapi.AuthStyleBody)
		}
	}
	return nil
}

// RunTokens obtains every token, writes each to its file and renews it
// until ctx ends. A token is renewed at about RefreshAt of its lifetime;
// while the provider fails, the attempts back off exponentially and the old
// token stays until it expires, when its file is removed (a task then sees
// no token rather than a dead one). It returns nil when ctx ends.
func RunTokens(ctx context.Context, cfg TokensConfig, log logr.Logger) error {
	return RunSidecar(ctx, SidecarConfig{Tokens: cfg, Status: filepath.Join(cfg.Dir, StatusFile)}, log)
}

// newRunner records each token in book, not obtained yet.
func newRunner(cfg TokensConfig, tokenClient, discoveryClient *http.Client, book *statusBook, log logr.Logger) *runner {
	for _, t := range cfg.Tokens {
		book.add(tokenStatus(t.Name), "not obtained yet", false)
	}
	return &runner{cfg: cfg, tokenClient: tokenClient, discoveryClient: discoveryClient, log: log, status: book}
}

// run keeps every token until ctx ends.
func (r *runner) run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, t := range r.cfg.Tokens {
		wg.Go(func() { r.keep(ctx, t) })
	}
	r.log.Info("token sidecar started", "tokens", len(r.cfg.Tokens), "dir", r.cfg.Dir)
	wg.Wait()
}

// tokenStatus names a token in the status.
func tokenStatus(name string) string { return "token " + name }

type runner struct {
	cfg TokensConfig
	// tokenClient never follows a redirect; discoveryClient follows them
	// on the discovery endpoint's own host.
	tokenClient, discoveryClient *http.Client
	log                          logr.Logger
	status                       *statusBook
}

// keep obtains and renews one token until ctx ends.
func (r *runner) keep(ctx context.Context, t agentapi.Token) {
	log := r.log.WithValues("token", t.Name)
	file := filepath.Join(r.cfg.Dir, t.Name)
	var expiry time.Time // of the token in the file; zero: none
	backoff := r.cfg.MinBackoff
	tokenURL := t.TokenEndpoint
	shortLived := false // logged that the token lives less than MinRefresh
	for {
		var wait time.Duration
		tok, exp, err := r.fetch(ctx, t, &tokenURL)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			if err = writeAtomic(file, []byte(tok), tokenFileMode); err != nil {
				err = fmt.Errorf("write token file: %w", err)
				break
			}
			expiry = exp
			backoff = r.cfg.MinBackoff
			wait = r.refreshIn(expiry)
			r.setProblem(t.Name, "", true)
			if life := time.Until(expiry); !expiry.IsZero() && life < r.cfg.MinRefresh && !shortLived {
				shortLived = true
				log.Info("token lives less than the renewal floor: it is renewed at the floor, after it expires",
					"lifetime", life.Round(time.Millisecond), "minRefresh", r.cfg.MinRefresh)
			}
			log.Info("token renewed", "expiresAt", expiry, "nextRenewal", time.Now().Add(wait).Round(time.Millisecond))
		}
		if err != nil {
			if t.TokenEndpoint == "" {
				tokenURL = "" // discover again: the provider may have moved
			}
			wait = jitter(backoff)
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

// refreshIn is when to renew a token that expires at expiry: RefreshAt of
// its lifetime, give or take the jitter, and never before MinRefresh.
func (r *runner) refreshIn(expiry time.Time) time.Duration {
	wait := r.cfg.NoExpiryRefresh
	if !expiry.IsZero() {
		f := r.cfg.RefreshAt + r.cfg.Jitter*(2*rand.Float64()-1)
		wait = time.Duration(float64(time.Until(expiry)) * f)
	}
	return max(wait, r.cfg.MinRefresh)
}

// jitter is a wait uniform in [d/2, d], so that the pods of a map task that
// failed together do not retry together.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d-d/2+1)
}

// fetch runs the client-credentials grant once and returns the access
// token and its expiry (zero: unknown). tokenURL is the endpoint found by
// discovery, kept between calls; empty, it is discovered first.
func (r *runner) fetch(ctx context.Context, t agentapi.Token, tokenURL *string) (string, time.Time, error) {
	secret, err := os.ReadFile(t.ClientSecretFile) // read each time: the Secret may be rotated
	if err != nil {
		return "", time.Time{}, fmt.Errorf("read client secret: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	if *tokenURL == "" {
		u, err := r.discover(ctx, t.DiscoveryEndpoint)
		if err != nil {
			return "", time.Time{}, err
		}
		*tokenURL = u
	}
	cc := clientcredentials.Config{
		ClientID:     t.ClientID,
		ClientSecret: strings.TrimRight(string(secret), "\r\n"),
		TokenURL:     *tokenURL,
		// Never AuthStyleAutoDetect: after a failure it sends the secret
		// again in the form, to whatever answered.
		AuthStyle: oauth2.AuthStyleInHeader,
	}
	if t.AuthStyle == agentapi.AuthStyleBody {
		cc.AuthStyle = oauth2.AuthStyleInParams
	}
	// x/oauth2 reads at most 1 MiB of the answer.
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, r.tokenClient))
	if err != nil {
		return "", time.Time{}, describe(err, *tokenURL)
	}
	if tok.AccessToken == "" {
		return "", time.Time{}, fmt.Errorf("token endpoint %s: answered without an access token", *tokenURL)
	}
	if n := len(tok.AccessToken); n > agentapi.MaxTokenBytes {
		return "", time.Time{}, fmt.Errorf("token endpoint %s: an access token of %d bytes, more than the %d a token may have", *tokenURL, n, agentapi.MaxTokenBytes)
	}
	expiry, err := tokenExpiry(tok, time.Now())
	if err != nil {
		return "", time.Time{}, fmt.Errorf("token endpoint %s: %w", *tokenURL, err)
	}
	return tok.AccessToken, expiry, nil
}

// tokenExpiry is when tok expires: from expires_in when the answer has it,
// else from the exp claim of a JWT access token, else zero (unknown). A
// lifetime that is over already is an error: such a token would be served
// dead and asked for again at once.
func tokenExpiry(tok *oauth2.Token, now time.Time) (time.Time, error) {
	var secs int64
	switch v := tok.Extra("expires_in").(type) {
	case nil:
		return jwtExpiryAfter(tok.AccessToken, now)
	case float64: // JSON; x/oauth2 has refused one that is not an integer
		secs = int64(v)
	case int64: // a form-encoded answer
		secs = v
	case string:
		if strings.TrimSpace(v) == "" { // a form-encoded answer without it
			return jwtExpiryAfter(tok.AccessToken, now)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("expires_in %.40q: not a number of seconds", v)
		}
		secs = n
	default:
		return time.Time{}, fmt.Errorf("expires_in of JSON type %T: not a number of seconds", v)
	}
	if secs <= 0 {
		return time.Time{}, fmt.Errorf("expires_in %d: the token is dead on arrival", secs)
	}
	if !tok.Expiry.IsZero() {
		return tok.Expiry, nil // x/oauth2's reading, bounded to 68 years
	}
	return now.Add(time.Duration(min(secs, math.MaxInt32)) * time.Second), nil
}

// jwtExpiryAfter is the exp of a JWT access token, which must be after
// now; zero for a token that is not a JWT or has no exp.
func jwtExpiryAfter(token string, now time.Time) (time.Time, error) {
	exp, ok := jwtExpiry(token)
	switch {
	case !ok:
		return time.Time{}, nil
	case !exp.After(now):
		return time.Time{}, fmt.Errorf("no expires_in, and the access token's exp %s is past: the token is dead on arrival", exp.UTC().Format(time.RFC3339))
	}
	return exp, nil
}

// maxJWTExp is 9999-12-31T23:59:59Z: a later exp is not a time.
const maxJWTExp = 253402300799

// jwtExpiry reads the exp claim (RFC 7519 section 4.1.4) of a JWS compact
// serialization: three base64url parts, the second a JSON object with a
// numeric exp. It verifies nothing: the sidecar needs only to know when to
// stop serving the token, and its resource server checks the signature.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.SplitN(token, ".", 4)
	if len(parts) != 3 || parts[0] == "" {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp any `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return time.Time{}, false
	}
	exp, ok := claims.Exp.(float64) // a string or anything else is not a NumericDate
	if !ok || !(exp > 0 && exp <= maxJWTExp) {
		return time.Time{}, false
	}
	sec, frac := math.Modf(exp)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// describe words an error of the grant without the response body, which
// the library includes and which a provider may fill with anything.
func describe(err error, tokenURL string) error {
	var re *oauth2.RetrieveError
	var rd *redirectError
	if errors.As(err, &rd) {
		// Not err: its text carries the whole Location.
		return fmt.Errorf("token endpoint %s: %w", tokenURL, rd)
	}
	if errors.As(err, &re) {
		msg := fmt.Sprintf("token endpoint %s: HTTP %d", tokenURL, re.Response.StatusCode)
		if re.ErrorCode != "" {
			msg += ": " + re.ErrorCode
		}
		if re.ErrorDescription != "" {
			msg += ": " + fmt.Sprintf("%.200q", re.ErrorDescription)
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
	resp, err := r.discoveryClient.Do(req)
	if err != nil {
		var rd *redirectError
		if errors.As(err, &rd) {
			return "", fmt.Errorf("discovery %s: %w", endpoint, rd) // not err, which carries the whole Location
		}
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
	if err != nil || !allowedURL(u, r.cfg.HTTPHosts) {
		return "", fmt.Errorf("discovery %s: token_endpoint %s: must be an https URL", endpoint, fmt.Sprintf("%.200q", meta.TokenEndpoint))
	}
	return meta.TokenEndpoint, nil
}

func (r *runner) has(name string) bool { return r.status.isReady(tokenStatus(name)) }

// setProblem records a token's state and rewrites the status file.
func (r *runner) setProblem(name, problem string, written bool) {
	r.status.set(tokenStatus(name), problem, written)
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

// httpClients are the sidecar's clients, both trusting the system's CAs
// and CABundle. The token client never follows a redirect: the client
// secret goes to the token endpoint and nowhere else, and a 307 or 308
// would send the request, secret and all, again. The discovery client
// follows a redirect on the discovery endpoint's own host (and port) only,
// and to https or an http host of HTTPHosts.
func httpClients(cfg TokensConfig) (token, discovery *http.Client, err error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CABundle != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM([]byte(cfg.CABundle)) {
			return nil, nil, errors.New("SECCTX_CA_BUNDLE: no PEM certificate in it")
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	token = &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		return refuseRedirect(req, "a token request is never redirected")
	}}
	discovery = &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		switch {
		case !allowedURL(req.URL, cfg.HTTPHosts):
			return refuseRedirect(req, "not https")
		case hostPort(req.URL) != hostPort(via[0].URL):
			return refuseRedirect(req, "another host than the discovery endpoint's")
		case len(via) >= 5:
			return refuseRedirect(req, "more than 5 redirects")
		}
		return nil
	}}
	return token, discovery, nil
}

// allowedURL says whether the sidecar may send a request to u: https, or
// plain http to a host of httpHosts.
func allowedURL(u *url.URL, httpHosts []string) bool {
	return u.Host != "" && (u.Scheme == "https" || u.Scheme == "http" && slices.Contains(httpHosts, u.Host))
}

// hostPort is u's host, lower-cased, and port, the scheme's default when
// u has none.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return strings.ToLower(u.Hostname()) + ":" + port
}

// redirectError is a redirect the sidecar refused.
type redirectError struct {
	status       int
	scheme, host string
	reason       string
}

// refuseRedirect describes the redirect to req by its scheme and host
// alone: the Location may carry user info or a query with anything in it.
func refuseRedirect(req *http.Request, reason string) error {
	e := &redirectError{scheme: req.URL.Scheme, host: req.URL.Host, reason: reason}
	if req.Response != nil {
		e.status = req.Response.StatusCode
	}
	return e
}

func (e *redirectError) Error() string {
	return fmt.Sprintf("redirected (HTTP %d) to %s://%s: refused: %s", e.status, e.scheme, e.host, e.reason)
}
