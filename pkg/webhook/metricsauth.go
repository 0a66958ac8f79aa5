package webhook

import (
	"context"
	"crypto/sha256"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/lru"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// How long answers are kept, as controller-runtime's filters keep them: a
// token's review a minute, an allowed access five minutes, a denied one
// thirty seconds.
const (
	authnTTL      = time.Minute
	authzAllowTTL = 5 * time.Minute
	authzDenyTTL  = 30 * time.Second
	reviewTimeout = 10 * time.Second
	authCacheSize = 1024
)

// reviewBackoff retries a review the API server did not answer, as
// controller-runtime's filters do.
var reviewBackoff = wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5}

// MetricsAuth is the filter in front of /metrics when it is served securely:
// the client's bearer token is checked with a TokenReview, and its right to
// the request (a non-resource URL and verb, as `get /metrics`) with a
// SubjectAccessReview; 401 without a valid token, 403 without the right.
// It does what controller-runtime's metrics/filters.WithAuthenticationAndAuthorization
// does, with the same caching, without k8s.io/apiserver's delegating
// authenticator and authorizer: that package brought CEL, gRPC and
// OpenTelemetry into secctx, 20 MB of its 55 MB binary and 17 MiB of RSS at
// every start, for two API calls (docs/performance-notes.md).
func MetricsAuth(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authnclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	authz, err := authzclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	a := &metricsAuth{tokens: authn.TokenReviews(), access: authz.SubjectAccessReviews(), cache: lru.New(authCacheSize), now: time.Now}
	return func(log logr.Logger, next http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.serve(log, next, w, r) }), nil
	}, nil
}

// metricsAuth holds the review clients and the answers kept.
type metricsAuth struct {
	tokens interface {
		Create(context.Context, *authenticationv1.TokenReview, metav1.CreateOptions) (*authenticationv1.TokenReview, error)
	}
	access interface {
		Create(context.Context, *authorizationv1.SubjectAccessReview, metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
	}
	mu    sync.Mutex
	cache *lru.Cache // of cached, by authnKey or authzKey
	now   func() time.Time
}

// cached is a review's answer and when it expires.
type cached struct {
	user    *authenticationv1.UserInfo // authn; nil: not authenticated
	allowed bool                       // authz
	expires time.Time
}

// Cache keys: a token is kept only as its hash.
type (
	authnKey [sha256.Size]byte
	authzKey struct{ user, verb, path string }
)

func (a *metricsAuth) get(key any) (cached, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.cache.Get(key)
	if !ok || a.now().After(v.(cached).expires) {
		return cached{}, false
	}
	return v.(cached), true
}

func (a *metricsAuth) put(key any, c cached, ttl time.Duration) {
	c.expires = a.now().Add(ttl)
	a.mu.Lock()
	a.cache.Add(key, c)
	a.mu.Unlock()
}

func (a *metricsAuth) serve(log logr.Logger, next http.Handler, w http.ResponseWriter, r *http.Request) {
	token := bearerToken(r.Header.Get("Authorization"))
	if token == "" {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	user, err := a.authenticate(r.Context(), token)
	if err != nil {
		log.Error(err, "authenticate a /metrics client")
		http.Error(w, "Authentication failed", http.StatusInternalServerError)
		return
	}
	if user == nil {
		http.Error(w, "Unauthorized", http.StatusUnauthorized)
		return
	}
	allowed, err := a.authorize(r.Context(), user, strings.ToLower(r.Method), r.URL.Path)
	if err != nil {
		log.Error(err, "authorize a /metrics client", "user", user.Username)
		http.Error(w, "Authorization for user "+user.Username+" failed", http.StatusInternalServerError)
		return
	}
	if !allowed {
		http.Error(w, "Authorization denied for user "+user.Username, http.StatusForbidden)
		return
	}
	next.ServeHTTP(w, r)
}

// bearerToken is the token of an "Authorization: Bearer <token>" header, or
// "".
func bearerToken(h string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// authenticate returns who the token belongs to, or nil when the API
// server does not authenticate it.
func (a *metricsAuth) authenticate(ctx context.Context, token string) (*authenticationv1.UserInfo, error) {
	key := authnKey(sha256.Sum256([]byte(token)))
	if c, ok := a.get(key); ok {
		return c.user, nil
	}
	var got *authenticationv1.TokenReview
	err := withRetry(ctx, func(ctx context.Context) (err error) {
		got, err = a.tokens.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return nil, err
	}
	var user *authenticationv1.UserInfo
	if got.Status.Authenticated {
		user = &got.Status.User
	}
	a.put(key, cached{user: user}, authnTTL)
	return user, nil
}

// authorize says whether user may do verb on the non-resource path.
func (a *metricsAuth) authorize(ctx context.Context, user *authenticationv1.UserInfo, verb, path string) (bool, error) {
	key := authzKey{user: userKey(user), verb: verb, path: path}
	if c, ok := a.get(key); ok {
		return c.allowed, nil
	}
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
	}}
	var got *authorizationv1.SubjectAccessReview
	err := withRetry(ctx, func(ctx context.Context) (err error) {
		got, err = a.access.Create(ctx, sar, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return false, err
	}
	ttl := authzDenyTTL
	if got.Status.Allowed {
		ttl = authzAllowTTL
	}
	a.put(key, cached{allowed: got.Status.Allowed}, ttl)
	return got.Status.Allowed, nil
}

// withRetry calls create, each call bounded by reviewTimeout, until it
// succeeds, reviewBackoff runs out or ctx ends.
func withRetry(ctx context.Context, create func(context.Context) error) error {
	return retry.OnError(reviewBackoff, func(error) bool { return ctx.Err() == nil }, func() error {
		ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
		defer cancel()
		return create(ctx)
	})
}

// userKey names a user with everything the review is asked about, so that
// two users never share an answer.
func userKey(u *authenticationv1.UserInfo) string {
	var b strings.Builder
	for _, s := range append([]string{u.Username, u.UID}, u.Groups...) {
		b.WriteString(s)
		b.WriteByte(0)
	}
	keys := make([]string, 0, len(u.Extra))
	for k := range u.Extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(1)
		for _, v := range u.Extra[k] {
			b.WriteString(v)
			b.WriteByte(0)
		}
	}
	return b.String()
}
