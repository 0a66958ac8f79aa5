package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/test/framework"
)

// grantSecretGet gives secctx get on Secrets, as the chart does with
// referenceChecks on; config/ (which the suite deploys) leaves it out.
func grantSecretGet(t *testing.T, ctx context.Context) {
	t.Helper()
	const name = "secctx-e2e-reference-checks"
	rbac := kube.Client.RbacV1()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "secctx", Namespace: deployed.Namespace}}}
	if _, err := rbac.ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbac.ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	if _, err := rbac.ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rbac.ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// TestReferenceChecks: with referenceChecks deny, a pod that refers to a
// Secret or a key that does not exist is refused, naming it, and one whose
// Secret and key exist is admitted; with warn, the same pods are admitted
// with warnings that kubectl shows.
func TestReferenceChecks(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	t.Cleanup(cancel)
	grantSecretGet(t, ctx)
	ns := teamNamespace(t, ctx, "e2e-refs", "refs") // Secret team-db, key password
	const (
		missingSecret = `{"secrets": [{"group": "team-cache", "key": "password", "mountRequirement": "FILE"}]}`
		missingKey    = `{"secrets": [{"group": "team-db", "key": "Password", "mountRequirement": "ENV_VAR"}]}`
	)
	const (
		secretMsg = `secrets[0]: Secret "team-cache" not found in namespace e2e-refs`
		keyMsg    = `secrets[0]: Secret "team-db" in namespace e2e-refs has no key "Password" (it has "password": keys are case-sensitive)`
	)
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

	// The probe refers to a Secret default does not have.
	restore := reconfigured(t, func() (func(context.Context) error, error) {
		return deployed.ConfigureRefusing(ctx, kube, framework.WithReferenceChecks("deny"), missingSecret)
	})
	for sc, want := range map[string]string{missingSecret: secretMsg, missingKey: keyMsg} {
		_, err := kube.Client.CoreV1().Pods(ns).Create(ctx, taskPod(ns, "refused", sc, true, taskContainer("task")), dryRun)
		want = "pod e2e-refs/refused: " + want + ": the pod could not start (referenceChecks: deny)"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("deny: %v\nwant a refusal saying %s", err, want)
		}
	}
	task := taskContainer("task", "-full", "env", "DB_PASSWORD")
	if _, logs := runPod(t, ctx, taskPod(ns, "admitted", teamSC, true, task)); logs["task"] != "DB_PASSWORD = p0licy\n" {
		t.Errorf("deny: the pod whose Secret and key exist: %q", logs["task"])
	}
	if err := restore(ctx); err != nil {
		t.Fatal(err)
	}
	// What one check costs: a GET of a Secret, as secctx makes it.
	var took []time.Duration
	for range 20 {
		t0 := time.Now()
		if _, err := kube.Client.CoreV1().Secrets(ns).Get(ctx, "team-db", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
		took = append(took, time.Since(t0))
	}
	slices.Sort(took)
	t.Logf("Secret GET: median %v, max %v of 20", took[10], took[19])

	manifest := func(sc string) string { return podManifest(ns, "warned", sc) }
	// The CLI, with --kubeconfig, notes the same problems offline.
	file := filepath.Join(t.TempDir(), "pod.yaml")
	if err := os.WriteFile(file, []byte(manifest(missingKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runSecctx(t, "inject", "--kubeconfig", kube.Kubeconfig, "-f", file); code != 0 || !strings.Contains(errOut, "note: reference check: "+keyMsg) {
		t.Errorf("secctx inject --kubeconfig: exit %d, %q; want a note saying %s", code, errOut, keyMsg)
	}

	const warn = "Warning: reference check: "
	reconfigured(t, func() (func(context.Context) error, error) {
		return deployed.Reconfigure(ctx, kube, framework.WithReferenceChecks("warn"),
			warns(manifest(missingSecret), warn+secretMsg, true), warns(manifest(missingSecret), warn, false))
	})
	for sc, want := range map[string]string{missingKey: keyMsg, teamSC: ""} {
		_, stderr, err := kube.Kubectl(ctx, strings.NewReader(manifest(sc)), "create", "--dry-run=server", "-f", "-")
		switch {
		case err != nil:
			t.Errorf("warn: %s refused: %v", sc, err)
		case want == "" && strings.Contains(stderr, "Warning"):
			t.Errorf("warn: %s: kubectl said %q, want no warning", sc, stderr)
		case want != "" && !strings.Contains(stderr, warn+want):
			t.Errorf("warn: %s: kubectl said %q, want %q", sc, stderr, warn+want)
		}
	}
}
