// Command servers holds the reference servers the load tests compare secctx
// with: serve-noop, serve-bare and serve-floor. It is a binary of its own,
// built by bench, so that each server carries what a real one would (a
// no-op kubebuilder webhook: controller-runtime and client-go's scheme) and
// not the bench program's cluster harness and SDKs, whose code and package
// initialisation would count in its RSS.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// All serve the same certificate on HTTP/1.1, as secctx does by default.

func main() {
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "serve-noop":
		err = serveNoop(os.Args[2], os.Args[3])
	case len(os.Args) == 4 && os.Args[1] == "serve-bare":
		err = serveBare(os.Args[2], os.Args[3])
	case len(os.Args) == 6 && os.Args[1] == "serve-floor":
		err = serveFloor(os.Args[2], os.Args[3], os.Args[4], os.Args[5])
	default:
		err = errors.New("usage: servers serve-noop|serve-bare PORT CERTDIR, or serve-floor PORT CERTDIR SECCTXURL CAFILE")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "servers:", err)
		os.Exit(1)
	}
}

// noopDefaulter changes nothing: the cheapest webhook controller-runtime's
// Defaulter path can be (decode the review and the pod, call Default, diff
// the pod before and after into a patch).
type noopDefaulter struct{}

func (noopDefaulter) Default(context.Context, *corev1.Pod) error { return nil }

func http11(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }

// serveNoop is `bench serve-noop PORT CERTDIR`. It sets controller-runtime's
// logger first, as kubebuilder's scaffold does: without it, controller-runtime
// keeps every logger it hands out waiting for one (its delegating sink), and
// the heap grows on every request for the first 30 s, inside the measured
// window, which had made the no-op slower than it is.
func serveNoop(port, certDir string) error {
	ctrl.SetLogger(zap.New(zap.Level(zapcore.InfoLevel)))
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
	return serveTLS(port, certDir, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(bareResponse)
	}))
}

// serveTLS serves h on port over HTTP/1.1 with CERTDIR's certificate until
// SIGINT or SIGTERM.
func serveTLS(port, certDir string, h http.Handler) error {
	srv := &http.Server{Addr: ":" + port, Handler: h,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}}
	go func() {
		c := make(chan os.Signal, 1)
		signal.Notify(c, os.Interrupt, syscall.SIGTERM)
		<-c
		_ = srv.Close()
	}()
	if err := srv.ListenAndServeTLS(certDir+"/tls.crt", certDir+"/tls.key"); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// serveFloor is `bench serve-floor PORT CERTDIR SECCTXURL CAFILE`: the patch
// floor. It answers every review with secctx's own answer to the first
// review it got (which it asks secctx for once, then keeps), with only the
// request's UID put in: the API server applies and decodes byte for byte
// the patch secctx returns, and the webhook does no work beyond reading the
// body and finding the UID. secctx's cost through the API server is what
// it adds to this.
func serveFloor(port, certDir, secctxURL, caFile string) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	upstream := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var (
		once      sync.Once
		recorded  []byte // secctx's answer
		recUID    []byte // the UID in it
		recordErr error
	)
	record := func(body []byte) {
		resp, err := upstream.Post(secctxURL, "application/json", bytes.NewReader(body))
		if err != nil {
			recordErr = err
			return
		}
		defer resp.Body.Close()
		if recorded, err = io.ReadAll(resp.Body); err != nil {
			recordErr = err
			return
		}
		if recUID = reviewUID(recorded); recUID == nil || !bytes.Contains(recorded, []byte(`"patch":"`)) {
			recordErr = fmt.Errorf("secctx's answer has no UID or no patch: %s", recorded)
		}
		fmt.Fprintf(os.Stderr, "bench: patch floor recorded secctx's answer (%d bytes)\n", len(recorded))
	}
	return serveTLS(port, certDir, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		once.Do(func() { record(body) })
		uid := reviewUID(body)
		if recordErr != nil || uid == nil {
			http.Error(w, fmt.Sprintf("patch floor: %v (uid %q)", recordErr, uid), http.StatusInternalServerError)
			return
		}
		i := bytes.Index(recorded, recUID)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(recorded)-len(recUID)+len(uid)))
		_, _ = w.Write(recorded[:i])
		_, _ = w.Write(uid)
		_, _ = w.Write(recorded[i+len(recUID):])
	}))
}

// reviewUID is the first "uid" value of a review: the request's, which the
// API server writes before the object, or the response's.
func reviewUID(b []byte) []byte {
	const key = `"uid":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return nil
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j <= 0 {
		return nil
	}
	return rest[:j]
}
