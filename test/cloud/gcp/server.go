// Package gcp is a protocol test server for secctx's end-to-end tests: it
// speaks the wire protocols of Google Secret Manager (gRPC and its REST
// mapping, on one port), Google STS (RFC 8693 token exchange), the IAM
// credentials API (generateAccessToken) and the GKE metadata server, so
// that the official Google client libraries reach it over the network
// exactly as they reach Google. It is NOT Google Cloud: it keeps a few
// secrets in memory and serves one test run.
//
// No emulator of Secret Manager is published as a Go module, hence this
// package. It fakes no trust: the token exchange checks the pod's
// projected service-account token with the cluster's API server (a
// trust.Reviewer), the metadata server knows a pod by its source address
// as GKE's does, and Secret Manager answers only a token this server
// minted, for a principal granted on the secret.
package gcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/secctx/secctx/test/cloud/trust"
)

// Options configures a Server.
type Options struct {
	// IP is the address every listener binds: 127.0.0.1 in unit tests,
	// cluster.NodeIP for pods. Default 127.0.0.1.
	IP string
	// ProjectID and ProjectNumber name the one project the metadata
	// server reports; secret names may use either. Defaults secctx-test
	// and 123456789012.
	ProjectID, ProjectNumber string
	// Providers are the workload identity pool providers STS accepts.
	Providers []Provider
	// Reviewer checks the subject tokens STS is given. Required for STS.
	Reviewer trust.Reviewer
	// Pods tells the metadata server which pod calls it. Without it the
	// metadata server refuses every request.
	Pods Pods
	// ServiceAccounts gives a Kubernetes ServiceAccount's annotations;
	// default Pods, when it implements ServiceAccounts.
	ServiceAccounts ServiceAccounts
	// StartupDelay is how long after a pod's start the metadata server
	// keeps answering it 503 (GKE issue #14349); zero defers to the pod's
	// annotation test.secctx.dev/metadata-delay.
	StartupDelay func(Pod) time.Duration
	// TokenLifetime is that of every access token minted. Default 1h.
	TokenLifetime time.Duration
	// Logf logs each decision. Optional.
	Logf func(format string, args ...any)
}

// Provider is a workload identity pool provider trusting the cluster's
// service-account tokens.
type Provider struct {
	// Audience is the provider's full name as STS takes it:
	// //iam.googleapis.com/projects/<num>/locations/global/workloadIdentityPools/<pool>/providers/<prov>
	// (ProviderAudience builds it).
	Audience string
	// KubeAudience is the audience the pod's token must carry; default
	// "https:" + Audience, the provider's default allowed audience.
	KubeAudience string
}

// ProviderAudience is a provider's audience for STS.
func ProviderAudience(projectNumber, pool, provider string) string {
	return fmt.Sprintf("//iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s/providers/%s", projectNumber, pool, provider)
}

var providerRE = regexp.MustCompile(`^//iam\.googleapis\.com/projects/([0-9]+)/locations/global/workloadIdentityPools/([^/]+)/providers/([^/]+)$`)

// ServiceAccountPrincipal is the IAM principal of a Google service account.
func ServiceAccountPrincipal(email string) string { return "serviceAccount:" + email }

// Server is the running test server.
type Server struct {
	opts    Options
	ca      *trust.CA
	journal *trust.Journal

	grpc     *grpc.Server
	sm       *http.Server
	https    *http.Server
	metadata *http.Server
	smAddr   string
	apiAddr  string
	mdAddr   string

	mu        sync.Mutex
	secrets   map[string]*secret
	grants    map[[2]string]bool // principal, secret
	actAs     map[[2]string]bool // principal, service account email
	tokens    map[string]minted
	providers map[string]Provider // by audience; set at Start only
}

type secret struct {
	versions []*version     // versions 1..n
	aliases  map[string]int // alias -> version number
}

type version struct {
	data      []byte
	state     secretmanagerpb.SecretVersion_State
	created   time.Time
	destroyed time.Time
}

// minted is an access token this server issued. Scopes are not kept:
// the server checks who holds a token, not what it was asked for.
type minted struct {
	principal string
	expiry    time.Time
}

