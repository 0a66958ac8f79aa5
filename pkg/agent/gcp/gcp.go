// Package gcp is the fetch's Google Secret Manager store (store gcp): it
// reads with the official client, AccessSecretVersion over gRPC, as the
// pod's own Google identity. It is a package of its own, registered with
// agent.RegisterStore when imported, so that only the secctx-fetch binary
// (cmd/fetch), which the fetch init container runs, links gRPC and
// protobuf: linked into secctx-agent they made every process of it larger
// in memory, an idle token sidecar 21 MiB instead of 12.5.
package gcp

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"
	secretmanager "cloud.google.com/go/secretmanager/apiv1"
	"cloud.google.com/go/secretmanager/apiv1/secretmanagerpb"
	"github.com/go-logr/logr"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google/externalaccount"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/secctx/secctx/pkg/agent"
	"github.com/secctx/secctx/pkg/agent/internal/storekit"
	"github.com/secctx/secctx/pkg/agentapi"
)

func init() { agent.RegisterStore(agentapi.StoreGCP, open) }

// scope is the OAuth scope of the tokens the identity asks for.
const scope = "https://www.googleapis.com/auth/cloud-platform"

// callTimeout bounds one call to Secret Manager, so that one that hangs
// leaves the fetch time to retry.
const callTimeout = 30 * time.Second

// maxAnswer bounds an AccessSecretVersionResponse: a value of
// storekit.MaxSecretSize fits with room to spare.
const maxAnswer = 2 * storekit.MaxSecretSize

var (
	secretName  = regexp.MustCompile(`^projects/[^/]+/(locations/[^/]+/)?secrets/[^/]+$`)
	versionName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	crc32c      = crc32.MakeTable(crc32.Castagnoli)
	// defaults are the endpoints of GCPConfig that the flags default to:
	// Google's own.
	defaults = agent.DefaultFetchConfig().GCP
)

// store reads Secret Manager with the official client, one per fetch: its
// gRPC connection trusts the CA bundle, and its tokens are the identity's.
type store struct {
	client *secretmanager.Client
	id     *identity
}

func open(ctx context.Context, cfg agent.FetchConfig, secrets []agentapi.Secret) (agent.Store, error) {
	g := cfg.GCP
	// Before any call: a secret that cannot be named fails the pod at
	// once.
	for _, s := range secrets {
		if err := secretOK(s); err != nil {
			return nil, agent.Permanent(fmt.Errorf("%s (%s): %w", s.Field, storekit.Describe(s), err))
		}
	}
	endpoint := cmp.Or(g.Endpoint, defaults.Endpoint)
	if u, err := url.Parse("https://" + endpoint); err != nil || u.Host != endpoint || u.Port() == "" {
		return nil, agent.Permanent(fmt.Errorf("gcp: --gcp-endpoint %q: must be host:port", endpoint))
	}
	tlsConf, err := storekit.TLS(g.CABundle, "SECCTX_GCP_CA_BUNDLE")
	if err != nil {
		return nil, agent.Permanent(fmt.Errorf("gcp: %w", err))
	}
	id, err := newIdentity(ctx, g, storekit.HTTPClient(tlsConf))
	if err != nil {
		return nil, err
	}
	// The token first: on GKE the metadata server may not answer in the
	// pod's first seconds, and that wait is the retry loop's to make.
	if _, err := id.token(ctx); err != nil {
		return nil, err
	}
	client, err := secretmanager.NewClient(ctx,
		option.WithEndpoint(endpoint),
		// The identity's tokens, and never Application Default
		// Credentials (GOOGLE_APPLICATION_CREDENTIALS, a gcloud file),
		// which would read the secrets as someone else: with a token
		// source the client looks for no other credentials.
		option.WithTokenSource(id),
		// Last, so that they override the client's own: the connection
		// trusts the system's CAs and SECCTX_GCP_CA_BUNDLE's, and an
		// answer is bounded.
		option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewTLS(tlsConf))),
		option.WithGRPCDialOption(grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxAnswer))),
		option.WithTelemetryDisabled(),
	)
	if err != nil {
		return nil, agent.Permanent(fmt.Errorf("gcp: Secret Manager client for %s: %w", endpoint, err))
	}
	// The fetch's own loop retries, with its backoff and --timeout, and
	// callTimeout bounds each call: not the client's retries for a minute.
	client.CallOptions.AccessSecretVersion = nil
	return &store{client: client, id: id}, nil
}

