package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/test/framework"
)

// policyFor is a SecurityContextPolicy allowing the namespaces labelled
// secctx-e2e-team in teams to ask for Secrets named team-*.
func policyFor(teams ...string) string {
	return fmt.Sprintf(`apiVersion: secctx.dev/v1alpha1
kind: SecurityContextPolicy
metadata:
  name: e2e-teams
spec:
  namespaceSelector:
    matchExpressions:
    - {key: secctx-e2e-team, operator: In, values: [%s]}
  allow:
    secretGroups: ["team-*"]
    mountTypes: ["ANY", "ENV_VAR", "FILE"]
    backends: ["kubernetes"]
`, strings.Join(teams, ", "))
}

// teamNamespace makes a namespace labelled for team with Secret team-db.
func teamNamespace(t *testing.T, ctx context.Context, name, team string) string {
	t.Helper()
	if err := kube.CreateNamespace(ctx, name, map[string]string{"secctx-e2e-team": team}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kube.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "team-db"}, StringData: map[string]string{"password": "p0licy"}}
	if _, err := kube.Client.CoreV1().Secrets(name).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

const teamSC = `{"secrets": [{"group": "team-db", "key": "password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`

// TestPolicyEnforceAndAudit: in enforce mode a policy allows one namespace
// and the other is refused, naming what and why; editing the policy admits
// the other namespace's next pod within seconds, with no restart; in audit
// mode a pod no policy allows is admitted with a warning that kubectl
// shows.
func TestPolicyEnforceAndAudit(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	nsA := teamNamespace(t, ctx, "e2e-policy-a", "a")
	nsB := teamNamespace(t, ctx, "e2e-policy-b", "b")
	if _, _, err := kube.Kubectl(ctx, strings.NewReader(policyFor("a")), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _, _ = kube.Kubectl(context.Background(), nil, "delete", "securitycontextpolicy", "e2e-teams", "--ignore-not-found")
	})
	// The probe: a pod in default, which no policy selects.
	restore := reconfigured(t, func() (func(context.Context) error, error) {
		return deployed.ConfigureRefusing(ctx, kube, framework.WithPolicyMode("enforce"), teamSC)
	})

	task := taskContainer("task", "-full", "env", "DB_PASSWORD")
	_, logs := runPod(t, ctx, taskPod(nsA, "allowed", teamSC, true, task))
	if logs["task"] != "DB_PASSWORD = p0licy\n" {
		t.Errorf("team a's task: %q", logs["task"])
	}
	_, err := kube.Client.CoreV1().Pods(nsB).Create(ctx, taskPod(nsB, "refused", teamSC, true, task), metav1.CreateOptions{})
	want := `pod e2e-policy-b/refused: secctx.dev/security-context: not allowed by any SecurityContextPolicy for namespace e2e-policy-b: ` +
		`secrets[0].group "team-db"; secrets[0].backend "kubernetes"; secrets[0].mountRequirement "ENV_VAR" (no SecurityContextPolicy selects namespace e2e-policy-b)`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("team b's pod: %v\nwant a refusal saying %s", err, want)
	}

	// The policy now selects team b too: the next pod is admitted, with no
	// restart, as soon as the informer has the change.
	t0 := time.Now()
	if _, _, err := kube.Kubectl(ctx, strings.NewReader(policyFor("a", "b")), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	err = framework.Poll(ctx, 30*time.Second, func() (bool, error) {
		_, err := kube.Client.CoreV1().Pods(nsB).Create(ctx, taskPod(nsB, "after-edit", teamSC, true, task), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("team b's pod still refused 30 s after the policy was edited: %v", err)
	}
	t.Logf("policy edit effective in %.1fs", time.Since(t0).Seconds())

	// Audit: a namespace no policy selects gets a warning, and its pod.
	if err := restore(ctx); err != nil {
		t.Fatal(err)
	}
	nsC := teamNamespace(t, ctx, "e2e-policy-c", "c")
	pod := podManifest(nsC, "audited", teamSC)
	const warning = "Warning: policy audit: secctx.dev/security-context: not allowed by any SecurityContextPolicy for namespace e2e-policy-c"
	reconfigured(t, func() (func(context.Context) error, error) {
		restore, err := deployed.Reconfigure(ctx, kube, framework.WithPolicyMode("audit"), warns(pod, warning, true), warns(pod, warning, false))
		if err != nil {
			err = fmt.Errorf("audit mode: no warning for a pod no policy allows: %w", err)
		}
		return restore, err
	})
	_, stderr, err := kube.Kubectl(ctx, strings.NewReader(pod), "create", "-f", "-")
	if err != nil || !strings.Contains(stderr, warning) {
		t.Errorf("audit mode: %v; kubectl said %q, want the pod created with %q", err, stderr, warning)
	}
}

// warns waits until secctx's every answer to a server-side dry run of pod
// (a manifest) admits it with warning, as kubectl shows it, or, with want
// false, without it.
func warns(pod, warning string, want bool) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := deployed.WaitReady(ctx, kube, 2); err != nil {
			return err
		}
		n := 0
		return framework.Poll(ctx, 60*time.Second, func() (bool, error) {
			_, stderr, err := kube.Kubectl(ctx, strings.NewReader(pod), "create", "--dry-run=server", "-f", "-")
			if got := err == nil && strings.Contains(stderr, warning); got == want {
				n++
			} else {
				n = 0
			}
			return n >= 10, nil
		})
	}
}

// podManifest is a labelled pod asking for securityContext, as YAML for
// kubectl, which prints the warnings of its answer.
func podManifest(ns, name, securityContext string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  labels: {secctx.dev/inject: "true"}
  annotations:
    secctx.dev/security-context: '%s'
spec:
  containers: [{name: task, image: %s}]
`, name, ns, securityContext, framework.TaskImage)
}
