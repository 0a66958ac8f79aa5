package main

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The two reference servers the load test compares secctx with. Both serve
// the same certificate on HTTP/1.1, as secctx does by default.

// noopDefaulter changes nothing: the cheapest webhook controller-runtime's
// Defaulter path can be (decode the review and the pod, call Default, diff
// the pod before and after into a patch).
type noopDefaulter struct{}

func (noopDefaulter) Default(context.Context, *corev1.Pod) error { return nil }

func http11(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }

// serveNoop is `bench serve-noop PORT CERTDIR`.
func serveNoop(port, certDir string) error {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return err
	}
	srv := webhook.NewServer(webhook.Options{Port: p, CertDir: certDir, TLSOpts: []func(*tls.Config){http11}})
	srv.Register("/mutate-v1-pod", admission.WithDefaulter[*corev1.Pod](scheme, noopDefaulter{}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return srv.Start(ctx)
}

// bareResponse is an AdmissionReview that allows; the bare server sends it
// without reading the request: the floor of HTTPS itself.
var bareResponse = []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}`)

// serveBare is `bench serve-bare PORT CERTDIR`.
func serveBare(port, certDir string) error {
	srv := &http.Server{
		Addr: ":" + port,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(bareResponse)
		}),
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
	}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt, syscall.SIGTERM)
		<-c
		_ = srv.Close()
	}()
	err := srv.ListenAndServeTLS(certDir+"/tls.crt", certDir+"/tls.key")
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}
