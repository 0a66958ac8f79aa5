package webhook

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

func TestCertFilesWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	f := &certFiles{dir: dir, log: logr.Discard()}
	read := func() (string, string) {
		crt, _ := os.ReadFile(filepath.Join(dir, "tls.crt"))
		key, _ := os.ReadFile(filepath.Join(dir, "tls.key"))
		return string(crt), string(key)
	}
	// A Secret that is not issued yet writes nothing.
	if err := f.write(nil, []byte("k")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("files written before the certificate exists: %v", err)
	}
	if err := f.write([]byte("c1"), []byte("k1")); err != nil {
		t.Fatal(err)
	}
	if c, k := read(); c != "c1" || k != "k1" {
		t.Errorf("got %q %q", c, k)
	}
	st1, _ := os.Stat(filepath.Join(dir, "tls.crt"))
	time.Sleep(10 * time.Millisecond)
	if err := f.write([]byte("c1"), []byte("k1")); err != nil {
		t.Fatal(err)
	}
	// Unchanged content is not rewritten: no reload for nothing.
	if st2, _ := os.Stat(filepath.Join(dir, "tls.crt")); !st2.ModTime().Equal(st1.ModTime()) {
		t.Error("unchanged certificate rewritten")
	}
	if err := f.write([]byte("c2"), []byte("k2")); err != nil {
		t.Fatal(err)
	}
	if c, k := read(); c != "c2" || k != "k2" {
		t.Errorf("after rotation got %q %q", c, k)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(m) > 0 {
		t.Errorf("temporary files left: %v", m)
	}
	if st, _ := os.Stat(filepath.Join(dir, "tls.key")); st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode().Perm())
	}
}

type fakeServer struct {
	webhook.Server
	started chan struct{}
}

func (f *fakeServer) Start(context.Context) error { close(f.started); return nil }

// TestGatedServer: the webhook server starts only once the certificate is
// in place, and a shutdown before that is clean.
func TestGatedServer(t *testing.T) {
	ready := make(chan struct{})
	fs := &fakeServer{started: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- gatedServer{Server: fs, ready: ready}.Start(context.Background()) }()
	select {
	case <-fs.started:
		t.Fatal("started before the certificate was ready")
	case <-time.After(50 * time.Millisecond):
	}
	close(ready)
	select {
	case <-fs.started:
	case <-time.After(time.Second):
		t.Fatal("did not start once ready")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fs2 := &fakeServer{started: make(chan struct{})}
	if err := (gatedServer{Server: fs2, ready: make(chan struct{})}).Start(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fs2.started:
		t.Error("started after shutdown")
	default:
	}
}

func TestCertificatesConfigValidate(t *testing.T) {
	self := func(f func(*CertificatesConfig)) Config {
		c := DefaultConfig()
		c.Certificates.Mode = CertModeSelf
		c.Certificates.Namespace, c.Certificates.SecretName = "secctx-system", "secctx-webhook-tls"
		c.Certificates.ServiceName, c.Certificates.WebhookConfigurationName = "secctx-webhook", "secctx"
		if f != nil {
			f(&c.Certificates)
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{"defaults (provided)", DefaultConfig(), nil},
		{"self, complete", self(nil), nil},
		{"cert-manager", func() Config { c := DefaultConfig(); c.Certificates.Mode = CertModeCertManager; return c }(), nil},
		{"unknown mode", self(func(c *CertificatesConfig) { c.Mode = "auto" }), []string{`certificates.mode "auto": must be self, cert-manager or provided`}},
		{"self without names", self(func(c *CertificatesConfig) { c.Namespace, c.WebhookConfigurationName = "", "" }),
			[]string{"certificates.namespace: required when mode is self", "certificates.webhookConfigurationName: required when mode is self"}},
		{"renewal after expiry", self(func(c *CertificatesConfig) { c.RenewBefore = c.CertValidity }),
			[]string{"certificates.renewBefore 8760h0m0s: must be shorter than certValidity 8760h0m0s"}},
		{"zero validity", self(func(c *CertificatesConfig) { c.CAValidity.Duration = 0 }), []string{"certificates.caValidity 0s: must be positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %v", tt.wantErr)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