// Close closes the client's connection: the fetch is done with it.
func (g *store) Close(_ context.Context, log logr.Logger) {
	if err := g.client.Close(); err != nil {
		log.Error(err, "gcp: close the Secret Manager client")
	}
}

// secretOK refuses a secret that Secret Manager could not name.
func secretOK(s agentapi.Secret) error {
	if !secretName.MatchString(s.ID) {
		return errors.New("gcp: id must be projects/<project>/secrets/<secret> (or .../locations/<location>/secrets/<secret>)")
	}
	if s.Version != "" && !versionName.MatchString(s.Version) {
		return errors.New("gcp: version must be a number, latest or an alias")
	}
	return nil
}

func (g *store) Read(ctx context.Context, s agentapi.Secret) ([]byte, error) {
	// The token first, for its errors, which say whether they are for
	// good and which identity: the client then asks the identity as its
	// token source, and gets the same token.
	if _, err := g.id.token(ctx); err != nil {
		return nil, err
	}
	name := s.ID + "/versions/" + cmp.Or(s.Version, "latest")
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	res, err := g.client.AccessSecretVersion(ctx, &secretmanagerpb.AccessSecretVersionRequest{Name: name})
	if err != nil {
		return nil, accessError(name, g.id.who, err)
	}
	p := res.GetPayload()
	v := p.GetData()
	if p.DataCrc32C != nil && int64(crc32.Checksum(v, crc32c)) != *p.DataCrc32C {
		return nil, agent.Permanent(fmt.Errorf("gcp access %s: the payload does not match its checksum (data_crc32c)", name))
	}
	if s.Key == "" {
		return v, nil
	}
	return jsonField(v, s.Key)
}

// accessError words a failed AccessSecretVersion and says whether it is
// worth retrying: a missing secret, a denied read or a bad request is not.
// The status message is Secret Manager's, which names the secret and
// never its value.
func accessError(name, who string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("gcp access %s: %w", name, err)
	}
	msg := fmt.Sprintf("gcp access %s: %s", name, st.Code())
	if m := st.Message(); m != "" {
		msg += ": " + storekit.OneLine(m)
	}
	switch st.Code() {
	case codes.NotFound:
		return agent.Permanent(fmt.Errorf("%s (not found in Secret Manager)", msg))
	case codes.PermissionDenied:
		return agent.Permanent(fmt.Errorf("%s (permission denied to the identity %s: it needs roles/secretmanager.secretAccessor on the secret)", msg, who))
	case codes.Unauthenticated:
		return agent.Permanent(fmt.Errorf("%s (the token of the identity %s was refused)", msg, who))
	case codes.FailedPrecondition:
		return agent.Permanent(fmt.Errorf("%s (version disabled or destroyed)", msg))
	case codes.InvalidArgument:
		return agent.Permanent(fmt.Errorf("%s (invalid request)", msg))
	case codes.Unimplemented:
		return agent.Permanent(fmt.Errorf("%s (is --gcp-endpoint Secret Manager?)", msg))
	case codes.Unavailable:
		// A certificate the fetch does not trust stays untrusted: gRPC
		// reports it as Unavailable, which would be retried until the
		// timeout with the real cause buried in the last attempt.
		if m := st.Message(); strings.Contains(m, "x509:") || strings.Contains(m, "tls: failed to verify certificate") {
			return agent.Permanent(fmt.Errorf("%s (Secret Manager's certificate is not trusted: check inject.gcp.endpoint, or add its CA to inject.gcp.caBundle)", msg))
		}
	case codes.ResourceExhausted:
		// The client's own limit on an answer, which no retry changes;
		// any other is Secret Manager's quota, which a retry may meet
		// again later.
		if strings.Contains(st.Message(), "received message larger than max") {
			return agent.Permanent(fmt.Errorf("gcp access %s: an answer of more than %d bytes, for a value this agent writes up to %d", name, maxAnswer, storekit.MaxSecretSize))
		}
	}
	// Unavailable, DeadlineExceeded, ResourceExhausted, Internal, Aborted,
	// Unknown: worth retrying.
	return errors.New(msg)
}

