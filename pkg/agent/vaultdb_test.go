package agent

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	vault "github.com/hashicorp/vault/api"

	"github.com/secctx/secctx/internal/pgtest"
	"github.com/secctx/secctx/pkg/agentapi"
)

// postgresServer runs a real PostgreSQL on 127.0.0.1 until the test ends.
func postgresServer(t testing.TB) *pgtest.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no real database")
	}
	return pgtest.ForTest(context.Background(), t)
}

// TestRefreshVaultDB: Vault's database engine, against a real PostgreSQL.
// The fetch reads a database user (so that a role that may not read it
// fails the pod at once) and revokes it with its login as it ends; the
// sidecar reads its own before the task may start, renews its lease,
// replaces it before the lease's max TTL, and keeps its login past the
// token's max TTL without cutting a lease short. At every moment the
// files hold a username and password that log in. When the sidecar stops,
// every database user Vault made is gone.
func TestRefreshVaultDB(t *testing.T) {
	pg := postgresServer(t)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	addr := vaultServer(t, key)
	root, _ := vault.NewClient(&vault.Config{Address: addr})
	root.SetToken("root")
	must := func(_ *vault.Secret, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := root.Sys().Mount("database", &vault.MountInput{Type: "database"}); err != nil {
		t.Fatal(err)
	}
	must(root.Logical().Write("database/config/pg", map[string]any{
		"plugin_name": "postgresql-database-plugin", "allowed_roles": "app",
		"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", pg.Port),
		"username":       "postgres", "password": pg.Password,
	}))
	must(root.Logical().Write("database/roles/app", map[string]any{
		"db_name":             "pg",
		"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`},
		"default_ttl":         "3s", "max_ttl": "8s",
	}))
	if err := root.Sys().PutPolicy("db", `path "database/creds/app" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	// The login outlives neither: it is renewed, then replaced, while
	// leases it read are in use.
	must(root.Logical().Write("auth/jwt/role/task", map[string]any{
		"role_type": "jwt", "bound_audiences": []string{"vault"}, "user_claim": "sub",
		"bound_subject": "system:serviceaccount:team-a:task", "token_policies": []string{"db"},
		"token_ttl": "6s", "token_max_ttl": "14s",
	}))
	dir := t.TempDir()
	db := func(field, key string) agentapi.Secret {
		return agentapi.Secret{Field: field, ID: "database/creds/app", Key: key, Engine: "db", Leased: true, File: filepath.Join(dir, "database/creds/app", key)}
	}
	fc := vaultFetchConfig(t, addr, key, "system:serviceaccount:team-a:task", db("secrets[0]", "username"), db("secrets[1]", "password"))
	fc.SetDir = dir
	read := func() (string, string) {
		u, _ := os.ReadFile(filepath.Join(dir, "database/creds/app/username"))
		p, _ := os.ReadFile(filepath.Join(dir, "database/creds/app/password"))
		return string(u), string(p)
	}
	if err := Fetch(context.Background(), fc, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	fetchUser, fetchPassword := read()
	if !strings.HasPrefix(fetchUser, "v-") {
		t.Fatalf("the fetch wrote username %q", fetchUser)
	}
	// The fetch's login is revoked, and its database user with it: the
	// role is gone well before its lease's 3 s (an expired VALID UNTIL
	// would refuse the login, but leave the role).
	if _, err := pg.Query(fetchUser, fetchPassword, "select 1"); err != nil {
		t.Logf("the fetch's user already refused: %v", err)
	}
	waitFor(t, "the fetch's database user dropped", 1500*time.Millisecond, func() bool {
		n, err := pg.Query("postgres", pg.Password, "select count(*) from pg_roles where rolname = '"+fetchUser+"'")
		return err == nil && n == "0"
	})

	cfg := DefaultRefreshConfig()
	cfg.Fetch, cfg.Interval, cfg.MinBackoff = fc, time.Hour, 100*time.Millisecond
	logs := &syncBuffer{}
	status := filepath.Join(dir, StatusName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunSidecar(ctx, SidecarConfig{Refresh: &cfg, Status: status}, testLogger(logs)) }()
	waitFor(t, "the sidecar's own database user", 10*time.Second, func() bool { _, ok := Check(status); return ok })
	if u, _ := read(); u == fetchUser {
		t.Fatalf("ready with the fetch's database user %s, which died with the fetch's login", u)
	}

	users, checks := map[string]bool{}, 0
	for end := time.Now().Add(25 * time.Second); time.Now().Before(end); time.Sleep(300 * time.Millisecond) {
		u, p := read()
		got, err := pg.Query(u, p, "select current_user")
		if err != nil || got != u {
			t.Errorf("%.1fs: the files' database user does not log in: %q, %v", 25-time.Until(end).Seconds(), got, err)
		}
		users[u] = true
		checks++
	}
	t.Logf("%d logins with the files' credentials over 25 s, %d database users", checks, len(users))
	if len(users) < 3 {
		t.Errorf("%d database users over 25 s with a lease max TTL of 8 s: want at least 3", len(users))
	}
	for _, w := range []string{"vault lease renewed", "vault lease near its max TTL", "vault logged in again", "vault login replaced: the leases it read are read anew"} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("no %q in the logs:\n%s", w, logs)
		}
	}
	if msg, ok := Check(status); !ok || msg != "" {
		t.Errorf("status: %q, %v", msg, ok)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if left := loginTokens(t, addr); len(left) != 0 {
		t.Errorf("%d login tokens left after the sidecar stopped, want 0\n%s", len(left), logs)
	}
	waitFor(t, "every database user Vault made dropped", 1500*time.Millisecond, func() bool {
		n, err := pg.Query("postgres", pg.Password, "select count(*) from pg_roles where rolname like 'v-%'")
		return err == nil && n == "0"
	})
}

// TestRefreshLeaseKeysTogether: the keys of one leased path are one
// database user. When one cannot be read in a round, neither is written:
// the set never holds one user's name with another's password.
func TestRefreshLeaseKeysTogether(t *testing.T) {
	dir := t.TempDir()
	var gen atomic.Int64
	var failUser atomic.Bool
	gen.Store(1)
	RegisterStore("test-lease", func(context.Context, FetchConfig, []agentapi.Secret) (Store, error) {
		return storeFunc(func(_ context.Context, s agentapi.Secret) ([]byte, error) {
			if s.Key == "username" && failUser.Load() {
				return nil, errors.New("HTTP 503 Service Unavailable")
			}
			return []byte(fmt.Sprintf("%s-%d", s.Key, gen.Load())), nil
		}), nil
	})
	t.Cleanup(func() { delete(stores, "test-lease") })
	cfg := DefaultRefreshConfig()
	cfg.Fetch.SetDir, cfg.Fetch.Mode = dir, 0o444
	for i, k := range []string{"username", "password"} {
		cfg.Fetch.Secrets = append(cfg.Fetch.Secrets, agentapi.Secret{Field: fmt.Sprintf("secrets[%d]", i), Store: "test-lease",
			ID: "database/creds/app", Key: k, Leased: true, File: filepath.Join(dir, "creds", k)})
	}
	cfg.Interval, cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 10*time.Millisecond, 20*time.Millisecond
	if _, err := writeSet(dir, map[string][]byte{"creds/username": []byte("username-0"), "creds/password": []byte("password-0")}, 0o444); err != nil {
		t.Fatal(err)
	}
	status := filepath.Join(dir, StatusName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- RunSidecar(ctx, SidecarConfig{Refresh: &cfg, Status: status}, testLogger(logs)) }()
	read := func() string {
		u, _ := os.ReadFile(filepath.Join(dir, "creds/username"))
		p, _ := os.ReadFile(filepath.Join(dir, "creds/password"))
		return string(u) + " " + string(p)
	}
	waitFor(t, "the sidecar's own user", 5*time.Second, func() bool { return read() == "username-1 password-1" })
	failUser.Store(true)
	gen.Store(2)
	waitFor(t, "the failure in the status", 5*time.Second, func() bool {
		msg, _ := Check(status)
		return strings.Contains(msg, "secrets[1]: not refreshed, the last value is kept: another key of the same lease could not be read")
	})
	for range 10 {
		if got := read(); got != "username-1 password-1" {
			t.Fatalf("with the username unreadable the set is %q: a user's name with another's password", got)
		}
		time.Sleep(20 * time.Millisecond)
	}
	failUser.Store(false)
	gen.Store(3)
	waitFor(t, "both keys of the next user", 5*time.Second, func() bool { return read() == "username-3 password-3" })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
