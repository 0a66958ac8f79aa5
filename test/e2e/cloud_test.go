package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/secctx/secctx/test/cloud/azure"
	"github.com/secctx/secctx/test/cloud/gcp"
	"github.com/secctx/secctx/test/cloud/trust"
	"github.com/secctx/secctx/test/framework"
)

// The protocol test servers (test/cloud) run in this process, on the
// address the pods reach; each token exchange is checked with a
// TokenReview against the cluster's API server.
const (
	gcpProject = "secctx-e2e"
	gcpNumber  = "424242"
	gcpPool    = "e2e-pool"
	gcpProv    = "e2e-cluster"
	azTenant   = "11111111-2222-3333-4444-555555555555"
	azClient   = "00000000-0000-0000-0000-0000000e2e01"
	azNoGrant  = "00000000-0000-0000-0000-0000000e2e02"
	azVault    = "kv-e2e"
)

func startGCP(t *testing.T, ctx context.Context) *gcp.Server {
	t.Helper()
	srv, err := gcp.Start(ctx, gcp.Options{IP: *hostAddress, ProjectID: gcpProject, ProjectNumber: gcpNumber,
		Providers: []gcp.Provider{{Audience: gcp.ProviderAudience(gcpNumber, gcpPool, gcpProv)}},
		Reviewer:  trust.KubeReviewer{Client: kube.Client}, Pods: gcp.KubePods{Client: kube.Client}, ServiceAccounts: gcp.KubePods{Client: kube.Client},
		Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func startAzure(t *testing.T, ctx context.Context) *azure.Server {
	t.Helper()
	srv, err := azure.Start(ctx, azure.Options{IP: *hostAddress, TenantID: azTenant, Reviewer: trust.KubeReviewer{Client: kube.Client}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// federated is the pool's principal for a pod of ns/sa.
func federated(ns, sa string) string {
	return fmt.Sprintf("principal://iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s/subject/system:serviceaccount:%s:%s", gcpNumber, gcpPool, ns, sa)
}

func gcpSecret(t *testing.T, srv *gcp.Server, name, value string) {
	t.Helper()
	if _, err := srv.AddSecretVersion("projects/"+gcpProject+"/secrets/"+name, []byte(value)); err != nil {
		t.Fatal(err)
	}
}

// settings is inject's YAML for these stores.
func settings(t *testing.T, v map[string]any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// runJob runs the pod's spec as a Job, as workflow engines run tasks, and
// wants its pod to succeed.
func runJob(t *testing.T, ctx context.Context, pod *corev1.Pod) (*corev1.Pod, map[string]string) {
	t.Helper()
	got, logs, err := framework.RunJob(ctx, kube, pod, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("job %s: its pod's phase %s, want Succeeded; logs: %v", pod.Name, got.Status.Phase, logs)
	}
	return got, logs
}

// failedFetch waits for a pod whose fetch must fail, and returns the fetch's
// termination message; no task container may have run.
func failedFetch(t *testing.T, ctx context.Context, pod *corev1.Pod) string {
	t.Helper()
	if _, err := kube.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	err := framework.Poll(ctx, 90*time.Second, func() (bool, error) {
		var err error
		got, err = kube.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		return err == nil && (got.Status.Phase == corev1.PodFailed || got.Status.Phase == corev1.PodSucceeded), err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.PodFailed {
		t.Fatalf("pod %s: phase %s, want Failed", pod.Name, got.Status.Phase)
	}
	for _, s := range got.Status.ContainerStatuses {
		if s.State.Terminated != nil && s.State.Terminated.ExitCode == 0 {
			t.Errorf("container %s ran without its secret", s.Name)
		}
	}
	for _, s := range got.Status.InitContainerStatuses {
		if s.Name == "secctx-fetch" && s.State.Terminated != nil {
			return s.State.Terminated.Message
		}
	}
	return ""
}

// TestCloudStores: one installation with five stores routed by the
// secrets' groups (issue 23). A Job per cloud store reads FILE and ENV_VAR
// secrets as its own identity: Google Secret Manager through Workload
// Identity Federation (STS checks the pod's token with a TokenReview), Azure
// Key Vault through Azure Workload Identity (Entra checks it the same way).
// One Job's pod mixes Kubernetes, AWS, Vault, Google and Azure secrets in
// one fetch. A pod whose account has no grant is refused by the store, and the
// fetch's message names the secret and why.
func TestCloudStores(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	ns := namespace(t, ctx, map[string]map[string]string{"db": {"password": "k8s-s3cr3t"}})
	g := startGCP(t, ctx)
	az := startAzure(t, ctx)
	v := vaultForCluster(t, ctx, ns)
	kumo := startStore(t, ctx, framework.StartKumo)
	sm := kumoAdmin(kumo)
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("api-key"), SecretString: aws.String("aws-s3cr3t")})
	if err != nil {
		t.Fatal(err)
	}
	awsGroup, awsKey, _ := strings.Cut(*created.ARN, ":secret:")
	awsGroup += ":secret"

	gcpSecret(t, g, "db-password", "gcp-s3cr3t")
	gcpSecret(t, g, "gcp-db-password", "gcp-s3cr3t")
	gcpSecret(t, g, "db-creds", `{"user":"gcp-user","port":5432}`)
	for _, s := range []string{"db-password", "gcp-db-password", "db-creds"} {
		if err := g.Grant(federated(ns, "task-sa"), "projects/"+gcpProject+"/secrets/"+s); err != nil {
			t.Fatal(err)
		}
	}
	az.SetSecret(azVault, "storage-key", "azure-s3cr3t")
	az.SetSecret(azVault, "api-token", "azure-t0ken")
	az.AddFederatedCredential(azTenant, azClient, "system:serviceaccount:"+ns+":task-sa")
	az.AddFederatedCredential(azTenant, azNoGrant, "system:serviceaccount:"+ns+":nobody")
	az.Grant(azClient, azVault, "*")

	configure(t, ctx, framework.WithStores(settings(t, map[string]any{
		"backends": []any{map[string]any{"store": "aws"}, map[string]any{"store": "gcp"}, map[string]any{"store": "azure"},
			map[string]any{"group": "gcp-*", "store": "gcp"}, map[string]any{"group": "kv-*", "store": "azure"},
			map[string]any{"group": "secret/*", "store": "vault"}},
		"vault": map[string]any{"mode": "agent", "role": "task", "kvVersion": "2", "address": v.URL},
		"aws":   map[string]any{"secretsManagerEndpoint": kumo.URL, "stsEndpoint": kumo.URL},
		"gcp": map[string]any{"project": gcpProject, "endpoint": g.SecretManagerAddr(), "caBundle": g.CAPEM(),
			"federation": map[string]any{"audience": gcp.ProviderAudience(gcpNumber, gcpPool, gcpProv), "tokenURL": g.STSURL()}},
		"azure": map[string]any{"tenantID": azTenant, "authorityHost": az.AuthorityHost(), "caBundle": az.CAPEM(), "taskIdentity": true},
	}), kumo.Addr, v.Addr), `{"secrets": [{"group": "projects/`+gcpProject+`/secrets/probe", "mountRequirement": "FILE"}]}`)

	annotated := func(name, client string) *corev1.ServiceAccount {
		return &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"azure.workload.identity/client-id": client}}}
	}
	createServiceAccounts(t, ctx, ns, annotated("task-sa", azClient), annotated("nobody", azNoGrant))
	// The vault's name resolves to this machine, as DNS would on AKS.
	vaultHost := []corev1.HostAlias{{IP: *hostAddress, Hostnames: []string{azVault + ".vault.azure.net"}}}

	t.Run("gcp", func(t *testing.T) {
		file := taskContainer("file")
		file.Command = []string{"/task", "-full", "file-from-env", "DB_PASSWORD_PATH"}
		env := taskContainer("env")
		env.Command = []string{"/task", "-full", "env", "DB_USER"}
		sc := `{"runAs": {"k8sServiceAccount": "task-sa"}, "secrets": [
		  {"group": "gcp-db-password", "groupVersion": "1", "mountRequirement": "FILE", "envVar": "DB_PASSWORD_PATH"},
		  {"group": "projects/` + gcpProject + `/secrets/db-creds", "key": "user", "mountRequirement": "ENV_VAR", "envVar": "DB_USER"}]}`
		_, logs := runJob(t, ctx, taskPod(ns, "gcp-secret", sc, true, file, env))
		for name, want := range map[string]string{
			"file": "DB_PASSWORD_PATH = /etc/flyte/secrets/gcp-db-password/1 = gcp-s3cr3t\n",
			"env":  "DB_USER = gcp-user\n",
		} {
			if !strings.HasPrefix(logs[name], want) {
				t.Errorf("%s: got %q, want %q", name, logs[name], want)
			}
		}
		if strings.Contains(logs["secctx-fetch"], "gcp-s3cr3t") {
			t.Errorf("the fetch logged the value:\n%s", logs["secctx-fetch"])
		}
		// No grant: Secret Manager refuses the account's principal.
		msg := failedFetch(t, ctx, taskPod(ns, "gcp-refused", `{"runAs": {"k8sServiceAccount": "nobody"}, "secrets": [{"group": "gcp-db-password", "mountRequirement": "FILE"}]}`, true, taskContainer("main", "sleep", "1")))
		t.Logf("the fetch's termination message: %s", msg)
		for _, w := range []string{"secrets[0]", "projects/" + gcpProject + "/secrets/gcp-db-password", "permission denied"} {
			if !strings.Contains(strings.ToLower(msg), strings.ToLower(w)) {
				t.Errorf("the fetch's message does not say %q:\n%s", w, msg)
			}
		}
	})

	t.Run("azure", func(t *testing.T) {
		file := taskContainer("file")
		file.Command = []string{"/task", "-full", "file-from-env", "STORAGE_KEY_PATH", "AZURE_FEDERATED_TOKEN_FILE"}
		env := taskContainer("env")
		env.Command = []string{"/task", "-full", "env", "API_TOKEN", "AZURE_CLIENT_ID"}
		sc := `{"runAs": {"k8sServiceAccount": "task-sa"}, "secrets": [
		  {"group": "https://` + azVault + `.vault.azure.net/secrets/storage-key", "key": "storage-key", "mountRequirement": "FILE", "envVar": "STORAGE_KEY_PATH"},
		  {"group": "` + azVault + `", "key": "api-token", "mountRequirement": "ENV_VAR", "envVar": "API_TOKEN"}]}`
		p := taskPod(ns, "azure-secret", sc, true, file, env)
		p.Spec.HostAliases = vaultHost
		pod, logs := runJob(t, ctx, p)
		// inject.azure.taskIdentity: the task gets the fetch's identity
		// too, the account's application and the same projected token.
		for name, want := range map[string]string{
			"file": "STORAGE_KEY_PATH = /etc/flyte/secrets/storage-key = azure-s3cr3t\nAZURE_FEDERATED_TOKEN_FILE = /var/run/secrets/secctx/azure/azure-identity-token = ey",
			"env":  "API_TOKEN = azure-t0ken\nAZURE_CLIENT_ID = " + azClient + "\n",
		} {
			if !strings.HasPrefix(logs[name], want) {
				t.Errorf("%s: got %q, want %q", name, logs[name], want)
			}
		}
		for _, c := range pod.Spec.InitContainers {
			if c.Name == "secctx-fetch" && !slices.Contains(c.Env, corev1.EnvVar{Name: "AZURE_CLIENT_ID", Value: azClient}) {
				t.Errorf("the fetch does not run as the account's application %s: %v", azClient, c.Env)
			}
		}
		// A federated credential but no access policy: Key Vault refuses.
		bad := taskPod(ns, "azure-refused", `{"runAs": {"k8sServiceAccount": "nobody"}, "secrets": [{"group": "`+azVault+`", "key": "api-token", "mountRequirement": "FILE"}]}`, true, taskContainer("main", "sleep", "1"))
		bad.Spec.HostAliases = vaultHost
		msg := failedFetch(t, ctx, bad)
		t.Logf("the fetch's termination message: %s", msg)
		for _, w := range []string{"secrets[0]", "api-token", "403"} {
			if !strings.Contains(msg, w) {
				t.Errorf("the fetch's message does not say %q:\n%s", w, msg)
			}
		}
	})

	t.Run("mixed", func(t *testing.T) {
		// Kubernetes (the kubelet), AWS, Vault, Google and Azure (one fetch),
		// as FILE and ENV_VAR, in one pod.
		files := taskContainer("files")
		files.Command = []string{"/task", "-full", "file-from-env", "K8S_PATH", "VAULT_PATH", "GCP_PATH", "AZURE_PATH"}
		envs := taskContainer("envs")
		envs.Command = []string{"/task", "-full", "env", "AWS_KEY", "GCP_USER"}
		sc := fmt.Sprintf(`{"runAs": {"k8sServiceAccount": "task-sa", "iamRole": "arn:aws:iam::123456789012:role/e2e"}, "secrets": [
		  {"group": "db", "key": "password", "mountRequirement": "FILE", "envVar": "K8S_PATH"},
		  {"group": %q, "key": %q, "mountRequirement": "ENV_VAR", "envVar": "AWS_KEY"},
		  {"group": "secret/my-app", "key": "db_password", "mountRequirement": "FILE", "envVar": "VAULT_PATH"},
		  {"group": "projects/%s/secrets/db-password", "mountRequirement": "FILE", "envVar": "GCP_PATH"},
		  {"group": "gcp-db-creds", "key": "user", "mountRequirement": "ENV_VAR", "envVar": "GCP_USER"},
		  {"group": "https://%s.vault.azure.net/secrets/storage-key", "mountRequirement": "FILE", "envVar": "AZURE_PATH"}]}`,
			awsGroup, awsKey, gcpProject, azVault)
		// gcp-db-creds is Google's by the gcp-* rule; db is no rule's, so
		// a Kubernetes Secret.
		gcpSecret(t, g, "gcp-db-creds", `{"user":"gcp-user"}`)
		if err := g.Grant(federated(ns, "task-sa"), "projects/"+gcpProject+"/secrets/gcp-db-creds"); err != nil {
			t.Fatal(err)
		}
		p := taskPod(ns, "mixed", sc, true, files, envs)
		p.Spec.HostAliases = vaultHost
		pod, logs := runJob(t, ctx, p)
		want := map[string]string{
			"files": "K8S_PATH = /etc/flyte/secrets/db/password = k8s-s3cr3t\n" +
				"VAULT_PATH = /etc/flyte/secrets/secret/my-app/db_password = vault-s3cr3t\n" +
				"GCP_PATH = /etc/flyte/secrets/projects/" + gcpProject + "/secrets/db-password = gcp-s3cr3t\n" +
				"AZURE_PATH = /etc/flyte/secrets/storage-key = azure-s3cr3t\n",
			"envs": "AWS_KEY = aws-s3cr3t\nGCP_USER = gcp-user\n",
		}
		for name, w := range want {
			if logs[name] != w {
				t.Errorf("%s: got %q, want %q", name, logs[name], w)
			}
		}
		n := 0
		for _, c := range pod.Spec.InitContainers {
			if c.Name == "secctx-fetch" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d fetch init containers, want one for every store", n)
		}
		t.Logf("fetch logs:\n%s", logs["secctx-fetch"])
	})
}

// TestGCPMetadataServer: GKE Workload Identity. The fetch asks the
// metadata server (found through GCE_METADATA_HOST) for the pod's token;
// the server knows the pod by its address and answers only after a delay,
// as GKE's may not in a pod's first seconds (google-cloud-go #14349): the
// fetch waits, retrying, and the task starts with its secret.
func TestGCPMetadataServer(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	ns := namespace(t, ctx, nil)
	g := startGCP(t, ctx)
	gcpSecret(t, g, "db-password", "gke-s3cr3t")
	if err := g.Grant(g.KSAPrincipal(ns, "task-sa"), "projects/"+gcpProject+"/secrets/db-password"); err != nil {
		t.Fatal(err)
	}
	configure(t, ctx, framework.WithStores(settings(t, map[string]any{
		"backends": []any{map[string]any{"group": "gke-*", "store": "gcp"}, map[string]any{"store": "gcp"}},
		"gcp":      map[string]any{"project": gcpProject, "endpoint": g.SecretManagerAddr(), "caBundle": g.CAPEM(), "metadataHost": g.MetadataHost()},
	})), `{"secrets": [{"group": "projects/`+gcpProject+`/secrets/probe", "mountRequirement": "FILE"}]}`)
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "task-sa"}})

	main := taskContainer("main")
	main.Command = []string{"/task", "-full", "env", "DB_PASSWORD"}
	p := taskPod(ns, "gke", `{"runAs": {"k8sServiceAccount": "task-sa"}, "secrets": [{"group": "projects/`+gcpProject+`/secrets/db-password", "mountRequirement": "ENV_VAR", "envVar": "DB_PASSWORD"}]}`, true, main)
	p.Annotations[gcp.DelayAnnotation] = "6s"
	_, logs := runPod(t, ctx, p)
	if logs["main"] != "DB_PASSWORD = gke-s3cr3t\n" {
		t.Errorf("main: got %q", logs["main"])
	}
	if !strings.Contains(logs["secctx-fetch"], "retry") {
		t.Errorf("the fetch did not wait for the metadata server:\n%s", logs["secctx-fetch"])
	}
	t.Logf("fetch logs:\n%s", logs["secctx-fetch"])
}
