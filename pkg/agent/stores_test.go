package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/secctx/secctx/pkg/agentapi"
)

// testPKI is a CA and a server certificate it signs for hosts (IP
// addresses or names): the servers' TLS config, and the CA as PEM, for a
// store's CA bundle. The system's CAs do not know it: a store that
// ignored its bundle would fail.
func testPKI(t testing.TB, hosts ...string) (server *tls.Config, caPEM string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "secctx test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	return server, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
}

// tlsTestServer serves h over TLS on loopback with conf's certificate
// until the test ends.
func tlsTestServer(t testing.TB, conf *tls.Config, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = conf.Clone()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// fakeStore is a store of the test's, to see what Fetch asks of stores.
type fakeStore struct {
	name   string
	values map[string]string // by id; a missing id is a permanent error
	events *[]string
}

func (f *fakeStore) Read(_ context.Context, s agentapi.Secret) ([]byte, error) {
	*f.events = append(*f.events, "read "+f.name+" "+s.ID)
	v, ok := f.values[s.ID]
	if !ok {
		return nil, Permanent(errors.New("no such secret"))
	}
	return []byte(v), nil
}

func (f *fakeStore) Close(context.Context, logr.Logger) {
	*f.events = append(*f.events, "close "+f.name)
}

// registerFakeStores adds stores named names with RegisterStore, each
// recording what it is asked into events, for the test's length.
func registerFakeStores(t *testing.T, events *[]string, values map[string]string, names ...string) {
	for _, name := range names {
		RegisterStore(name, func(_ context.Context, _ FetchConfig, secrets []agentapi.Secret) (Store, error) {
			ids := make([]string, len(secrets))
			for i, s := range secrets {
				ids[i] = s.ID
			}
			*events = append(*events, "open "+name+" "+strings.Join(ids, ","))
			return &fakeStore{name: name, values: values, events: events}, nil
		})
		t.Cleanup(func() { delete(stores, name) })
	}
}

// TestFetchOpensEachStoreOnce: a fetch opens each store its secrets name
// once, in the order of first use, with that store's secrets alone; reads
// the secrets in their order; and closes every store it opened, the last
// opened first, whether the reads succeed or not.
func TestFetchOpensEachStoreOnce(t *testing.T) {
	var events []string
	values := map[string]string{"a1": "v-a1", "a2": "v-a2", "b1": "v-b1"}
	registerFakeStores(t, &events, values, "test-a", "test-b", "test-unused")
	dir := t.TempDir()
	secret := func(i int, store, id string) agentapi.Secret {
		return agentapi.Secret{Field: "secrets[" + string(rune('0'+i)) + "]", Store: store, ID: id, File: filepath.Join(dir, id)}
	}
	cfg := fastConfig("", secret(0, "test-b", "b1"), secret(1, "test-a", "a1"), secret(2, "test-b", "b1"), secret(3, "test-a", "a2"))
	logs := &syncBuffer{}
	if err := Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
		t.Fatalf("Fetch: %v\n%s", err, logs)
	}
	want := []string{"open test-b b1,b1", "open test-a a1,a2", "read test-b b1", "read test-a a1", "read test-b b1", "read test-a a2", "close test-a", "close test-b"}
	if !slices.Equal(events, want) {
		t.Errorf("events:\n%q\nwant\n%q", events, want)
	}
	for _, w := range []string{`"store":"test-b"`, `"stores":["test-b","test-a"]`} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("logs lack %s:\n%s", w, logs)
		}
	}

	events = nil
	cfg = fastConfig("", secret(0, "test-a", "a1"), secret(1, "test-b", "missing"))
	err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
	if err == nil || !strings.Contains(err.Error(), "secrets[1] (test-b missing): no such secret") {
		t.Errorf("err = %v; want it to name the field, the store and the secret", err)
	}
	if want := []string{"open test-a a1", "open test-b missing", "read test-a a1", "read test-b missing", "close test-b", "close test-a"}; !slices.Equal(events, want) {
		t.Errorf("events:\n%q\nwant\n%q", events, want)
	}
}