// Start starts Secret Manager (gRPC and REST over TLS), STS with the IAM
// credentials API (HTTPS) and the metadata server (plain HTTP, as GKE's),
// each on a free port of opts.IP.
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.IP == "" {
		opts.IP = "127.0.0.1"
	}
	if opts.ProjectID == "" {
		opts.ProjectID = "secctx-test"
	}
	if opts.ProjectNumber == "" {
		opts.ProjectNumber = "123456789012"
	}
	if opts.TokenLifetime == 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.ServiceAccounts == nil {
		opts.ServiceAccounts, _ = opts.Pods.(ServiceAccounts)
	}
	s := &Server{
		opts:      opts,
		journal:   &trust.Journal{Logf: opts.Logf},
		secrets:   map[string]*secret{},
		grants:    map[[2]string]bool{},
		actAs:     map[[2]string]bool{},
		tokens:    map[string]minted{},
		providers: map[string]Provider{},
	}
	for _, p := range opts.Providers {
		if !providerRE.MatchString(p.Audience) {
			return nil, fmt.Errorf("provider audience %q is not //iam.googleapis.com/projects/<num>/locations/global/workloadIdentityPools/<pool>/providers/<prov>", p.Audience)
		}
		if p.KubeAudience == "" {
			p.KubeAudience = "https:" + p.Audience
		}
		s.providers[p.Audience] = p
	}
	var err error
	if s.ca, err = trust.NewCA("secctx gcp test CA"); err != nil {
		return nil, err
	}
	tlsConf, err := s.ca.ServerTLS(opts.IP, "localhost")
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	listen := func() (net.Listener, error) { return lc.Listen(ctx, "tcp", net.JoinHostPort(opts.IP, "0")) }
	var lns []net.Listener
	fail := func(err error) (*Server, error) {
		for _, l := range lns {
			l.Close()
		}
		return nil, err
	}
	for range 3 {
		l, err := listen()
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", opts.IP, err))
		}
		lns = append(lns, l)
	}
	s.smAddr, s.apiAddr, s.mdAddr = lns[0].Addr().String(), lns[1].Addr().String(), lns[2].Addr().String()

	// gRPC and REST share Secret Manager's port, as at Google: the gRPC
	// server rides net/http's HTTP/2, so it needs no TLS of its own.
	s.grpc = grpc.NewServer()
	sm := &secretManager{s: s}
	secretmanagerpb.RegisterSecretManagerServiceServer(s.grpc, sm)
	s.sm = &http.Server{Handler: sm.handler(s.grpc), TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second}
	go s.sm.ServeTLS(lns[0], "", "")

	s.https = &http.Server{Handler: s.apiHandler(), ReadHeaderTimeout: 10 * time.Second}
	go s.https.Serve(tls.NewListener(lns[1], tlsConf))

	s.metadata = &http.Server{Handler: http.HandlerFunc(s.serveMetadata), ReadHeaderTimeout: 10 * time.Second}
	go s.metadata.Serve(lns[2])
	return s, nil
}

// Close stops every listener.
func (s *Server) Close() {
	s.sm.Close()
	s.grpc.Stop()
	s.https.Close()
	s.metadata.Close()
}

// CAPEM is the PEM of the CA that signed the TLS certificates (SANs: the
// IP and localhost).
func (s *Server) CAPEM() string { return s.ca.PEM() }

// SecretManagerAddr is host:port of Secret Manager, gRPC and REST, for
// option.WithEndpoint or a REST client's https://<addr>/v1/.
func (s *Server) SecretManagerAddr() string { return s.smAddr }

// STSURL is the token exchange endpoint, a credential config's token_url.
func (s *Server) STSURL() string { return "https://" + s.apiAddr + "/v1/token" }

// IAMEndpoint is the base URL of the IAM credentials API
// (https://iamcredentials.googleapis.com at Google).
func (s *Server) IAMEndpoint() string { return "https://" + s.apiAddr }

// ImpersonationURL is the generateAccessToken endpoint for a Google
// service account, a credential config's service_account_impersonation_url.
func (s *Server) ImpersonationURL(email string) string {
	return s.IAMEndpoint() + "/v1/projects/-/serviceAccounts/" + email + ":generateAccessToken"
}

// MetadataHost is host:port of the metadata server, for GCE_METADATA_HOST.
func (s *Server) MetadataHost() string { return s.mdAddr }

