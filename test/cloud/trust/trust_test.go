package trust

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// apiServer answers TokenReviews as an API server would for the tokens it
// knows; "deaf" stands for an API server that ignores spec.audiences.
func apiServer() *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		sa := authenticationv1.UserInfo{Username: "system:serviceaccount:team:app"}
		switch tr.Spec.Token {
		case "pod":
			if len(tr.Spec.Audiences) == 1 && tr.Spec.Audiences[0] == "sts.example" {
				tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences, User: sa}
			} else {
				tr.Status.Error = "token audiences don't match"
			}
		case "deaf":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"}, User: sa}
		case "user":
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences,
				User: authenticationv1.UserInfo{Username: "alice"}}
		default:
			tr.Status.Error = "invalid bearer token"
		}
		return true, tr, nil
	})
	return c
}

func TestKubeReviewer(t *testing.T) {
	r := KubeReviewer{Client: apiServer()}
	ctx := context.Background()
	if u, err := r.Review(ctx, "pod", "sts.example"); err != nil || u != "system:serviceaccount:team:app" {
		t.Errorf("a pod's token: %q %v", u, err)
	}
	for _, tc := range []struct{ token, audience, want string }{
		{"pod", "other", "not authenticated"},
		{"forged", "sts.example", "invalid bearer token"},
		{"deaf", "sts.example", `not "sts.example"`},
		{"user", "sts.example", "not a service account"},
	} {
		if _, err := r.Review(ctx, tc.token, tc.audience); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s for %s: got %v, want %q", tc.token, tc.audience, err, tc.want)
		}
	}
}

func TestCA(t *testing.T) {
	ca, err := NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	conf, err := ca.ServerTLS("127.0.0.1", "*.vault.azure.net")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(ca.PEM()))
	for name, ok := range map[string]bool{"127.0.0.1": true, "kv1.vault.azure.net": true, "vault.azure.net": false, "example.com": false} {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: name})
		if err == nil {
			c.Close()
		}
		if (err == nil) != ok {
			t.Errorf("%s: handshake error %v, want ok=%v", name, err, ok)
		}
	}
}
