// Package azure is a protocol test server for secctx's end-to-end tests: it
// speaks the wire protocols of Microsoft Entra ID's token endpoint (client
// credentials with a federated client assertion, and the discovery
// documents MSAL reads) and of Azure Key Vault's secrets REST API, so that
// azidentity and azsecrets reach it over the network exactly as they reach
// Microsoft. It is NOT Azure: it keeps a few secrets in memory and serves
// one test run.
//
// No emulator of Key Vault is published as a Go module, hence this
// package. It fakes no trust: a client assertion is the pod's projected
// service-account token, checked with the cluster's API server (a
// trust.Reviewer) and matched against the federated credentials
// registered for the app; Key Vault answers only a token this server
// minted, for an app granted on the secret.
package azure

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/secctx/secctx/test/cloud/trust"
)

const (
	// AssertionAudience is the audience of the pod's projected token that
	// Entra ID takes as a client assertion.
	AssertionAudience = "api://AzureADTokenExchange"
	// VaultResource is Key Vault's resource, the scope's resource and
	// minted tokens' audience.
	VaultResource = "https://vault.azure.net"
	// VaultDomain ends every vault's host name: vault kv1 is
	// kv1.vault.azure.net.
	VaultDomain = ".vault.azure.net"
	// LoginHost is Entra ID's public host; the vault listener serves Entra
	// for it too, so that a pod mapping it to the test server's IP needs
	// no custom authority.
	LoginHost = "login.microsoftonline.com"
	// AnyPort asks for a free port for Key Vault (unit tests).
	AnyPort = -1
	// DefaultTenant is the tenant of the vaults unless Options say.
	DefaultTenant = "8f3a1c2e-5d4b-4e6f-9a7b-0c1d2e3f4a5b"
)

// Options configures a Server.
type Options struct {
	// IP is the address both listeners bind: 127.0.0.1 in unit tests,
	// cluster.NodeIP for pods. Default 127.0.0.1.
	IP string
	// VaultPort is Key Vault's port: default 443, since a real vault URL
	// has no port and pods reach https://<vault>.vault.azure.net through
	// hostAliases; AnyPort picks a free one.
	VaultPort int
	// TenantID is the tenant every vault belongs to (its challenge names
	// it, and only its tokens are taken). Default DefaultTenant.
	TenantID string
	// Reviewer checks client assertions. Required for tokens.
	Reviewer trust.Reviewer
	// TokenLifetime is that of every access token minted. Default 1h.
	TokenLifetime time.Duration
	// Logf logs each decision. Optional.
	Logf func(format string, args ...any)
}

// Server is the running test server.
type Server struct {
	opts      Options
	ca        *trust.CA
	journal   *trust.Journal
	entra     *http.Server
	vault     *http.Server
	entraAddr string
	vaultAddr string

	mu        sync.Mutex
	federated map[[3]string]bool // tenant, client ID, subject
	apps      map[[2]string]bool // tenant, client ID
	secrets   map[[2]string][]*secretVersion
	grants    map[[3]string]bool // client ID, vault, secret or *
	tokens    map[string]minted
}

type secretVersion struct {
	id      string
	value   string
	enabled bool
	created time.Time
}

type minted struct {
	tenant, clientID, resource string
	expiry                     time.Time
}

// Start starts Entra ID on a free port of opts.IP and Key Vault on
// opts.VaultPort, both over TLS with certificates of a CA made now (SANs:
// the IP, *.vault.azure.net and login.microsoftonline.com).
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.IP == "" {
		opts.IP = "127.0.0.1"
	}
	switch opts.VaultPort {
	case 0:
		opts.VaultPort = 443
	case AnyPort:
		opts.VaultPort = 0
	}
	if opts.TenantID == "" {
		opts.TenantID = DefaultTenant
	}
	if opts.TokenLifetime == 0 {
		opts.TokenLifetime = time.Hour
	}
	s := &Server{
		opts:      opts,
		journal:   &trust.Journal{Logf: opts.Logf},
		federated: map[[3]string]bool{},
		apps:      map[[2]string]bool{},
		secrets:   map[[2]string][]*secretVersion{},
		grants:    map[[3]string]bool{},
		tokens:    map[string]minted{},
	}
	var err error
	if s.ca, err = trust.NewCA("secctx azure test CA"); err != nil {
		return nil, err
	}
	tlsConf, err := s.ca.ServerTLS(opts.IP, "*"+VaultDomain, LoginHost, "localhost")
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	entraLn, err := lc.Listen(ctx, "tcp", net.JoinHostPort(opts.IP, "0"))
	if err != nil {
		return nil, fmt.Errorf("listen for entra id: %w", err)
	}
	vaultLn, err := lc.Listen(ctx, "tcp", net.JoinHostPort(opts.IP, strconv.Itoa(opts.VaultPort)))
	if err != nil {
		entraLn.Close()
		return nil, fmt.Errorf("listen for key vault: %w", err)
	}
	s.entraAddr, s.vaultAddr = entraLn.Addr().String(), vaultLn.Addr().String()
	entra := s.entraHandler()
	s.entra = &http.Server{Handler: entra, ReadHeaderTimeout: 10 * time.Second}
	s.vault = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := hostOnly(r.Host)
		switch {
		case strings.HasSuffix(host, VaultDomain):
			s.serveVault(w, r, strings.TrimSuffix(host, VaultDomain))
		case host == LoginHost:
			entra.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})}
	go s.entra.Serve(tls.NewListener(entraLn, tlsConf))
	go s.vault.Serve(tls.NewListener(vaultLn, tlsConf))
	return s, nil
}