// TestFetchUnknownStore: a secret whose store is unknown or empty fails
// the fetch before any store is opened, naming its field.
func TestFetchUnknownStore(t *testing.T) {
	var events []string
	registerFakeStores(t, &events, nil, "test-a")
	for _, store := range []string{"", "nope", "AWS"} {
		cfg := fastConfig("", agentapi.Secret{Field: "secrets[0]", Store: "test-a", ID: "a", File: "/tmp/a"},
			agentapi.Secret{Field: "secrets[1]", Store: store, ID: "x", File: "/tmp/x"})
		cfg.Secrets[1].Store = store
		err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{}))
		if err == nil || !strings.Contains(err.Error(), `secrets[1]: store "`+store+`": unknown; one of aws, azure, test-a, vault`) {
			t.Errorf("store %q: err = %v", store, err)
		}
	}
	if len(events) != 0 {
		t.Errorf("stores were opened: %q", events)
	}
}

// TestFetchMultiStore: one fetch reads the secrets of Key Vault, of a
// store registered from outside the package (RegisterStore, as
// pkg/agent/gcp's is) and (but with -short) Vault, interleaved: each store
// is opened once, in the order of first use, with its own secrets and its
// own identity (one token at Entra, one Vault login, revoked at the end),
// every store is closed, and every file is written.
func TestFetchMultiStore(t *testing.T) {
	tlsConf, caPEM := testPKI(t, "127.0.0.1", "x.vault.azure.net")
	e := newEntra(t, tlsConf, fakeJWT(`{"sub":"system:serviceaccount:team-a:task"}`))
	kv := newKeyVault(t, tlsConf, e.srv.URL)
	var events []string
	registerFakeStores(t, &events, map[string]string{"db": "ext-db", "json": `{"user":"admin"}`}, "test-ext")
	for _, withVault := range []bool{false, true} {
		t.Run(map[bool]string{false: "azure,test-ext", true: "azure,test-ext,vault"}[withVault], func(t *testing.T) {
			events = nil
			dir := t.TempDir()
			secrets := []agentapi.Secret{
				{Field: "secrets[0]", Store: agentapi.StoreAzure, ID: "https://x.vault.azure.net/secrets/db", File: filepath.Join(dir, "azure-db")},
				{Field: "secrets[1]", Store: "test-ext", ID: "db", File: filepath.Join(dir, "ext-db")},
				{Field: "secrets[2]", Store: agentapi.StoreAzure, ID: "https://x.vault.azure.net/secrets/db", Version: oldVersion, File: filepath.Join(dir, "azure-db-old")},
				{Field: "secrets[3]", Store: "test-ext", ID: "json", File: filepath.Join(dir, "ext-json")},
			}
			want := map[string]string{"azure-db": "x-current", "ext-db": "ext-db", "azure-db-old": "x-old", "ext-json": `{"user":"admin"}`}
			wantStores := `"stores":["azure","test-ext"]`
			var vaultCfg VaultConfig
			if withVault {
				key, _ := rsa.GenerateKey(rand.Reader, 2048)
				addr := vaultServer(t, key)
				vaultCfg = vaultFetchConfig(t, addr, key, "system:serviceaccount:team-a:task").Vault
				secrets = slices.Insert(secrets, 2, agentapi.Secret{Field: "secrets[9]", Store: agentapi.StoreVault, ID: "secret/my-app", Key: "db_password", Engine: "kv2", File: filepath.Join(dir, "vault-db")})
				want["vault-db"] = "kv2-value"
				wantStores = `"stores":["azure","test-ext","vault"]`
			}
			cfg := fastConfig("", secrets...)
			cfg.Azure = azureIdentity(t, e, kv, caPEM)
			cfg.Vault = vaultCfg
			tokens, challenges := e.tokens.Load(), kv.challengesOf("x.vault.azure.net")
			logs := &syncBuffer{}
			if err := Fetch(context.Background(), cfg, testLogger(logs)); err != nil {
				t.Fatalf("Fetch: %v\n%s", err, logs)
			}
			for file, v := range want {
				if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || string(b) != v {
					t.Errorf("%s: %q, %v; want %q", file, b, err, v)
				}
			}
			if tk, c := e.tokens.Load()-tokens, kv.challengesOf("x.vault.azure.net")-challenges; tk != 1 || c != 1 {
				t.Errorf("%d tokens at Entra, %d Key Vault challenges; want 1 each", tk, c)
			}
			if want := []string{"open test-ext db,json", "read test-ext db", "read test-ext json", "close test-ext"}; !slices.Equal(events, want) {
				t.Errorf("the registered store was asked\n%q\nwant\n%q", events, want)
			}
			l := logs.String()
			if n := strings.Count(l, `"msg":"store opened"`); n != strings.Count(wantStores, ",")+1 {
				t.Errorf("%d stores opened:\n%s", n, l)
			}
			if !strings.Contains(l, wantStores) {
				t.Errorf("the logs lack %s:\n%s", wantStores, l)
			}
			if withVault {
				if !strings.Contains(l, "vault login token revoked") {
					t.Errorf("the Vault token was not revoked:\n%s", l)
				}
				if left := loginTokens(t, cfg.Vault.Address); len(left) != 0 {
					t.Errorf("%d Vault login tokens left", len(left))
				}
			}
		})
	}
}

