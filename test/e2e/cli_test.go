package e2e

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func runSecctx(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(secctx, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

func TestReferenceExamples(t *testing.T) {
	tests := []struct {
		file  string
		want  []string
		flags []string
	}{
		{"1-env-var-secret.yaml", []string{
			"- name: DB_PASSWORD\n      valueFrom:\n        secretKeyRef:\n          key: db_password\n          name: my-credentials",
			"- name: _FSEC_MY-CREDENTIALS_DB_PASSWORD",
			"- name: FLYTE_SECRETS_ENV_PREFIX\n      value: _FSEC_",
		}, nil},
		{"2-file-secret.yaml", []string{
			"- name: TLS_KEY_PATH\n      value: /etc/flyte/secrets/my-certs/tls.key",
			"- mountPath: /etc/flyte/secrets/my-certs\n      name: secctx-my-certs\n      readOnly: true",
			"secret:\n      defaultMode: 420\n      items:\n      - key: tls.key\n        path: tls.key\n      secretName: my-certs",
		}, nil},
		{"3-service-account.yaml", []string{"serviceAccountName: data-processing-sa"}, nil},
		{"4-oauth2-token.yaml", []string{
			"- /var/run/secctx/bin/secctx-agent\n    - exec\n    - --from-file=EXTERNAL_API_ACCESS_TOKEN=/etc/flyte/tokens/external-api-access\n    - --\n    - python",
			"- name: EXTERNAL_API_ACCESS_TOKEN_FILE\n      value: /etc/flyte/tokens/external-api-access",
			"image: ghcr.io/secctx/secctx:0.1.0",
			"name: secctx-sidecar\n",
			"restartPolicy: Always",
		}, []string{"--agent-image", "ghcr.io/secctx/secctx:0.1.0"}},
		{"5-iam-role.yaml", []string{
			"- name: AWS_ROLE_ARN\n      value: arn:aws:iam::123456789012:role/my-workflow-role",
			"- name: AWS_WEB_IDENTITY_TOKEN_FILE\n      value: /var/run/secrets/eks.amazonaws.com/serviceaccount/token",
			"audience: sts.amazonaws.com",
		}, nil},
		{"6-aws-secret.yaml", []string{
			"name: secctx-fetch\n",
			`"store":"aws"`,
			`"id":"arn:aws:secretsmanager:us-east-1:000000000000:secret:db-password"`,
			"- mountPath: /etc/flyte/secrets\n      name: secctx-fetched\n      readOnly: true",
			"- name: AWS_ROLE_ARN\n      value: arn:aws:iam::123456789012:role/my-workflow-role",
		}, []string{"--config", "../../examples/secctx-aws.yaml"}},
		// Issue 23: Google, Azure, and four stores in one pod.
		{"7-gcp-secret.yaml", []string{
			"name: secctx-fetch\n",
			"- /secctx-fetch\n",
			`"store":"gcp","id":"projects/my-project/secrets/db-password"`,
			"- --gcp-audience=//iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/my-pool/providers/my-cluster",
			"audience: https://iam.googleapis.com/projects/123456789012/locations/global/workloadIdentityPools/my-pool/providers/my-cluster",
		}, []string{"--config", "../../examples/secctx-stores.yaml"}},
		{"8-azure-secret.yaml", []string{
			`"store":"azure","id":"https://kv-demo.vault.azure.net/secrets/storage-key"`,
			"- name: AZURE_CLIENT_ID\n      value: 5b1f3c2e-8d4a-4f6b-9c7e-1a2b3c4d5e6f",
			"audience: api://AzureADTokenExchange",
		}, []string{"--config", "../../examples/secctx-stores.yaml"}},
		{"9-mixed-stores.yaml", []string{
			`"store":"aws"`, `"store":"gcp"`, `"store":"azure"`,
			"secretKeyRef:\n          key: db_password\n          name: my-credentials",
		}, []string{"--config", "../../examples/secctx-stores.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			code, out, errOut := runSecctx(t, append([]string{"inject", "-f", filepath.Join("../../examples", tt.file)}, tt.flags...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, w := range append(tt.want, "secctx.dev/status:") {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks\n%s\n---\n%s", w, out)
				}
			}
		})
	}
}

func TestBadAnnotationIsRefused(t *testing.T) {
	code, out, errOut := runSecctx(t, "inject", "-f", "../../examples/bad-annotation.yaml")
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q: want 1 and nothing", code, out)
	}
	for _, w := range []string{
		"pod default/example-bad-annotation: secctx.dev/security-context: ",
		`secrets[0].envVar "db-password": must match ^[A-Z_][A-Z0-9_]*$`,
		`secrets[1].mountRequirement "DISK": must be one of ANY, ENV_VAR, FILE (or 0, 1, 2)`,
		`secrets[1].group "My_Certs": must be a Kubernetes Secret name`,
	} {
		if !strings.Contains(errOut, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errOut)
		}
	}
}

func TestServeAndVersion(t *testing.T) {
	code, out, _ := runSecctx(t, "version")
	if code != 0 || !strings.HasPrefix(out, "secctx v0.0.0-e2e") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	code, out, _ = runSecctx(t, "serve", "--help")
	for _, flag := range []string{"--port int", "(default 9443)", "--cert-dir", "--metrics-bind-address", `(default ":8443")`, "--metrics-secure", "--flyte",
		"--health-probe-bind-address", `(default ":8081")`, "--config"} {
		if code != 0 || !strings.Contains(out, flag) {
			t.Errorf("serve --help lacks %q", flag)
		}
	}
	code, _, errOut := runSecctx(t, "serve", "--kubeconfig", "/nonexistent/kubeconfig")
	if code != 1 || !strings.Contains(errOut, "load kubeconfig /nonexistent/kubeconfig") {
		t.Errorf("serve without a cluster: exit %d, %q", code, errOut)
	}
}

// TestInjectPolicy: secctx inject --policy checks pods offline as enforce
// mode would: example 1 is allowed by examples/policy.yaml, example 5's IAM
// role is not, and the refusal names it and the policy.
func TestInjectPolicy(t *testing.T) {
	code, _, errOut := runSecctx(t, "inject", "-f", "../../examples/1-env-var-secret.yaml", "--policy", "../../examples/policy.yaml")
	if code != 0 {
		t.Fatalf("example 1: exit %d: %s", code, errOut)
	}
	code, _, errOut = runSecctx(t, "inject", "-f", "../../examples/5-iam-role.yaml", "--policy", "../../examples/policy.yaml")
	want := `pod default/example-5-iam-role: secctx.dev/security-context: not allowed by any SecurityContextPolicy for namespace default: runAs.iamRole "arn:aws:iam::123456789012:role/my-workflow-role" (policies checked: team-data)`
	if code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("example 5: exit %d, %q; want 1 and %q", code, errOut, want)
	}
	code, _, errOut = runSecctx(t, "inject", "-f", "../../examples/1-env-var-secret.yaml", "--policy", "../../examples/1-env-var-secret.yaml")
	if code == 0 || !strings.Contains(errOut, "1-env-var-secret.yaml: document 1: ") {
		t.Errorf("a pod as a policy: exit %d, %q", code, errOut)
	}
}