// jsonField is the field key of the JSON object v: a string as itself,
// any other value as its JSON text. No error quotes v.
func jsonField(v []byte, key string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(v, &obj); err != nil || obj == nil {
		return nil, agent.Permanent(fmt.Errorf("key %q: the secret is not a JSON object", key))
	}
	f, ok := obj[key]
	if !ok {
		return nil, agent.Permanent(fmt.Errorf("key %q: the secret's JSON object has no such field", key))
	}
	var str string
	if f = bytes.TrimSpace(f); len(f) > 0 && f[0] == '"' && json.Unmarshal(f, &str) == nil {
		return []byte(str), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, f); err != nil {
		return nil, agent.Permanent(fmt.Errorf("key %q: not valid JSON", key))
	}
	return buf.Bytes(), nil
}

// identity is the pod's Google identity: a token source (the client's),
// and what its errors say about it.
type identity struct {
	cfg agent.GCPConfig
	// who names the identity for messages.
	who string

	// Federation: the official library's external account source, and the
	// last STS or IAM answer, as the library's errors carry the status
	// only as text.
	federated oauth2.TokenSource
	last      *lastStatus

	// GKE: the metadata server, and its token while it lasts.
	md  *metadata.Client
	mu  sync.Mutex
	tok *oauth2.Token
}

// newIdentity builds the credentials from the config alone: never from
// GOOGLE_APPLICATION_CREDENTIALS or a gcloud file that the task's image
// may carry, which would read the secrets as someone else.
func newIdentity(ctx context.Context, g agent.GCPConfig, hc *http.Client) (*identity, error) {
	if g.Audience == "" {
		if g.TokenFile != "" || g.ServiceAccount != "" {
			return nil, agent.Permanent(errors.New("gcp: --gcp-token-file and --gcp-service-account are for federation, which --gcp-audience turns on"))
		}
		// The official metadata client (GCE_METADATA_HOST, else
		// 169.254.169.254), and not x/oauth2/google's compute source,
		// whose check for the metadata server is made once per process:
		// one that fails in the pod's first seconds would fail every retry.
		//
		// With the metadata client's own HTTP settings (no proxy, short
		// timeouts), and a note of what each try met: the client retries a
		// refused connection until the context ends, and then says only
		// that.
		last := &lastStatus{}
		mc := &http.Client{Timeout: 5 * time.Second, Transport: &statusRecorder{last: last, next: &http.Transport{
			DialContext: (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext, IdleConnTimeout: 60 * time.Second,
		}}}
		return &identity{cfg: g, who: "of the GKE metadata server (Workload Identity)", last: last,
			md: metadata.NewWithOptions(&metadata.Options{Client: mc})}, nil
	}
	if g.TokenFile == "" {
		return nil, agent.Permanent(errors.New("gcp: --gcp-token-file is required with --gcp-audience"))
	}
	jwt, err := os.ReadFile(g.TokenFile)
	if err != nil {
		return nil, agent.Permanent(fmt.Errorf("gcp: read the pod's service-account token: %w", err))
	}
	id := &identity{cfg: g, who: "of the pod's service account " + storekit.TokenSubject(string(jwt)), last: &lastStatus{}}
	if g.ServiceAccount != "" {
		id.who += " impersonating " + g.ServiceAccount
	}
	hc.Transport = &statusRecorder{next: hc.Transport, last: id.last}
	// The source keeps ctx for its calls: the fetch's, which bounds them.
	ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	id.federated, err = externalaccount.NewTokenSource(ctx, externalAccount(g))
	if err != nil {
		return nil, agent.Permanent(fmt.Errorf("gcp: workload identity federation: %w", err))
	}
	return id, nil
}

// externalAccount is the credential configuration that gcloud iam
// workload-identity-pools create-cred-config writes (type
// external_account) for a token file, as the library's type.
func externalAccount(g agent.GCPConfig) externalaccount.Config {
	c := externalaccount.Config{
		Audience:         g.Audience,
		SubjectTokenType: "urn:ietf:params:oauth:token-type:jwt",
		TokenURL:         cmp.Or(g.TokenURL, defaults.TokenURL),
		CredentialSource: &externalaccount.CredentialSource{File: g.TokenFile},
		Scopes:           []string{scope},
	}
	if g.ServiceAccount != "" {
		c.ServiceAccountImpersonationURL = impersonationURL(g)
	}
	return c
}

func impersonationURL(g agent.GCPConfig) string {
	return strings.TrimSuffix(cmp.Or(g.IAMEndpoint, defaults.IAMEndpoint), "/") +
		"/v1/projects/-/serviceAccounts/" + url.PathEscape(g.ServiceAccount) + ":generateAccessToken"
}

// token is the identity's token: the one held if it is still good, else a
// new one; a failure says whether it is for good.
func (id *identity) token(ctx context.Context) (*oauth2.Token, error) {
	id.last.set("", 0, nil)
	if id.md != nil {
		id.mu.Lock()
		defer id.mu.Unlock()
		if !id.tok.Valid() {
			t, err := gkeToken(ctx, id.md)
			if err != nil {
				return nil, id.metadataError(err)
			}
			id.tok = t
		}
		return id.tok, nil
	}
	t, err := id.federated.Token()
	if err != nil {
		return nil, id.federationError(err)
	}
	return t, nil
}

// Token makes the identity the client's token source. Read has just made
// sure of the token, under the fetch's context, so this hands over the
// one held; one that has expired since is asked for anew.
func (id *identity) Token() (*oauth2.Token, error) {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return id.token(ctx)
}

// gkeToken is a token of the default service account from the metadata
// server: on GKE, the Google service account that the pod's Kubernetes
// service account is bound to.
func gkeToken(ctx context.Context, md *metadata.Client) (*oauth2.Token, error) {
	body, err := md.GetWithContext(ctx, "instance/service-accounts/default/token?scopes="+url.QueryEscape(scope))
	if err != nil {
		return nil, err
	}
	var res struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		TokenType   string `json:"token_type"`
	}
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		return nil, fmt.Errorf("the token is not JSON: %w", err)
	}
	if res.AccessToken == "" || res.ExpiresIn <= 0 {
		return nil, errors.New("the answer has no token")
	}
	return &oauth2.Token{AccessToken: res.AccessToken, TokenType: res.TokenType, Expiry: time.Now().Add(time.Duration(res.ExpiresIn) * time.Second)}, nil
}