// ProjectNumber is the project's number.
func (s *Server) ProjectNumber() string { return s.opts.ProjectNumber }

// KSAPrincipal is the principal GKE's metadata server gives a Kubernetes
// ServiceAccount that names no Google service account:
// serviceAccount:<project>.svc.id.goog[<ns>/<sa>].
func (s *Server) KSAPrincipal(namespace, name string) string {
	return fmt.Sprintf("serviceAccount:%s.svc.id.goog[%s/%s]", s.opts.ProjectID, namespace, name)
}

// Refusals lists every request refused so far.
func (s *Server) Refusals() []trust.Refusal { return s.journal.Refusals() }

// ExternalAccountJSON is a credential configuration as gcloud iam
// workload-identity-pools create-cred-config writes it: the subject token
// read from tokenFile (the pod's projected token), exchanged at this STS
// for provider audience, then for a token of impersonate when not empty.
func (s *Server) ExternalAccountJSON(audience, tokenFile, impersonate string) []byte {
	imp := ""
	if impersonate != "" {
		imp = fmt.Sprintf(",\n  \"service_account_impersonation_url\": %q", s.ImpersonationURL(impersonate))
	}
	return fmt.Appendf(nil, `{
  "type": "external_account",
  "audience": %q,
  "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
  "token_url": %q,
  "credential_source": {"file": %q, "format": {"type": "text"}},
  "universe_domain": "googleapis.com"%s
}
`, audience, s.STSURL(), tokenFile, imp)
}

// AddSecretVersion adds a version holding data to secret
// (projects/<id or number>/[locations/<l>/]secrets/<name>), creating the
// secret on its first version, and returns the version's name.
func (s *Server) AddSecretVersion(secretName string, data []byte) (string, error) {
	name, err := s.secretName(secretName)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[name]
	if sec == nil {
		sec = &secret{aliases: map[string]int{}}
		s.secrets[name] = sec
	}
	sec.versions = append(sec.versions, &version{data: data, state: secretmanagerpb.SecretVersion_ENABLED, created: time.Now()})
	return fmt.Sprintf("%s/versions/%d", name, len(sec.versions)), nil
}

// SetAlias points a version alias of a secret at version n, as
// Secret.version_aliases does.
func (s *Server) SetAlias(secretName, alias string, n int) error {
	name, err := s.secretName(secretName)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[name]
	if sec == nil || n < 1 || n > len(sec.versions) {
		return fmt.Errorf("set alias %s of %s: no version %d", alias, name, n)
	}
	sec.aliases[alias] = n
	return nil
}

