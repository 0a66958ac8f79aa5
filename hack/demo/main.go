// Command demo is `make demo`: it brings up a real single-node cluster,
// installs secctx with its Helm chart, runs the reference examples 1–9 (examples/) as pods,
// prints what secctx added and what each task printed, shows a refused pod,
// and tears everything down. Examples 6–9 read AWS, Google and Azure secrets
// from servers run on this machine: kumo for AWS, and the protocol test
// servers of test/cloud for Google Secret Manager and Azure Key Vault.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/test/cloud/azure"
	"github.com/secctx/secctx/test/cloud/gcp"
	"github.com/secctx/secctx/test/cloud/trust"
	"github.com/secctx/secctx/test/framework"
	"github.com/secctx/secctx/test/framework/cluster"
)

// The examples run python; the cluster here has no registry, so each runs
// the task program doing the same thing: print a secret's first 3 characters
// and "...", or the account its token belongs to.
type example struct {
	file, title string
	args        []string
}

var examples = []example{
	{"1-env-var-secret.yaml", "1. a secret as an environment variable", []string{"env", "DB_PASSWORD"}},
	{"2-file-secret.yaml", "2. a secret as a file", []string{"file-from-env", "TLS_KEY_PATH"}},
	{"3-service-account.yaml", "3. run as a service account", []string{"whoami"}},
	// Example 4's provider is a real OpenID Provider in the cluster; the task
	// calls a resource server that verifies the token against its keys.
	{"4-oauth2-token.yaml", "4. an OAuth2 token, obtained and refreshed by secctx", []string{
		"/task", "call-api", "http://" + framework.OIDCIP + ":8081/", "EXTERNAL_API_ACCESS_TOKEN"}},
	// The web-identity settings are not secret: printed whole.
	{"5-iam-role.yaml", "5. run as an IAM role (IRSA)", []string{"-full", "env", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS"}},
	// Example 5 with a secret from AWS Secrets Manager (kumo, an emulator
	// built from its Go module, serves it and STS): the settings, then the
	// secret through flytekit's lookup.
	{"6-aws-secret.yaml", "6. example 5 with a secret from AWS Secrets Manager (backend aws)", []string{"-full", "env", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_STS_REGIONAL_ENDPOINTS"}},
	// Examples 7 to 9 read Google's and Azure's protocol test servers
	// (test/cloud) as data-processing-sa, and kumo for AWS.
	{"7-gcp-secret.yaml", "7. a secret from Google Secret Manager (backend gcp)", []string{"file-from-env", "DB_PASSWORD_PATH"}},
	// The exec wrapper sets a fetched ENV_VAR secret: the task needs a
	// command of its own.
	{"8-azure-secret.yaml", "8. a secret from Azure Key Vault (backend azure), by its URL", []string{"/task", "env", "STORAGE_KEY"}},
	// The file from Google is printed by a second container (run).
	{"9-mixed-stores.yaml", "9. one pod, four stores: a Kubernetes Secret, and AWS, Google and Azure secrets in one fetch", []string{
		"/task", "env", "DB_PASSWORD", "AWS_DB_PASSWORD", "STORAGE_KEY"}},
}

const (
	annotSC        = "secctx.dev/security-context"
	awsSecretValue = "aws-demo-value"
)

// switchToAWS starts kumo, puts example 6's secret in it, and upgrades the
// release to backend aws with kumo's endpoints. It returns kumo, which the
// caller stops, and the secret's ARN.
func switchToAWS(ctx context.Context, c *cluster.Cluster, h *framework.Helm, vals map[string]any) (*framework.Server, string, error) {
	kumo, err := framework.StartKumo(ctx, cluster.NodeIP)
	if err != nil {
		return nil, "", err
	}
	sm := secretsmanager.New(secretsmanager.Options{Region: "us-east-1", BaseEndpoint: aws.String(kumo.URL),
		Credentials: credentials.NewStaticCredentialsProvider("admin", "admin", "")})
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("db-password"), SecretString: aws.String(awsSecretValue)})
	if err != nil {
		kumo.Stop()
		return nil, "", fmt.Errorf("create example 6's secret in kumo: %w", err)
	}
	vals["config"] = map[string]any{"inject": map[string]any{
		"backend": "aws",
		"aws":     awsValues(kumo),
		"tokens":  map[string]any{"httpHosts": []any{framework.OIDCHost, kumo.Addr}},
	}}
	if err := h.Upgrade(ctx, vals); err != nil {
		kumo.Stop()
		return nil, "", err
	}
	if err := (&framework.Secctx{Namespace: h.Namespace}).WaitReady(ctx, c, 2); err != nil {
		kumo.Stop()
		return nil, "", err
	}
	return kumo, *created.ARN, nil
}

func awsValues(kumo *framework.Server) map[string]any {
	return map[string]any{"secretsManagerEndpoint": kumo.URL, "stsEndpoint": kumo.URL}
}

// withARN gives the pod's AWS secret (key db-password) the name kumo gave
// it, with a suffix, as AWS does; it returns the secret as flytekit's
// lookup names it, group/key.
func withARN(pod *corev1.Pod, arn string) string {
	group, key, _ := strings.Cut(arn, ":secret:")
	pod.Annotations[annotSC] = strings.Replace(pod.Annotations[annotSC], `"key": "db-password"`, `"key": "`+key+`"`, 1)
	return group + ":secret/" + key
}

// Google's and Azure's protocol test servers (test/cloud): the project,
// workload identity pool and tenant they play, and the secrets of examples
// 7 and 8. The account the examples run as must be granted in both.
const (
	gcpProject      = "secctx-demo"
	gcpNumber       = "424242424242"
	gcpPool         = "demo-pool"
	gcpProvider     = "demo-cluster"
	gcpSecret       = "projects/" + gcpProject + "/secrets/db-password"
	gcpSecretValue  = "gcp-demo-db-password"
	azTenant        = "3c9e6b1a-7f2d-4e8a-b5c4-0d1e2f3a4b5c"
	azVault         = "kv-demo"
	azSecret        = "storage-key"
	azSecretValue   = "azure-demo-storage-key"
	cloudAccount    = "data-processing-sa"
	azClientIDAnnot = "azure.workload.identity/client-id"
)

// clouds are the running protocol test servers.
type clouds struct {
	gcp   *gcp.Server
	azure *azure.Server
}

func (cl *clouds) Close() {
	cl.gcp.Close()
	cl.azure.Close()
}

// refused is err with what the servers refused, for an example that failed.
func (cl *clouds) refused(err error) error {
	var rs []string
	for _, r := range append(cl.gcp.Refusals(), cl.azure.Refusals()...) {
		rs = append(rs, r.String())
	}
	if len(rs) == 0 {
		return err
	}
	return fmt.Errorf("%w; the test servers refused: %s", err, strings.Join(rs, "; "))
}

// switchToStores starts Google's and Azure's protocol test servers on this
// machine, puts the secrets of examples 7 and 8 in them for
// data-processing-sa, and upgrades the release (once, for examples 7 to 9)
// to send each secret to its store: Secrets Manager ARNs to aws (kumo, as
// example 6), Key Vault URLs to azure, my-* to kubernetes, and the rest to
// gcp. The caller closes the servers.
func switchToStores(ctx context.Context, c *cluster.Cluster, h *framework.Helm, vals map[string]any, kumo *framework.Server) (*clouds, error) {
	// The application the account names, as examples/cluster-objects.yaml
	// annotates it.
	sa, err := c.Client.CoreV1().ServiceAccounts(ns).Get(ctx, cloudAccount, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get service account %s/%s: %w", ns, cloudAccount, err)
	}
	clientID := sa.Annotations[azClientIDAnnot]
	if clientID == "" {
		return nil, fmt.Errorf("service account %s/%s has no annotation %s (examples/cluster-objects.yaml)", ns, cloudAccount, azClientIDAnnot)
	}
	// Both check a pod's token with a TokenReview, as the clouds check it
	// with the cluster's OIDC issuer.
	reviewer := trust.KubeReviewer{Client: c.Client}
	audience := gcp.ProviderAudience(gcpNumber, gcpPool, gcpProvider)
	g, err := gcp.Start(ctx, gcp.Options{IP: cluster.NodeIP, ProjectID: gcpProject, ProjectNumber: gcpNumber,
		Providers: []gcp.Provider{{Audience: audience}}, Reviewer: reviewer, Pods: gcp.KubePods{Client: c.Client}})
	if err != nil {
		return nil, fmt.Errorf("start the gcp test server: %w", err)
	}
	// Key Vault on port 443 of this machine: the pods' hostAliases send
	// kv-demo.vault.azure.net there.
	az, err := azure.Start(ctx, azure.Options{IP: cluster.NodeIP, TenantID: azTenant, Reviewer: reviewer})
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("start the azure test server: %w", err)
	}
	cl := &clouds{gcp: g, azure: az}
	fail := func(err error) (*clouds, error) {
		cl.Close()
		return nil, err
	}
	subject := trust.ServiceAccountPrefix + ns + ":" + cloudAccount
	if _, err := g.AddSecretVersion(gcpSecret, []byte(gcpSecretValue)); err != nil {
		return fail(fmt.Errorf("add example 7's secret: %w", err))
	}
	// The pool's principal for the account: Google names a federated
	// subject so.
	principal := fmt.Sprintf("principal://iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s/subject/%s", gcpNumber, gcpPool, subject)
	if err := g.Grant(principal, gcpSecret); err != nil {
		return fail(fmt.Errorf("grant example 7's secret: %w", err))
	}
	az.SetSecret(azVault, azSecret, azSecretValue)
	az.AddFederatedCredential(azTenant, clientID, subject)
	az.Grant(clientID, azVault, azSecret)

	vals["config"] = map[string]any{"inject": map[string]any{
		"backend": "gcp",
		"backends": []any{
			map[string]any{"store": "aws"},
			map[string]any{"store": "azure"},
			map[string]any{"group": "my-*", "store": "kubernetes"},
		},
		"aws": awsValues(kumo),
		"gcp": map[string]any{"project": gcpProject, "endpoint": g.SecretManagerAddr(), "caBundle": g.CAPEM(),
			"federation": map[string]any{"audience": audience, "tokenURL": g.STSURL()}},
		"azure":  map[string]any{"tenantID": azTenant, "authorityHost": az.AuthorityHost(), "caBundle": az.CAPEM()},
		"tokens": map[string]any{"httpHosts": []any{framework.OIDCHost, kumo.Addr}},
	}}
	if err := h.Upgrade(ctx, vals); err != nil {
		return fail(err)
	}
	// Until every answer is the new config's: backend aws refuses a
	// Google secret.
	probe := `{"secrets": [{"group": "projects/` + gcpProject + `/secrets/probe", "mountRequirement": "FILE"}]}`
	if err := (&framework.Secctx{Namespace: h.Namespace}).WaitAdmits(ctx, c, 2, probe, 20); err != nil {
		return fail(err)
	}
	return cl, nil
}

// vaultHost sends the demo vault's name to this machine, as DNS would on
// AKS.
func vaultHost(pod *corev1.Pod) {
	pod.Spec.HostAliases = append(pod.Spec.HostAliases, corev1.HostAlias{IP: cluster.NodeIP, Hostnames: []string{azVault + azure.VaultDomain}})
}

// runExample runs one reference example as a pod and prints what secctx
// added and what the task printed. edit, when set, changes the pod first.
func runExample(ctx context.Context, c *cluster.Cluster, root string, ex example, edit func(*corev1.Pod)) error {
	b, err := os.ReadFile(filepath.Join(root, "examples", ex.file))
	if err != nil {
		return err
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		return fmt.Errorf("%s: %w", ex.file, err)
	}
	pod.Namespace = ns
	if edit != nil {
		edit(&pod)
	}
	task := &pod.Spec.Containers[0]
	task.Image, task.ImagePullPolicy, task.Command, task.Args = framework.TaskImage, corev1.PullNever, nil, ex.args
	if ex.args[0] == "/task" {
		// A command of its own, so that the exec wrapper sets the env
		// vars it reads: example 4's token, the fetched ENV_VAR secrets.
		task.Command, task.Args = ex.args, nil
		pod.Annotations[annotSC] = strings.Replace(pod.Annotations[annotSC], "https://auth.example.com/oauth2/token", framework.OIDCIssuer+"/oauth/token", 1)
	}
	fmt.Printf("\n%s== %s (examples/%s)%s\n", bold, ex.title, ex.file, off)
	fmt.Printf("   asks for: %s\n", strings.Join(strings.Fields(pod.Annotations[annotSC]), " "))
	started := time.Now()
	got, logs, err := framework.RunPod(ctx, c, &pod, 2*time.Minute)
	if err != nil {
		return err
	}
	for _, line := range added(got) {
		fmt.Printf("   secctx added: %s\n", line)
	}
	fmt.Printf("   pod %s in %.1fs; the task printed:\n", got.Status.Phase, time.Since(started).Seconds())
	for _, ctr := range pod.Spec.Containers {
		if out := strings.TrimSpace(logs[ctr.Name]); out != "" {
			for _, line := range strings.Split(out, "\n") {
				fmt.Printf("     %s\n", line)
			}
		}
	}
	if got.Status.Phase != corev1.PodSucceeded {
		return fmt.Errorf("%s: pod %s", ex.file, got.Status.Phase)
	}
	return nil
}

// The demo's OpenID Provider and the client of example 4.
const (
	demoClient       = "my-app-client-id"
	demoClientSecret = "demo-client-secret" // as in examples/cluster-objects.yaml
)

const ns = "demo"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

var (
	bold = "\033[1m"
	dim  = "\033[2m"
	off  = "\033[0m"
)

func run(ctx context.Context) (err error) {
	if fi, _ := os.Stdout.Stat(); fi == nil || fi.Mode()&os.ModeCharDevice == 0 {
		bold, dim, off = "", "", ""
	}
	t0 := time.Now()
	say := func(format string, a ...any) {
		fmt.Printf("%s%6.1fs%s  %s\n", dim, time.Since(t0).Seconds(), off, fmt.Sprintf(format, a...))
	}
	say("starting a single-node cluster (etcd, kube-apiserver, controllers, kubelet, containerd)")
	c, err := framework.Up(ctx, framework.Options{Mode: cluster.Full, Progress: indent{}})
	if err != nil {
		return err
	}
	defer func() {
		say("tearing the cluster down")
		err = errors.Join(err, c.Stop())
		say("done")
	}()
	say("installing secctx with Helm from charts/secctx (2 replicas, self-managed certificates, failurePolicy: Fail)")
	// The demo's provider is plain http inside the cluster; a real one is
	// https, which needs no setting.
	vals := framework.LocalImage()
	vals["config"] = map[string]any{"inject": map[string]any{"tokens": map[string]any{"httpHosts": []any{framework.OIDCHost}}}}
	_, h, err := framework.InstallChartWith(ctx, c, indent{}, vals)
	if err != nil {
		return err
	}
	say("starting an OpenID Provider (zitadel/oidc) at %s, tokens lasting 1m, and a resource server that checks them", framework.OIDCIssuer)
	if err := framework.StartOIDCProvider(ctx, c, "oidc", map[string]string{demoClient: demoClientSecret}, time.Minute); err != nil {
		return err
	}
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
		return err
	}
	root := framework.Root()
	if _, _, err := c.Kubectl(ctx, nil, "apply", "-n", ns, "-f", filepath.Join(root, "examples", "cluster-objects.yaml")); err != nil {
		return err
	}
	say("namespace %q has the examples' Secrets (my-credentials, my-certs, oauth-secrets) and service account (data-processing-sa)", ns)

	// Examples 6 to 9 switch secctx to other stores: they run last, after
	// the refusals, which are worded for the Kubernetes backend.
	for _, ex := range examples[:5] {
		if err := runExample(ctx, c, root, ex, nil); err != nil {
			return err
		}
	}

	fmt.Printf("\n%s== a pod with mistakes (examples/bad-annotation.yaml)%s\n", bold, off)
	_, stderr, err := c.Kubectl(ctx, nil, "apply", "-n", ns, "-f", filepath.Join(root, "examples", "bad-annotation.yaml"))
	if err == nil {
		return errors.New("bad-annotation.yaml was admitted")
	}
	fmt.Println("   kubectl apply fails:")
	for _, part := range strings.Split(strings.TrimSpace(stderr), "; ") {
		fmt.Printf("     %s\n", part)
	}

	// The guard in the API server: a pod that asks for secrets without the
	// opt-in label is refused, not started without them.
	fmt.Printf("\n%s== example 1 without its label%s\n", bold, off)
	b, err := os.ReadFile(filepath.Join(root, "examples", "1-env-var-secret.yaml"))
	if err != nil {
		return err
	}
	var unlabelled corev1.Pod
	if err := yaml.UnmarshalStrict(b, &unlabelled); err != nil {
		return err
	}
	unlabelled.Namespace, unlabelled.Labels = ns, nil
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, &unlabelled, metav1.CreateOptions{}); err == nil {
		return errors.New("example 1 without its label was admitted")
	} else {
		fmt.Printf("   refused: %s\n", err)
	}

	say("starting kumo (AWS Secrets Manager and STS) on this machine, and switching secctx to backend aws (helm upgrade)")
	kumo, arn, err := switchToAWS(ctx, c, h, vals)
	if err != nil {
		return err
	}
	defer kumo.Stop()
	err = runExample(ctx, c, root, examples[5], func(pod *corev1.Pod) {
		ref := withARN(pod, arn)
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "secret", Image: framework.TaskImage, ImagePullPolicy: corev1.PullNever,
			Args: []string{"flytekit", ref}})
	})
	if err != nil {
		return err
	}

	say("starting protocol test servers for Google Secret Manager and STS, and for Entra ID and Azure Key Vault, on this machine; "+
		"switching secctx to send ARNs to aws (kumo), Key Vault URLs to azure, my-* to kubernetes, the rest to gcp (project %s) (helm upgrade)", gcpProject)
	cl, err := switchToStores(ctx, c, h, vals, kumo)
	if err != nil {
		return err
	}
	defer cl.Close()
	say("Google Secret Manager and STS here are a protocol test server run on this machine (test/cloud/gcp), not Google: " +
		"secctx-fetch's official Google SDK talks to it over the network, and it checks the pod's token with the cluster's TokenReview")
	if err := runExample(ctx, c, root, examples[6], nil); err != nil {
		return cl.refused(err)
	}
	say("Entra ID and Azure Key Vault here are a protocol test server run on this machine (test/cloud/azure), not Microsoft: "+
		"secctx-fetch's official Azure SDK talks to it over the network (the pod's hostAliases send %s%s here), "+
		"and it checks the pod's token with the cluster's TokenReview", azVault, azure.VaultDomain)
	if err := runExample(ctx, c, root, examples[7], vaultHost); err != nil {
		return cl.refused(err)
	}
	say("GCP and Azure here are the same protocol test servers run on this machine, not Google or Microsoft: " +
		"the official SDKs talk to them over the network, and trust is checked with the cluster's TokenReview; AWS is kumo, as in example 6")
	err = runExample(ctx, c, root, examples[8], func(pod *corev1.Pod) {
		withARN(pod, arn)
		vaultHost(pod)
		// The file from Google, printed by a second container: the task
		// program prints env vars or files, not both.
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "files", Image: framework.TaskImage, ImagePullPolicy: corev1.PullNever,
			Command: []string{"/task", "file-from-env", "GCP_DB_PASSWORD_PATH"}})
	})
	if err != nil {
		return cl.refused(err)
	}
	fmt.Println()
	say("all examples ran")
	return nil
}