func (id *identity) metadataError(err error) error {
	host := cmp.Or(os.Getenv("GCE_METADATA_HOST"), "169.254.169.254")
	if _, _, lastErr := id.last.get(); lastErr != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		err = fmt.Errorf("%w (the last try: %v)", err, lastErr)
	}
	err = fmt.Errorf("gcp: token from the GKE metadata server at %s: %w", host, err)
	// A 404 is transient too: the metadata server answers it until the
	// pod's Workload Identity is set up.
	var me *metadata.Error
	if errors.As(err, &me) && storekit.Refused(me.Code) && me.Code != http.StatusNotFound {
		return agent.Permanent(fmt.Errorf("%w (refused: is the pod's Kubernetes service account bound to a Google service account?)", err))
	}
	return err
}

func (id *identity) federationError(err error) error {
	u, code, _ := id.last.get()
	step := "STS token exchange at " + cmp.Or(id.cfg.TokenURL, defaults.TokenURL)
	if id.cfg.ServiceAccount != "" && strings.HasPrefix(u, strings.TrimSuffix(cmp.Or(id.cfg.IAMEndpoint, defaults.IAMEndpoint), "/")+"/") {
		step = "IAM generateAccessToken for " + id.cfg.ServiceAccount
	}
	if code == 0 {
		return fmt.Errorf("gcp: %s, as the identity %s: %w", step, id.who, err)
	}
	err = fmt.Errorf("gcp: %s, as the identity %s: HTTP %d: %w", step, id.who, code, err)
	if code >= 300 && code < 400 || storekit.Refused(code) {
		return agent.Permanent(fmt.Errorf("%w (refused: check the workload identity pool's provider and the service account's bindings)", err))
	}
	return err
}

// lastStatus is what a client's last request met: the URL and status
// of the answer, or the error.
type lastStatus struct {
	mu   sync.Mutex
	url  string
	code int
	err  error
}

func (l *lastStatus) set(u string, code int, err error) {
	l.mu.Lock()
	l.url, l.code, l.err = u, code, err
	l.mu.Unlock()
}

func (l *lastStatus) get() (string, int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.url, l.code, l.err
}

// statusRecorder notes what each request meets in last.
type statusRecorder struct {
	next http.RoundTripper
	last *lastStatus
}

func (r *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := r.next.RoundTrip(req)
	u := req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
	if err != nil {
		r.last.set(u, 0, err)
		return res, err
	}
	r.last.set(u, res.StatusCode, nil)
	return res, nil
}
