// Command demo is `make demo`: it brings up a real single-node cluster,
// installs secctx with its Helm chart, runs the reference examples 1–6 (examples/) as pods,
// prints what secctx added and what each task printed, shows a refused pod,
// and tears everything down.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
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
}

const awsSecretValue = "aws-demo-value"

// switchToAWS starts kumo, puts example 6's secret in it, and upgrades the
// release to backend aws with kumo's endpoints. It returns the secret's
// ARN and a function that stops kumo.
func switchToAWS(ctx context.Context, c *cluster.Cluster, h *framework.Helm, vals map[string]any) (string, func(), error) {
	kumo, err := framework.StartKumo(ctx, cluster.NodeIP)
	if err != nil {
		return "", nil, err
	}
	sm := secretsmanager.New(secretsmanager.Options{Region: "us-east-1", BaseEndpoint: aws.String(kumo.URL),
		Credentials: credentials.NewStaticCredentialsProvider("admin", "admin", "")})
	created, err := sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String("db-password"), SecretString: aws.String(awsSecretValue)})
	if err != nil {
		kumo.Stop()
		return "", nil, err
	}
	vals["config"] = map[string]any{"inject": map[string]any{
		"backend": "aws",
		"aws":     map[string]any{"secretsManagerEndpoint": kumo.URL, "stsEndpoint": kumo.URL},
		"tokens":  map[string]any{"httpHosts": []any{framework.OIDCHost, kumo.Addr}},
	}}
	if err := h.Upgrade(ctx, vals); err != nil {
		kumo.Stop()
		return "", nil, err
	}
	if err := (&framework.Secctx{Namespace: h.Namespace}).WaitReady(ctx, c, 2); err != nil {
		kumo.Stop()
		return "", nil, err
	}
	return *created.ARN, kumo.Stop, nil
}

// runExample runs one reference example as a pod and prints what secctx
// added and what the task printed.
func runExample(ctx context.Context, c *cluster.Cluster, h *framework.Helm, vals map[string]any, root string, ex example, say func(string, ...any)) error {
	b, err := os.ReadFile(filepath.Join(root, "examples", ex.file))
	if err != nil {
		return err
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(b, &pod); err != nil {
		return fmt.Errorf("%s: %w", ex.file, err)
	}
	pod.Namespace = ns
	if ex.file == "6-aws-secret.yaml" {
		say("starting kumo (AWS Secrets Manager and STS) on this machine, and switching secctx to backend aws (helm upgrade)")
		arn, stop, err := switchToAWS(ctx, c, h, vals)
		if err != nil {
			return err
		}
		defer stop()
		// kumo names the secret with a suffix, as AWS does.
		group, key, _ := strings.Cut(arn, ":secret:")
		sc := pod.Annotations["secctx.dev/security-context"]
		pod.Annotations["secctx.dev/security-context"] = strings.Replace(sc, `"key": "db-password"`, `"key": "`+key+`"`, 1)
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "secret", Image: framework.TaskImage, ImagePullPolicy: corev1.PullNever,
			Args: []string{"flytekit", group + ":secret/" + key}})
	}
	task := &pod.Spec.Containers[0]
	task.Image, task.ImagePullPolicy, task.Command, task.Args = framework.TaskImage, corev1.PullNever, nil, ex.args
	if ex.args[0] == "/task" {
		// A command of its own, as example 4 has, so the exec wrapper
		// sets the token's env var.
		task.Command, task.Args = ex.args, nil
		sc := pod.Annotations["secctx.dev/security-context"]
		pod.Annotations["secctx.dev/security-context"] = strings.Replace(sc, "https://auth.example.com/oauth2/token", framework.OIDCIssuer+"/oauth/token", 1)
	}
	fmt.Printf("\n%s== %s (examples/%s)%s\n", bold, ex.title, ex.file, off)
	fmt.Printf("   asks for: %s\n", strings.Join(strings.Fields(pod.Annotations["secctx.dev/security-context"]), " "))
	started := time.Now()
	got, logs, err := framework.RunPod(ctx, c, &pod, 2*time.Minute)
	if err != nil {
		return err
	}
	for _, line := range added(got) {
		fmt.Printf("   secctx added: %s\n", line)
	}
	fmt.Printf("   pod %s in %.1fs; the task printed:\n", got.Status.Phase, time.Since(started).Seconds())
	for _, name := range []string{"task", "secret"} {
		if out, ok := logs[name]; ok {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
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

	// Example 6 switches secctx to backend aws: it runs last, after the
	// refusals, which are worded for the Kubernetes backend.
	for _, ex := range examples[:len(examples)-1] {
		if err := runExample(ctx, c, h, vals, root, ex, say); err != nil {
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
	if err := runExample(ctx, c, h, vals, root, examples[len(examples)-1], say); err != nil {
		return err
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
		case "secctx-tokens":
			out = append(out, "native sidecar secctx-tokens: gets and renews the token; the only container with the client secret")
		case "secctx-bin":
			out = append(out, "init container secctx-bin: installs the exec wrapper")
		case "secctx-fetch":
			out = append(out, "init container secctx-fetch: assumes the IAM role with the projected token, reads the secret, writes it to an in-memory file")
		}
	}
	if cmd := p.Spec.Containers[0].Command; len(cmd) > 0 && strings.HasSuffix(cmd[0], "secctx-agent") {
		out = append(out, "command wrapped: "+strings.Join(cmd[:len(cmd)-len(examples[3].args)], " ")+" ...")
	}
	if p.Spec.ServiceAccountName != "" && p.Spec.ServiceAccountName != "default" {
		out = append(out, "serviceAccountName: "+p.Spec.ServiceAccountName)
	}
	sort.Strings(out)
	return out
}

type indent struct{}

func (indent) Write(b []byte) (int, error) {
	fmt.Printf("%s          %s%s", dim, b, off)
	return len(b), nil
}