// added lists what secctx put into the task container and pod spec.
func added(p *corev1.Pod) []string {
	var out []string
	for _, e := range p.Spec.Containers[0].Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			out = append(out, fmt.Sprintf("env %s from Secret %s key %s", e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key))
		case strings.HasPrefix(e.Name, "FLYTE_SECRETS_"):
		default:
			out = append(out, fmt.Sprintf("env %s=%s", e.Name, e.Value))
		}
	}
	for _, m := range p.Spec.Containers[0].VolumeMounts {
		switch {
		case m.Name == "secctx-aws-iam-token":
			out = append(out, fmt.Sprintf("volume %s mounted read-only at %s: a service-account token for audience sts.amazonaws.com, renewed by the kubelet", m.Name, m.MountPath))
		case strings.HasPrefix(m.Name, "secctx-"):
			out = append(out, fmt.Sprintf("volume %s mounted read-only at %s", m.Name, m.MountPath))
		}
	}
	for _, c := range p.Spec.InitContainers {
		switch c.Name {
		case "secctx-sidecar":
			out = append(out, "native sidecar secctx-sidecar: "+sidecarDoes(c))
		case "secctx-fetch":
			out = append(out, "init container secctx-fetch: "+fetchDoes(c))
		}
	}
	// The wrapper's own arguments end with --, the task's command follows.
	if cmd := p.Spec.Containers[0].Command; len(cmd) > 0 && strings.HasSuffix(cmd[0], "secctx-agent") {
		if i := slices.Index(cmd, "--"); i >= 0 {
			cmd = cmd[:i+1]
		}
		out = append(out, "command wrapped: "+strings.Join(cmd, " ")+" ...")
	}
	if p.Spec.ServiceAccountName != "" && p.Spec.ServiceAccountName != "default" {
		out = append(out, "serviceAccountName: "+p.Spec.ServiceAccountName)
	}
	sort.Strings(out)
	return out
}

