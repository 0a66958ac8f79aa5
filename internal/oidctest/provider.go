// Package oidctest runs a real OpenID Provider for tests and the demo:
// zitadel/oidc's pkg/op, with a small in-memory storage that knows a few
// confidential clients and issues JWT access tokens of a chosen lifetime
// through the client-credentials grant. The protocol (discovery, client
// authentication, the grant, signing, JWKS) is the library's; only what a
// provider stores is here. A resource server (Verify, ResourceServer)
// checks tokens against the provider's published keys, over HTTP.
//
// Faults can be switched on for tests: the token endpoint can be down (503)
// or hang until the client gives up.
package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/client/rp"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Options configure a Provider.
type Options struct {
	// Issuer is the provider's URL as clients reach it, e.g.
	// http://127.0.0.1:PORT; it is what discovery and tokens say.
	Issuer string
	// Clients are the confidential clients: id to secret.
	Clients map[string]string
	// TokenLifetime is how long an access token lasts.
	TokenLifetime time.Duration
}

// Provider is a running OpenID Provider's handler and its switches.
type Provider struct {
	http.Handler
	issuer   string
	down     atomic.Bool
	hang     atomic.Bool
	issued   atomic.Int64
	verifier *op.AccessTokenVerifier
}

// TokenPath is where the token endpoint is, below the issuer.
const TokenPath = "/oauth/token"

// New returns a provider for o. It signs with a fresh RSA key.
func New(o Options) (*Provider, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	st := &storage{clients: o.Clients, lifetime: o.TokenLifetime, key: key, keyID: "k1"}
	cfg := &op.Config{
		CryptoKey:                [32]byte{1},
		DefaultLogoutRedirectURI: "/",
		CodeMethodS256:           true,
		GrantTypeRefreshToken:    false,
	}
	var opts []op.Option
	if strings.HasPrefix(o.Issuer, "http://") {
		opts = append(opts, op.WithAllowInsecure())
	}
	prov, err := op.NewOpenIDProvider(o.Issuer, cfg, st, opts...)
	if err != nil {
		return nil, fmt.Errorf("openid provider: %w", err)
	}
	p := &Provider{issuer: strings.TrimSuffix(o.Issuer, "/")}
	st.issued = &p.issued
	p.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == TokenPath {
			if p.hang.Load() {
				<-r.Context().Done()
				return
			}
			if p.down.Load() {
				http.Error(w, "down for a test", http.StatusServiceUnavailable)
				return
			}
		}
		prov.ServeHTTP(w, r)
	})
	p.verifier = op.NewAccessTokenVerifier(o.Issuer, rp.NewRemoteKeySet(http.DefaultClient, p.issuer+"/keys"))
	return p, nil
}

// SetDown makes the token endpoint answer 503 (true) or work (false).
func (p *Provider) SetDown(down bool) { p.down.Store(down) }

// SetHang makes the token endpoint never answer (true) or work (false).
func (p *Provider) SetHang(hang bool) { p.hang.Store(hang) }

// Issued is how many access tokens the provider has issued.
func (p *Provider) Issued() int { return int(p.issued.Load()) }

// Verify checks an access token as a resource server does: its signature
// against the provider's published keys (fetched over HTTP from the
// issuer), its issuer and its expiry. It returns the token's claims.
func (p *Provider) Verify(ctx context.Context, token string) (*oidc.AccessTokenClaims, error) {
	return op.VerifyAccessToken[*oidc.AccessTokenClaims](ctx, token, p.verifier)
}

// ResourceServer is a small API that answers a request with a valid bearer
// token with "ok, client <id>, token expires in <d>", and any other with 401.
func (p *Provider) ResourceServer() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "no bearer token", http.StatusUnauthorized)
			return
		}
		claims, err := p.Verify(r.Context(), tok)
		if err != nil {
			http.Error(w, "token refused: "+err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "ok, client %s, token expires in %s\n", claims.ClientID, time.Until(claims.Expiration.AsTime()).Round(time.Second))
	})
}

// storage is op.Storage for confidential clients and the client-credentials
// grant. The interactive flows (authorization code, refresh, device) are
// not offered: their methods answer "not supported".
type storage struct {
	clients  map[string]string
	lifetime time.Duration
	key      *rsa.PrivateKey
	keyID    string
	issued   *atomic.Int64
	mu       sync.Mutex
	n        int
}

var errUnsupported = errors.New("not supported by this test provider")

func (s *storage) ClientCredentials(_ context.Context, clientID, clientSecret string) (op.Client, error) {
	want, ok := s.clients[clientID]
	if !ok || want != clientSecret {
		return nil, errors.New("wrong client id or secret")
	}
	return client{id: clientID}, nil
}

func (s *storage) ClientCredentialsTokenRequest(_ context.Context, clientID string, scopes []string) (op.TokenRequest, error) {
	return tokenRequest{subject: clientID, scopes: scopes}, nil
}

func (s *storage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	s.mu.Lock()
	s.n++
	id := fmt.Sprintf("t%d", s.n)
	s.mu.Unlock()
	s.issued.Add(1)
	return id, time.Now().Add(s.lifetime), nil
}

func (s *storage) GetClientByClientID(_ context.Context, clientID string) (op.Client, error) {
	if _, ok := s.clients[clientID]; !ok {
		return nil, errors.New("no such client")
	}
	return client{id: clientID}, nil
}

func (s *storage) AuthorizeClientIDSecret(ctx context.Context, clientID, clientSecret string) error {
	_, err := s.ClientCredentials(ctx, clientID, clientSecret)
	return err
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{id: s.keyID, key: s.key}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{id: s.keyID, key: &s.key.PublicKey}}, nil
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errUnsupported
}
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return errUnsupported
}
func (s *storage) SetUserinfoFromToken(context.Context, *oidc.UserInfo, string, string, string) error {
	return errUnsupported
}
func (s *storage) GetKeyByIDAndClientID(context.Context, string, string) (*jose.JSONWebKey, error) {
	return nil, errUnsupported
}
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errUnsupported
}
func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errUnsupported
}
func (s *storage) SaveAuthCode(context.Context, string, string) error { return errUnsupported }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return errUnsupported }
func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errUnsupported
}
func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errUnsupported
}
func (s *storage) TerminateSession(context.Context, string, string) error { return errUnsupported }
func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrUnsupportedGrantType()
}
func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", errUnsupported
}
func (s *storage) Health(context.Context) error { return nil }

type tokenRequest struct {
	subject string
	scopes  []string
}

func (t tokenRequest) GetSubject() string    { return t.subject }
func (t tokenRequest) GetAudience() []string { return []string{t.subject} }
func (t tokenRequest) GetScopes() []string   { return t.scopes }

// client is a confidential client allowed the client-credentials grant,
// whose access tokens are JWTs.
type client struct{ id string }

func (c client) GetID() string                       { return c.id }
func (c client) RedirectURIs() []string              { return nil }
func (c client) PostLogoutRedirectURIs() []string    { return nil }
func (c client) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c client) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodBasic }
func (c client) ResponseTypes() []oidc.ResponseType  { return nil }
func (c client) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeClientCredentials}
}
func (c client) LoginURL(string) string               { return "" }
func (c client) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (c client) IDTokenLifetime() time.Duration       { return time.Minute }
func (c client) DevMode() bool                        { return false }
func (c client) IsScopeAllowed(string) bool           { return true }
func (c client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c client) ClockSkew() time.Duration             { return 0 }
func (c client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	id  string
	key *rsa.PublicKey
}

func (k publicKey) ID() string                         { return k.id }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return k.key }