// SetVersionState disables, enables or destroys a version
// (projects/p/secrets/s/versions/n). A destroyed version loses its data
// and stays destroyed, as in Secret Manager.
func (s *Server) SetVersionState(name string, state secretmanagerpb.SecretVersion_State) error {
	secretName, n, err := s.versionName(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[secretName]
	i, err := strconv.Atoi(n)
	if err != nil || sec == nil || strconv.Itoa(i) != n || i < 1 || i > len(sec.versions) {
		return fmt.Errorf("set state of %s: name an existing version by number", name)
	}
	v := sec.versions[i-1]
	switch {
	case v.state == secretmanagerpb.SecretVersion_DESTROYED:
		return fmt.Errorf("set state of %s: the version is destroyed", name)
	case state == secretmanagerpb.SecretVersion_DESTROYED:
		v.data, v.destroyed = nil, time.Now()
	case state != secretmanagerpb.SecretVersion_ENABLED && state != secretmanagerpb.SecretVersion_DISABLED:
		return fmt.Errorf("set state of %s: unknown state %v", name, state)
	}
	v.state = state
	return nil
}

// Grant lets principal access the versions of secret
// (projects/p/secrets/s), as roles/secretmanager.secretAccessor does (and
// read their metadata). Principals: ServiceAccountPrincipal(email),
// KSAPrincipal(ns, sa), or principal://iam.googleapis.com/... of a
// workload identity pool subject.
func (s *Server) Grant(principal, secret string) error {
	name, err := s.secretName(secret)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grants[[2]string{principal, name}] = true
	return nil
}

// AllowImpersonation lets principal get access tokens of the Google
// service account email (roles/iam.serviceAccountTokenCreator through
// generateAccessToken, roles/iam.workloadIdentityUser through the
// metadata server).
func (s *Server) AllowImpersonation(principal, email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actAs[[2]string{principal, email}] = true
}

// mint records a new access token for principal.
func (s *Server) mint(principal string, lifetime time.Duration) (string, time.Time) {
	if lifetime <= 0 || lifetime > s.opts.TokenLifetime {
		lifetime = s.opts.TokenLifetime
	}
	tok := trust.NewToken("ya29.secctx-test.")
	exp := time.Now().Add(lifetime)
	s.mu.Lock()
	s.tokens[tok] = minted{principal: principal, expiry: exp}
	s.mu.Unlock()
	return tok, exp
}

// principalOf is the principal of a bearer token this server minted.
func (s *Server) principalOf(authorization string) (string, error) {
	tok, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok || tok == "" {
		return "", errors.New("no bearer token")
	}
	s.mu.Lock()
	m, ok := s.tokens[tok]
	s.mu.Unlock()
	switch {
	case !ok:
		return "", errors.New("the bearer token was not minted here")
	case time.Now().After(m.expiry):
		return "", fmt.Errorf("the bearer token of %s expired at %s", m.principal, m.expiry.Format(time.RFC3339))
	}
	return m.principal, nil
}

func (s *Server) granted(principal, secret string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[[2]string{principal, secret}]
}

func (s *Server) mayActAs(principal, email string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.actAs[[2]string{principal, email}]
}

var (
	secretRE  = regexp.MustCompile(`^projects/([^/]+)/((?:locations/[a-z0-9-]+/)?secrets/[A-Za-z0-9_-]{1,255})$`)
	versionRE = regexp.MustCompile(`^(projects/[^/]+/(?:locations/[^/]+/)?secrets/[^/]+)/versions/([A-Za-z0-9_-]+)$`)
)

// secretName checks a secret's name and writes its project as a number,
// as Secret Manager answers.
func (s *Server) secretName(name string) (string, error) {
	m := secretRE.FindStringSubmatch(name)
	if m == nil {
		return "", fmt.Errorf("secret name %q is not projects/<project>/[locations/<location>/]secrets/<secret>", name)
	}
	project := m[1]
	if project == s.opts.ProjectID {
		project = s.opts.ProjectNumber
	}
	return "projects/" + project + "/" + m[2], nil
}

// versionName splits projects/p/secrets/s/versions/v into the secret's
// name and v.
func (s *Server) versionName(name string) (secret, v string, err error) {
	m := versionRE.FindStringSubmatch(name)
	if m == nil {
		return "", "", fmt.Errorf("version name %q is not projects/<project>/secrets/<secret>/versions/<version>", name)
	}
	secret, err = s.secretName(m[1])
	return secret, m[2], err
}

// lookup finds a version (its error says it was not found) by number,
// alias or latest: the most recently created version, whatever its state,
// as Secret Manager documents it.
func (s *Server) lookup(secretName, v string) (string, *version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[secretName]
	if sec == nil || len(sec.versions) == 0 {
		return "", nil, fmt.Errorf("Secret [%s] not found or has no versions.", secretName)
	}
	i, ok := len(sec.versions), true
	if n, err := strconv.Atoi(v); err == nil {
		i, ok = n, n >= 1 && n <= len(sec.versions) && strconv.Itoa(n) == v
	} else if v != "latest" {
		i, ok = sec.aliases[v]
	}
	if !ok {
		return "", nil, fmt.Errorf("Secret Version [%s/versions/%s] not found.", secretName, v)
	}
	// A copy, which the caller reads without the lock.
	cp := *sec.versions[i-1]
	return fmt.Sprintf("%s/versions/%d", secretName, i), &cp, nil
}

func (v *version) proto(name string) *secretmanagerpb.SecretVersion {
	pv := &secretmanagerpb.SecretVersion{Name: name, CreateTime: timestamppb.New(v.created), State: v.state,
		Etag: fmt.Sprintf(`"%x"`, v.created.UnixMicro())}
	if !v.destroyed.IsZero() {
		pv.DestroyTime = timestamppb.New(v.destroyed)
	}
	return pv
}
