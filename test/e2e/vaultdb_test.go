package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/internal/pgtest"
	"github.com/secctx/secctx/test/framework"
)

// TestRefreshVaultDB: Vault's database engine in agent mode, on a real
// pod, against a real PostgreSQL. A task watches the username and
// password files of database/creds/app for 70 s; the leases last 6 s, at
// most 15 s, the Vault login 10 s, at most 25 s. The task starts with the
// sidecar's own user, sees it replaced before every max TTL, never reads
// a missing or empty file, and the user in its files logs in; when the
// pod ends, no database user Vault made is left.
func TestRefreshVaultDB(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	pg := pgtest.ForTest(ctx, t)
	ns := namespace(t, ctx, nil)
	v := vaultForCluster(t, ctx, ns)
	root, _ := vault.NewClient(&vault.Config{Address: v.URL})
	root.SetToken("root")
	// In this order: the engine, its connection and role, then the
	// login's role.
	if err := root.Sys().MountWithContext(ctx, "database", &vault.MountInput{Type: "database"}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicyWithContext(ctx, "db", `path "database/creds/app" { capabilities = ["read"] }`); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		path string
		data map[string]any
	}{
		{"database/config/pg", map[string]any{"plugin_name": "postgresql-database-plugin", "allowed_roles": "app", "username": "postgres", "password": pg.Password,
			"connection_url": fmt.Sprintf("postgresql://{{username}}:{{password}}@127.0.0.1:%d/postgres?sslmode=disable", pg.Port)}},
		{"database/roles/app", map[string]any{"db_name": "pg", "default_ttl": "6s", "max_ttl": "15s",
			"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`}}},
		{"auth/kubernetes/role/task", map[string]any{"bound_service_account_names": []string{"task-sa"}, "bound_service_account_namespaces": []string{ns},
			"token_policies": []string{"db"}, "token_ttl": "10s", "token_max_ttl": "25s"}},
	} {
		if _, err := root.Logical().WriteWithContext(ctx, w.path, w.data); err != nil {
			t.Fatalf("%s: %v", w.path, err)
		}
	}
	stores := framework.WithStores(fmt.Sprintf(`backends:
- group: database/*
  store: vault
vault:
  mode: agent
  role: task
  kvVersion: "2"
  address: %s
`, v.URL), v.Addr)
	configure(t, ctx, func(c string) string { return framework.WithRefresh(600)(stores(c)) },
		`{"secrets": [{"group": "database/creds/probe", "groupVersion": "db", "key": "username", "mountRequirement": "FILE"}]}`)
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "task-sa"}})

	files := []string{"database/creds/app/db/username", "database/creds/app/db/password"}
	sc := `{"runAs": {"k8sServiceAccount": "task-sa"}, "secrets": [
	  {"group": "database/creds/app", "groupVersion": "db", "key": "username", "mountRequirement": "FILE"},
	  {"group": "database/creds/app", "groupVersion": "db", "key": "password", "mountRequirement": "FILE"}]}`
	task := taskContainer("main")
	task.Command = append([]string{"/task", "-full", "watch", "70s"}, files...)
	p := taskPod(ns, "vault-db", sc, true, task)
	pods := kube.Client.CoreV1().Pods(ns)
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	logs := func(container string) string {
		b, _ := pods.GetLogs(p.Name, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
		return string(b)
	}
	// The latest user the task saw logs in, while the task runs (once it
	// ends, the sidecar is stopped, and its users are dropped).
	line := regexp.MustCompile(`(?m) database/creds/app/db/(username|password) = (\S+)$`)
	latest := func() (user, password string, running bool) {
		l := logs("main")
		for _, m := range line.FindAllStringSubmatch(l, -1) {
			if m[1] == "username" {
				user = m[2]
			} else {
				password = m[2]
			}
		}
		return user, password, !strings.Contains(l, "\nreads ")
	}
	logins, failedLogins := 0, 0
	err := framework.Poll(ctx, 3*time.Minute, func() (bool, error) {
		got, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil || got.Status.Phase == corev1.PodSucceeded || got.Status.Phase == corev1.PodFailed {
			return true, err
		}
		if u, pw, running := latest(); running && u != "" && pw != "" {
			if _, err := pg.Query(u, pw, "select 1"); err == nil {
				logins++
			} else if u2, pw2, running := latest(); running && u2 == u && pw2 == pw {
				// Not a set caught mid-change: the files' user fails.
				failedLogins++
				t.Errorf("the task's database user does not log in: %v", err)
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	final, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	taskLog, side, fetch := logs("main"), logs("secctx-sidecar"), logs("secctx-fetch")
	if final.Status.Phase != corev1.PodSucceeded || failedLogins > 0 {
		t.Errorf("phase %s (want Succeeded), %d failed logins\ntask:\n%s\nsidecar:\n%s\nfetch:\n%s", final.Status.Phase, failedLogins, taskLog, side, fetch)
	}
	users := map[string]bool{}
	for _, m := range line.FindAllStringSubmatch(taskLog, -1) {
		if m[1] == "username" {
			users[m[2]] = true
		}
	}
	t.Logf("the task saw %d database users in 70 s; %d logins with the latest while it ran", len(users), logins)
	if len(users) < 4 {
		t.Errorf("%d database users in 70 s with a lease max TTL of 15 s: want at least 4\n%s", len(users), taskLog)
	}
	if logins == 0 {
		t.Error("no login with the task's database user succeeded")
	}
	if !strings.Contains(taskLog, ", failed 0\n") {
		t.Errorf("reads failed or found an empty file while the user was replaced:\n%s", taskLog)
	}
	for _, w := range []string{"vault lease renewed", "vault lease near its max TTL", "vault login token revoked"} {
		if !strings.Contains(side, w) {
			t.Errorf("the sidecar's log has no %q:\n%s", w, side)
		}
	}
	for u := range users {
		if strings.Contains(side, u) || strings.Contains(fetch, u) {
			t.Errorf("a database user is in the agent's logs")
		}
	}
	err = framework.Poll(ctx, 30*time.Second, func() (bool, error) {
		n, err := pg.Query("postgres", pg.Password, "select count(*) from pg_roles where rolname like 'v-%'")
		return err == nil && n == "0", nil
	})
	if err != nil {
		n, _ := pg.Query("postgres", pg.Password, "select string_agg(rolname, ' ') from pg_roles where rolname like 'v-%'")
		t.Errorf("database users left after the pod ended: %s", n)
	}
}