// TestRegisterStore: a store is registered once, with a name and an
// opener; anything else is a programming error, which panics at init.
func TestRegisterStore(t *testing.T) {
	open := func(context.Context, FetchConfig, []agentapi.Secret) (Store, error) { return nil, nil }
	for name, f := range map[string]func(){
		"twice":     func() { RegisterStore(agentapi.StoreAWS, open) },
		"no name":   func() { RegisterStore("", open) },
		"no opener": func() { RegisterStore("test-nil", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	if _, ok := stores["test-nil"]; ok {
		t.Error("a nil opener was registered")
	}
}

// TestFetchMountPoints: the fetch makes the directories where the kubelet
// mounts Kubernetes Secrets inside the fetched volume (a pod that mixes
// stores), with the files' read bits, and refuses one that is not a clean
// absolute path.
func TestFetchMountPoints(t *testing.T) {
	var events []string
	registerFakeStores(t, &events, map[string]string{"a1": "v-a1"}, "test-a")
	dir := t.TempDir()
	cfg := fastConfig("", agentapi.Secret{Field: "secrets[0]", Store: "test-a", ID: "a1", File: filepath.Join(dir, "a1")})
	cfg.MountPoints = []string{filepath.Join(dir, "db"), filepath.Join(dir, "certs", "v1")}
	cfg.Mode = 0o440
	if err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{})); err != nil {
		t.Fatal(err)
	}
	for _, d := range cfg.MountPoints {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
			t.Errorf("mount point %s: %v %v, want a directory 0750", d, fi, err)
		}
	}
	cfg.MountPoints = []string{filepath.Join(dir, "x") + "/../../etc"}
	if err := Fetch(context.Background(), cfg, testLogger(&syncBuffer{})); err == nil || !strings.Contains(err.Error(), "must be a clean absolute path") {
		t.Errorf("a mount point with ..: %v", err)
	}
	got, err := parseFetchArgs([]string{`--mount-points=["/etc/flyte/secrets/db"]`, `--secrets=[]`}, io.Discard)
	if err != nil || !slices.Equal(got.MountPoints, []string{"/etc/flyte/secrets/db"}) {
		t.Errorf("parse --mount-points: %v %v", got.MountPoints, err)
	}
}
