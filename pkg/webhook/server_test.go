package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// TestServerServesAndReloadsCertificates starts the real HTTPS server on a
// loopback port, admits a pod through it, replaces tls.crt and tls.key in
// --cert-dir, and sees the new certificate served without a restart. HTTP/2
// is not offered by default. Cancelling the context stops it cleanly.
func TestServerServesAndReloadsCertificates(t *testing.T) {
	dir := t.TempDir()
	first := writeServingCert(t, dir, 1)
	cfg := DefaultConfig()
	cfg.CertDir = dir
	cfg.Port = freePort(t)
	srv := NewWebhookServer(cfg, newTestMutator(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))

	serial := func() *big.Int {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}})
		if err != nil {
			return nil
		}
		defer conn.Close()
		if p := conn.ConnectionState().NegotiatedProtocol; p == "h2" {
			t.Errorf("HTTP/2 negotiated; it should be off by default")
		}
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	waitFor(t, 10*time.Second, "server to serve the first certificate", func() bool { return bigEq(serial(), first.SerialNumber) })

	pool := x509.NewCertPool()
	pool.AddCert(first)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := client.Post("https://"+addr+MutatePath, "application/json", bytes.NewReader(reviewBytes(t, taskPod(t, 3), admissionv1.Create)))
	if err != nil {
		t.Fatal(err)
	}
	var ar admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&ar); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ar.Response == nil || !ar.Response.Allowed || len(ar.Response.Patch) == 0 {
		t.Fatalf("response over HTTPS: %+v", ar.Response)
	}

	second := writeServingCert(t, dir, 2)
	waitFor(t, 20*time.Second, "server to reload the certificate", func() bool { return bigEq(serial(), second.SerialNumber) })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Start after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("server did not stop")
	}
}

func bigEq(a, b *big.Int) bool { return a != nil && b != nil && a.Cmp(b) == 0 }

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeServingCert writes a self-signed certificate for localhost and
// 127.0.0.1 as tls.crt and tls.key, each replaced by a rename as a
// Kubernetes Secret volume update would.
func writeServingCert(t *testing.T, dir string, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, block := range map[string]*pem.Block{
		"tls.key": {Type: "EC PRIVATE KEY", Bytes: keyDER},
		"tls.crt": {Type: "CERTIFICATE", Bytes: der},
	} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