// fetchDoes says what the fetch init container does, from the stores of
// the secrets it is given (its --secrets argument).
// sidecarDoes says what the sidecar keeps, from its arguments.
func sidecarDoes(c corev1.Container) string {
	var does []string
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--install-dir=") }) {
		does = append(does, "installs the exec wrapper")
	}
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--tokens=") }) {
		does = append(does, "gets and renews the token (the only container with the client secret)")
	}
	for _, a := range c.Args {
		if r, ok := strings.CutPrefix(a, "--refresh="); ok {
			does = append(does, "reads the FILE secrets again every "+r)
		}
	}
	return strings.Join(does, "; ")
}

func fetchDoes(c corev1.Container) string {
	var secrets []struct {
		Store string `json:"store"`
	}
	how := map[string]string{
		"aws":   "assumes the IAM role with the projected token and reads AWS Secrets Manager",
		"gcp":   "asks the GKE metadata server for the pod's Google token and reads Google Secret Manager",
		"azure": "signs in to Entra ID as the application the account names, with a projected token (Azure Workload Identity), and reads Azure Key Vault",
		"vault": "logs in to Vault with the pod's account and reads it",
	}
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--secrets="); ok {
			if err := json.Unmarshal([]byte(v), &secrets); err != nil {
				return "reads the secrets (its --secrets argument: " + err.Error() + ")"
			}
		}
		if strings.HasPrefix(a, "--gcp-audience=") {
			how["gcp"] = "exchanges a projected token of the pod's account at Google STS (Workload Identity Federation) and reads Google Secret Manager"
		}
	}
	var does []string
	if slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--install-dir=") }) {
		does = append(does, "installs the exec wrapper")
	}
	n := map[string]int{}
	for _, s := range secrets {
		if n[s.Store]++; n[s.Store] == 1 {
			does = append(does, or(how[s.Store], "reads "+s.Store))
		}
	}
	if len(secrets) > 1 {
		return strings.Join(does, "; ") + "; writes the secrets to in-memory files"
	}
	return strings.Join(does, "; ") + "; writes the secret to an in-memory file"
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

type indent struct{}

func (indent) Write(b []byte) (int, error) {
	fmt.Printf("%s          %s%s", dim, b, off)
	return len(b), nil
}
