package webhook

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/lru"
)

// reviews answers TokenReviews and SubjectAccessReviews from maps and
// counts them. The real API server's answers are checked by test/chart
// (401, 403, 200 from secctx's /metrics in a cluster).
type reviews struct {
	users   map[string]string // token -> user
	allowed map[string]bool   // user -> may get /metrics
	fail    bool
	calls   int
}

func (f *reviews) tokenReview(_ context.Context, tr *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.calls++
	if f.fail {
		return nil, errors.New("the server is currently unable to handle the request")
	}
	out := tr.DeepCopy()
	if u, ok := f.users[tr.Spec.Token]; ok {
		out.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: u, Groups: []string{"g"}}}
	}
	return out, nil
}

func (f *reviews) accessReview(_ context.Context, sar *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	f.calls++
	out := sar.DeepCopy()
	a := sar.Spec.NonResourceAttributes
	out.Status.Allowed = f.allowed[sar.Spec.User] && a != nil && a.Path == "/metrics" && a.Verb == "get" && len(sar.Spec.Groups) == 1
	return out, nil
}

type tokenReviewFunc func(context.Context, *authenticationv1.TokenReview, metav1.CreateOptions) (*authenticationv1.TokenReview, error)

func (f tokenReviewFunc) Create(ctx context.Context, tr *authenticationv1.TokenReview, o metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	return f(ctx, tr, o)
}

type accessReviewFunc func(context.Context, *authorizationv1.SubjectAccessReview, metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)

func (f accessReviewFunc) Create(ctx context.Context, sar *authorizationv1.SubjectAccessReview, o metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	return f(ctx, sar, o)
}

func TestMetricsAuth(t *testing.T) {
	f := &reviews{users: map[string]string{"good": "prometheus", "other": "nobody"}, allowed: map[string]bool{"prometheus": true}}
	now := time.Unix(0, 0)
	a := &metricsAuth{tokens: tokenReviewFunc(f.tokenReview), access: accessReviewFunc(f.accessReview), cache: lru.New(authCacheSize), now: func() time.Time { return now }}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("metrics")) })
	get := func(auth string) int {
		r := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		a.serve(logr.Discard(), ok, w, r)
		return w.Code
	}
	for _, tt := range []struct {
		auth  string
		want  int
		calls int // reviews made
	}{
		{"", 401, 0},
		{"Basic Zm9vOmJhcg==", 401, 0},
		{"Bearer nope", 401, 1},
		{"Bearer other", 403, 2},
		{"Bearer good", 200, 2},
		{"bearer  good ", 200, 0}, // both answers kept
		{"Bearer other", 403, 0},
	} {
		f.calls = 0
		if got := get(tt.auth); got != tt.want || f.calls != tt.calls {
			t.Errorf("%q: %d after %d reviews, want %d after %d", tt.auth, got, f.calls, tt.want, tt.calls)
		}
	}
	// A denial is kept 30 s, a token's review a minute, an access 5 minutes.
	now = now.Add(31 * time.Second)
	f.calls = 0
	if get("Bearer other") != 403 || f.calls != 1 {
		t.Errorf("after 31 s: %d reviews, want the denial asked again", f.calls)
	}
	now = now.Add(time.Minute)
	f.calls = 0
	if get("Bearer good") != 200 || f.calls != 1 {
		t.Errorf("after 91 s: %d reviews, want the token reviewed again and the access kept", f.calls)
	}
	f.fail = true
	now = now.Add(2 * time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no retries
	r := httptest.NewRequestWithContext(ctx, http.MethodGet, "/metrics", nil)
	r.Header.Set("Authorization", "Bearer good")
	w := httptest.NewRecorder()
	a.serve(logr.Discard(), ok, w, r)
	if w.Code != 500 {
		t.Errorf("API server down: %d, want 500", w.Code)
	}
}
