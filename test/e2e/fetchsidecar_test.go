package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/test/framework"
)

// TestFetchInSidecar: inject.agent.fetchIn: sidecar, with AWS Secrets
// Manager (kumo), each pod run as a Job as Flyte runs tasks. A task that
// asks for a FILE and an ENV_VAR secret gets both, from a pod with no
// fetch init container: its one secctx container, the sidecar, fetched
// them before the task started. A task that asks for a secret that does
// not exist fails, and fast: its container's exec wrapper exits 1 with
// the store's reason as its termination message, and the pod is Failed,
// as the fetch init container would have failed it.
func TestFetchInSidecar(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	kumo := startStore(t, ctx, framework.StartKumo)
	created, err := kumoAdmin(kumo).CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("db-password"), SecretString: aws.String("aws-s3cr3t")})
	if err != nil {
		t.Fatal(err)
	}
	group, key, _ := strings.Cut(*created.ARN, ":secret:")
	group += ":secret"
	backend := framework.WithBackend("aws", "aws:\n  secretsManagerEndpoint: "+kumo.URL+"\n  stsEndpoint: "+kumo.URL+"\n", kumo.Addr)
	configure(t, ctx, func(c string) string { return framework.WithFetchIn("sidecar")(backend(c)) },
		`{"secrets": [{"group": "arn:aws:secretsmanager:us-east-1:000000000000:secret", "key": "probe", "mountRequirement": "FILE"}]}`)
	ns := namespace(t, ctx, nil)
	const role = "arn:aws:iam::123456789012:role/my-workflow-role"

	sc := fmt.Sprintf(`{"runAs": {"iamRole": %q},
	  "secrets": [{"group": %q, "key": %q, "mountRequirement": "FILE", "envVar": "DB_PASSWORD_PATH"},
	              {"group": %q, "key": %q, "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`, role, group, key, group, key)
	task := taskContainer("task")
	task.Command = []string{"/task", "-full", "env", "DB_PASSWORD", "DB_PASSWORD_PATH"}
	pod, logs, err := framework.RunJob(ctx, kube, taskPod(ns, "fetched", sc, true, task), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var inits []string
	for _, c := range pod.Spec.InitContainers {
		inits = append(inits, c.Name)
	}
	if !slices.Equal(inits, []string{"secctx-sidecar"}) {
		t.Errorf("init containers %v, want the sidecar alone", inits)
	}
	if pod.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("phase %s, want Succeeded; logs %v", pod.Status.Phase, logs)
	}
	path := "/etc/flyte/secrets/" + strings.ToLower(group) + "/" + key
	if want := "DB_PASSWORD = aws-s3cr3t\nDB_PASSWORD_PATH = " + path + "\n"; logs["task"] != want {
		t.Errorf("task: %q, want %q", logs["task"], want)
	}
	if !strings.Contains(logs["secctx-sidecar"], "all secrets written") || strings.Contains(logs["secctx-sidecar"], "aws-s3cr3t") {
		t.Errorf("the sidecar's log: want the fetch's last line and no value:\n%s", logs["secctx-sidecar"])
	}

	missing := fmt.Sprintf(`{"runAs": {"iamRole": %q}, "secrets": [{"group": %q, "key": "no-such-secret", "mountRequirement": "FILE"}]}`, role, group)
	task.Command = []string{"/task", "env", "HOSTNAME"}
	t0 := time.Now()
	pod, logs, err = framework.RunJob(ctx, kube, taskPod(ns, "not-fetched", missing, true, task), 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	if pod.Status.Phase != corev1.PodFailed {
		t.Fatalf("phase %s, want Failed; logs %v", pod.Status.Phase, logs)
	}
	var term *corev1.ContainerStateTerminated
	for _, s := range pod.Status.ContainerStatuses {
		if s.Name == "task" {
			term = s.State.Terminated
		}
	}
	want := "secctx-agent exec: the secrets could not be fetched, so the task does not start: secrets[0] (aws " + group + ":no-such-secret)"
	if term == nil || term.ExitCode != 1 || !strings.Contains(term.Message, want) || !strings.Contains(term.Message, "ResourceNotFoundException") {
		t.Errorf("the task's container: %+v\nwant exit 1 and a message with %q and ResourceNotFoundException", term, want)
	}
	if strings.Contains(logs["task"], "HOSTNAME") {
		t.Errorf("the task ran: %q", logs["task"])
	}
	t.Logf("a secret that does not exist failed the pod in %.1fs: %s", took.Seconds(), term.Message)
	if took > time.Minute {
		t.Errorf("the pod took %s to fail: a missing secret is not retried", took)
	}
}