// Close stops both listeners.
func (s *Server) Close() {
	s.entra.Close()
	s.vault.Close()
}

// CAPEM is the PEM of the CA that signed both certificates.
func (s *Server) CAPEM() string { return s.ca.PEM() }

// AuthorityHost is Entra ID's URL, https://<ip>:<port>/, for
// AZURE_AUTHORITY_HOST or cloud.Configuration.ActiveDirectoryAuthorityHost.
func (s *Server) AuthorityHost() string { return "https://" + s.entraAddr + "/" }

// VaultAddr is host:port of Key Vault, where a pod's hostAliases send
// <vault>.vault.azure.net (and login.microsoftonline.com).
func (s *Server) VaultAddr() string { return s.vaultAddr }

// VaultURL is a vault's URL, as clients name it.
func VaultURL(vault string) string { return "https://" + vault + VaultDomain }

// TenantID is the vaults' tenant.
func (s *Server) TenantID() string { return s.opts.TenantID }

// Refusals lists every request refused so far.
func (s *Server) Refusals() []trust.Refusal { return s.journal.Refusals() }

// AddFederatedCredential registers a federated identity credential on the
// app clientID of tenant: tokens whose subject is subject
// (system:serviceaccount:<ns>:<sa>) and audience AssertionAudience may act
// as the app.
func (s *Server) AddFederatedCredential(tenant, clientID, subject string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.federated[[3]string{tenant, clientID, subject}] = true
	s.apps[[2]string{tenant, clientID}] = true
}

// SetSecret adds a new version of a vault's secret, the secret's latest,
// and returns the version's ID (32 hex digits, as Key Vault's).
func (s *Server) SetSecret(vault, name, value string) string {
	id := trust.NewToken("")[:32]
	s.mu.Lock()
	defer s.mu.Unlock()
	k := [2]string{vault, name}
	s.secrets[k] = append(s.secrets[k], &secretVersion{id: id, value: value, enabled: true, created: time.Now().Truncate(time.Second)})
	return id
}

// SetEnabled enables or disables a version of a secret ("" = latest).
func (s *Server) SetEnabled(vault, name, version string, enabled bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.find(vault, name, version)
	if v == nil {
		return fmt.Errorf("set enabled: no version %q of secret %s in vault %s", version, name, vault)
	}
	v.enabled = enabled
	return nil
}

// Grant lets the app clientID get secret of vault ("*": every secret),
// as an access policy with secret get, or the Key Vault Secrets User role.
func (s *Server) Grant(clientID, vault, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[[3]string{clientID, vault, secret}] = true
}

func (s *Server) granted(clientID, vault, secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[[3]string{clientID, vault, secret}] || s.grants[[3]string{clientID, vault, "*"}]
}

// find is a version, or the latest when version is ""; the caller holds mu.
func (s *Server) find(vault, name, version string) *secretVersion {
	vs := s.secrets[[2]string{vault, name}]
	if version == "" && len(vs) > 0 {
		return vs[len(vs)-1]
	}
	for _, v := range vs {
		if v.id == version {
			return v
		}
	}
	return nil
}

func (s *Server) mint(tenant, clientID, resource string) (string, time.Time) {
	tok := trust.NewToken("secctx-test-entra.")
	exp := time.Now().Add(s.opts.TokenLifetime)
	s.mu.Lock()
	s.tokens[tok] = minted{tenant: tenant, clientID: clientID, resource: resource, expiry: exp}
	s.mu.Unlock()
	return tok, exp
}

var errNoToken = errors.New("no bearer token")

// tokenOf is the record of the bearer token this server minted.
func (s *Server) tokenOf(authorization string) (minted, error) {
	tok, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok || tok == "" {
		return minted{}, errNoToken
	}
	s.mu.Lock()
	m, ok := s.tokens[tok]
	s.mu.Unlock()
	switch {
	case !ok:
		return minted{}, errors.New("the bearer token was not minted here")
	case time.Now().After(m.expiry):
		return minted{}, fmt.Errorf("the bearer token of %s expired", m.clientID)
	}
	return m, nil
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return strings.ToLower(h)
	}
	return strings.ToLower(hostport)
}
