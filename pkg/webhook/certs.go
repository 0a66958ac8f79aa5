package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-logr/logr"
	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
)

// addSelfManagedCerts sets up self mode on mgr: cert-controller keeps a CA
// and a serving certificate in one Secret and the CA in the webhook
// configuration, and certFiles copies the Secret's certificate into CertDir
// on every change. The returned channel closes once the files are there and
// the CA is injected.
//
// Every replica runs the rotator. They share the Secret: writes carry the
// resourceVersion they read, so when two replicas start on an empty Secret
// one write wins, the other gets a conflict, re-reads and uses the winner's
// CA. No replica ever serves a certificate of its own making.
func addSelfManagedCerts(mgr manager.Manager, cfg Config, log logr.Logger) (<-chan struct{}, error) {
	c := cfg.Certificates
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.SecretName}
	ready := make(chan struct{})
	dns := fmt.Sprintf("%s.%s.svc", c.ServiceName, c.Namespace)
	err := rotator.AddRotator(mgr, &rotator.CertRotator{
		SecretKey:      key,
		CertDir:        cfg.CertDir,
		CAName:         "secctx-ca",
		CAOrganization: "secctx",
		DNSName:        dns,
		ExtraDNSNames:  []string{dns + ".cluster.local", c.ServiceName + "." + c.Namespace},
		IsReady:        ready,
		Webhooks:       []rotator.WebhookInfo{{Name: c.WebhookConfigurationName, Type: rotator.Mutating}},
		FieldOwner:     "secctx",
		// Each replica must see its own files and readiness; a leader-only
		// rotator would leave the others unready.
		RequireLeaderElection:  false,
		EnableReadinessCheck:   true,
		CaCertDuration:         c.CAValidity.Duration,
		ServerCertDuration:     c.CertValidity.Duration,
		LookaheadInterval:      c.RenewBefore.Duration,
		RotationCheckFrequency: c.CheckInterval.Duration,
	})
	if err != nil {
		return nil, fmt.Errorf("set up certificate rotation: %w", err)
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
		return nil, fmt.Errorf("watch secret %s: %w", key, err)
	}
	if err := mgr.Add(secretCache); err != nil {
		return nil, err
	}
	files := &certFiles{cache: secretCache, key: key, dir: cfg.CertDir, log: log.WithName("cert-files")}
	if err := mgr.Add(files); err != nil {
		return nil, err
	}
	return ready, nil
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
		if err := f.write(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]); err != nil {
			f.log.Error(err, "write serving certificate", "secret", f.key.String())
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
