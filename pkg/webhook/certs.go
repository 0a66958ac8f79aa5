package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// addSelfManagedCerts sets up self mode on mgr: cert-controller keeps a CA
// and a serving certificate in one Secret and the CA in the webhook
// configuration, and certFiles copies the Secret's certificate into CertDir
// on every change. It returns a channel that closes once the files are
// there, and a readiness check that passes once they are and the webhook
// configuration trusts their CA.
//
// One replica writes: the rotator runs only on the leader (a Lease in
// secctx's namespace, see Run), so two replicas never race to create or
// rotate the Secret. Every replica, leader or not, serves the certificate
// from the Secret, so none ever serves one of its own making.
func addSelfManagedCerts(mgr manager.Manager, cfg Config, log logr.Logger) (<-chan struct{}, healthz.Checker, error) {
	c := cfg.Certificates
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.SecretName}
	dns := fmt.Sprintf("%s.%s.svc", c.ServiceName, c.Namespace)
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      key,
		CertDir:        cfg.CertDir,
		CAName:         "secctx-ca",
		CAOrganization: "secctx",
		DNSName:        dns,
		ExtraDNSNames:  []string{dns + ".cluster.local", c.ServiceName + "." + c.Namespace},
		// The rotator closes this on the leader only; readiness comes from
		// certFiles and the webhook configuration instead, on every replica.
		IsReady:                make(chan struct{}),
		Webhooks:               []rotator.WebhookInfo{{Name: c.WebhookConfigurationName, Type: rotator.Mutating}},
		FieldOwner:             "secctx",
		RequireLeaderElection:  true,
		EnableReadinessCheck:   true,
		CaCertDuration:         c.CAValidity.Duration,
		ServerCertDuration:     c.CertValidity.Duration,
		LookaheadInterval:      c.RenewBefore.Duration,
		RotationCheckFrequency: c.CheckInterval.Duration,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("set up certificate rotation: %w", err)
	}
	// A cache of this one Secret: secctx may read Secrets in its own
	// namespace only, and needs no others.
	secretCache, err := cache.New(mgr.GetConfig(), cache.Options{
		Scheme: mgr.GetScheme(),
		Mapper: mgr.GetRESTMapper(),
		ByObject: map[client.Object]cache.ByObject{&corev1.Secret{}: {
			Namespaces: map[string]cache.Config{c.Namespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", c.SecretName),
		}},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("watch secret %s: %w", key, err)
	}
	// Every replica serves from the Secret, so its cache runs on every
	// replica: a runnable that does not say otherwise runs on the leader only.
	if err := mgr.Add(everyReplica{secretCache}); err != nil {
		return nil, nil, err
	}
	files := &certFiles{cache: secretCache, key: key, dir: cfg.CertDir, log: log.WithName("cert-files"), written: make(chan struct{})}
	if err := mgr.Add(files); err != nil {
		return nil, nil, err
	}
	trusted := &caTrusted{api: mgr.GetAPIReader(), files: files, name: c.WebhookConfigurationName}
	return files.written, trusted.check, nil
}

// everyReplica runs a cache whatever the leader election says.
type everyReplica struct{ cache.Cache }

func (everyReplica) NeedLeaderElection() bool { return false }

// caTrusted is the readiness check of self mode: the files are written and
// the webhook configuration's caBundle holds their CA. Until the leader has
// injected the CA, the API server could not verify any replica.
type caTrusted struct {
	api   client.Reader
	files *certFiles
	name  string
	ok    atomic.Bool
}

func (t *caTrusted) check(r *http.Request) error {
	if t.ok.Load() {
		return nil
	}
	ca := t.files.currentCA()
	if ca == nil {
		return errCertsNotReady
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := t.api.Get(r.Context(), types.NamespacedName{Name: t.name}, mwc); err != nil {
		return fmt.Errorf("get mutating webhook configuration %s: %w", t.name, err)
	}
	for _, w := range mwc.Webhooks {
		if !bytes.Contains(w.ClientConfig.CABundle, bytes.TrimSpace(ca)) {
			return fmt.Errorf("mutating webhook configuration %s: webhook %s does not trust the serving certificate's CA yet", t.name, w.Name)
		}
	}
	t.ok.Store(true)
	return nil
}

// certFiles writes the Secret's tls.crt and tls.key into dir whenever they
// change. Reading the Secret directly, rather than mounting it, puts a new
// certificate in place in well under a second instead of the kubelet's sync
// period (about a minute), on first install and on rotation alike.
type certFiles struct {
	cache cache.Cache
	key   types.NamespacedName
	dir   string
	log   logr.Logger
	// written closes once the files are in place.
	written chan struct{}
	once    sync.Once
	mu      sync.Mutex
	ca      []byte // the CA of the files written last
}

func (f *certFiles) currentCA() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ca
}

// NeedLeaderElection is false: every replica serves its own files.
func (*certFiles) NeedLeaderElection() bool { return false }

func (f *certFiles) Start(ctx context.Context) error {
	inf, err := f.cache.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("watch secret %s: %w", f.key, err)
	}
	handle := func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok || s.Namespace != f.key.Namespace || s.Name != f.key.Name {
			return
		}
		crt, key := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]
		if err := f.write(crt, key); err != nil {
			f.log.Error(err, "write serving certificate", "secret", f.key.String())
			return
		}
		if len(crt) > 0 && len(key) > 0 && len(s.Data["ca.crt"]) > 0 {
			f.mu.Lock()
			f.ca = s.Data["ca.crt"]
			f.mu.Unlock()
			f.once.Do(func() { close(f.written) })
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// write replaces the files by rename, key first: the certificate watcher
// rejects a key that does not match the old certificate and keeps serving
// the old pair until the new certificate lands a moment later.
func (f *certFiles) write(crt, key []byte) error {
	if len(crt) == 0 || len(key) == 0 {
		return nil // not issued yet
	}
	if err := os.MkdirAll(f.dir, 0o700); err != nil {
		return err
	}
	changed := false
	for _, file := range []struct {
		name string
		data []byte
	}{{corev1.TLSPrivateKeyKey, key}, {corev1.TLSCertKey, crt}} {
		path := filepath.Join(f.dir, file.name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, file.data) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, file.data, 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
		changed = true
	}
	if changed {
		f.log.Info("serving certificate written", "dir", f.dir, "secret", f.key.String())
	}
	return nil
}

// gatedServer starts the webhook server once the certificate files exist:
// controller-runtime's server refuses to start without them.
type gatedServer struct {
	webhook.Server
	ready <-chan struct{}
}

func (g gatedServer) Start(ctx context.Context) error {
	select {
	case <-g.ready:
	case <-ctx.Done():
		return nil
	}
	return g.Server.Start(ctx)
}

var errCertsNotReady = errors.New("serving certificate not in place yet")
