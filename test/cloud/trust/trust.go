// Package trust is what the cloud protocol test servers (test/cloud/gcp,
// test/cloud/azure) share: how they check a pod's Kubernetes
// service-account token (Reviewer, with the cluster's real API server in
// KubeReviewer), the CA that signs their TLS certificates, and the journal
// of their decisions.
//
// These are test servers for secctx's end-to-end tests, not the clouds.
package trust

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Reviewer checks a Kubernetes service-account token for an audience and
// returns its username (system:serviceaccount:<ns>:<name>).
type Reviewer interface {
	Review(ctx context.Context, token, audience string) (username string, err error)
}

// ServiceAccountPrefix starts the username of every service account.
const ServiceAccountPrefix = "system:serviceaccount:"

// KubeReviewer asks the cluster's API server (a TokenReview), as the
// clouds ask the cluster's OIDC issuer: the token must be valid now, for
// this audience, and a service account's.
type KubeReviewer struct {
	Client kubernetes.Interface
}

// Review implements Reviewer.
func (k KubeReviewer) Review(ctx context.Context, token, audience string) (string, error) {
	review, err := k.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token review: %w", err)
	}
	st := review.Status
	if !st.Authenticated {
		return "", fmt.Errorf("token review: not authenticated for audience %q: %s", audience, st.Error)
	}
	// An API server that ignores spec.audiences answers with its own: a
	// token for another audience must not pass.
	if !slices.Contains(st.Audiences, audience) {
		return "", fmt.Errorf("token review: token is for %v, not %q", st.Audiences, audience)
	}
	if !strings.HasPrefix(st.User.Username, ServiceAccountPrefix) {
		return "", fmt.Errorf("token review: %q is not a service account", st.User.Username)
	}
	return st.User.Username, nil
}

// Tokens is a Reviewer for unit tests: the tokens it knows, each with the
// audience it was issued for.
type Tokens map[string]Token

// Token is a token Tokens knows.
type Token struct {
	Audience, Username string
}

// Review implements Reviewer.
func (t Tokens) Review(_ context.Context, token, audience string) (string, error) {
	tok, ok := t[token]
	if !ok {
		return "", fmt.Errorf("token review: unknown token")
	}
	if tok.Audience != audience {
		return "", fmt.Errorf("token review: token is for %q, not %q", tok.Audience, audience)
	}
	return tok.Username, nil
}

// Refusal is one request a server refused.
type Refusal struct {
	Time time.Time
	// Service is the part of the server that refused (sts,
	// secretmanager, entra, keyvault, ...).
	Service string
	// Principal is who asked, as far as the server knew ("" when it could
	// not tell).
	Principal string
	// Resource is what was asked for.
	Resource string
	// Reason is why it was refused.
	Reason string
}

func (r Refusal) String() string {
	return fmt.Sprintf("%s: %s refused %s: %s", r.Service, orUnknown(r.Principal), r.Resource, r.Reason)
}

func orUnknown(p string) string {
	if p == "" {
		return "(unknown caller)"
	}
	return p
}

// Journal logs a server's decisions and keeps its refusals for tests to
// read.
type Journal struct {
	Logf func(format string, args ...any)

	mu       sync.Mutex
	refusals []Refusal
}

// Granted logs a request that was granted.
func (j *Journal) Granted(service, principal, resource string) {
	j.logf("%s: granted %s to %s", service, resource, orUnknown(principal))
}

// Refused logs a refusal and keeps it.
func (j *Journal) Refused(service, principal, resource, reason string) {
	r := Refusal{Time: time.Now(), Service: service, Principal: principal, Resource: resource, Reason: reason}
	j.mu.Lock()
	j.refusals = append(j.refusals, r)
	j.mu.Unlock()
	j.logf("%s", r)
}

// Note logs something that is neither a grant nor a refusal.
func (j *Journal) Note(format string, args ...any) { j.logf(format, args...) }

// Refusals is a copy of the refusals so far.
func (j *Journal) Refusals() []Refusal {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.refusals)
}

func (j *Journal) logf(format string, args ...any) {
	if j.Logf != nil {
		j.Logf(format, args...)
	}
}
