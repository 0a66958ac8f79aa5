package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func execute(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

const refPod = `apiVersion: v1
kind: Pod
metadata:
  name: ref
  labels:
    secctx.dev/inject: "true"
  annotations:
    secctx.dev/security-context: '{"runAs":{"k8sServiceAccount":"data-processing-sa"},"secrets":[{"group":"my-credentials","key":"db_password","mountRequirement":"ENV_VAR","envVar":"DB_PASSWORD"}]}'
spec:
  containers:
  - name: task
    image: app
    futureField: kept
`

func TestInject(t *testing.T) {
	code, out, errOut := execute(t, refPod, "inject", "-f", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"name: DB_PASSWORD", "name: _FSEC_MY-CREDENTIALS_DB_PASSWORD", "serviceAccountName: data-processing-sa",
		"futureField: kept", "secctx.dev/status:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "note: service account default/data-processing-sa was not checked, and the pod was not given its token and image pull settings: no cluster to ask; pass --kubeconfig to check it") {
		t.Errorf("stderr does not say the service account was not checked: %q", errOut)
	}
}

func TestInjectOutputs(t *testing.T) {
	code, out, _ := execute(t, refPod, "inject", "-f", "-", "-o", "patch")
	if code != 0 || !strings.HasPrefix(out, "[\n  {\"op\":\"add\",") || !strings.Contains(out, `"path":"/spec/serviceAccountName","value":"data-processing-sa"}`) {
		t.Errorf("-o patch: exit %d\n%s", code, out)
	}
	code, out, _ = execute(t, refPod, "inject", "-f", "-", "-o", "json")
	if code != 0 || !strings.Contains(out, `"serviceAccountName": "data-processing-sa"`) || !strings.Contains(out, `"futureField": "kept"`) {
		t.Errorf("-o json: exit %d\n%s", code, out)
	}
	code, out, _ = execute(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n", "inject", "-f", "-", "-o", "patch")
	if code != 0 || out != "[]\n" {
		t.Errorf("-o patch of an untouched pod: exit %d, %q", code, out)
	}
	if code, _, errOut := execute(t, refPod, "inject", "-f", "-", "-o", "table"); code != 1 || !strings.Contains(errOut, `--output "table": must be yaml, json or patch`) {
		t.Errorf("-o table: exit %d, %q", code, errOut)
	}
}

func TestInjectFileMultiDocumentAndNamespace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pods.yaml")
	plain := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: plain\nspec:\n  containers:\n  - name: c\n    image: i\n"
	if err := os.WriteFile(path, []byte("# two pods\n---\n"+refPod+"---\n"+plain), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := execute(t, "", "inject", "-f", path, "-n", "team-a")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if docs := strings.Split(out, "\n---\n"); len(docs) != 2 || !strings.Contains(docs[1], "name: plain") || strings.Contains(docs[1], "secctx.dev/status") {
		t.Errorf("want two documents, the second unchanged:\n%s", out)
	}
	if !strings.Contains(errOut, "team-a/data-processing-sa") {
		t.Errorf("--namespace not used: %q", errOut)
	}
}

func TestInjectRefusals(t *testing.T) {
	bad := strings.Replace(refPod, `"envVar":"DB_PASSWORD"`, `"envVar":"1BAD"`, 1)
	code, out, errOut := execute(t, bad, "inject", "-f", "-")
	want := `pod default/ref: secctx.dev/security-context: secrets[0].envVar "1BAD": must match ^[A-Z_][A-Z0-9_]*$` + "\n"
	if code != 1 || out != "" || errOut != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, out, errOut, want)
	}
	for name, tc := range map[string]struct {
		stdin string
		args  []string
		want  string
	}{
		"not a pod":      {"apiVersion: apps/v1\nkind: Deployment\n", []string{"inject", "-f", "-"}, "document 1: apps/v1 Deployment: only v1 Pods can be injected"},
		"empty input":    {"", []string{"inject", "-f", "-"}, "no pod in the input"},
		"no -f":          {"", []string{"inject"}, `required flag(s) "filename" not set`},
		"missing file":   {"", []string{"inject", "-f", "/nonexistent.yaml"}, "read pod: open /nonexistent.yaml"},
		"bad config":     {refPod, []string{"inject", "-f", "-", "--config", "/nonexistent.yaml"}, "read config"},
		"serve bad flag": {"", []string{"serve", "--log-level", "loud"}, `logLevel "loud": must be debug, info or error`},
		"serve bad port": {"", []string{"serve", "--port", "70000"}, "port 70000: must be 1-65535"},
		"version format": {"", []string{"version", "-o", "yaml"}, `--output "yaml": must be json`},
	} {
		code, _, errOut := execute(t, tc.stdin, tc.args...)
		if code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", name, code, errOut, tc.want)
		}
	}
}

func TestServeConfigFileAndFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: config.secctx.dev/v1alpha1\nkind: SecctxConfiguration\nport: 9443\nlogLevel: loud\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The file's bad value is reported...
	if code, _, errOut := execute(t, "", "serve", "--config", path); code != 1 || !strings.Contains(errOut, `logLevel "loud"`) {
		t.Errorf("bad config file: exit %d, %q", code, errOut)
	}
	// ...unless a flag overrides it; the next problem is then the missing cluster.
	code, _, errOut := execute(t, "", "serve", "--config", path, "--log-level", "error", "--kubeconfig", "/nonexistent")
	if code != 1 || strings.Contains(errOut, "logLevel") || !strings.Contains(errOut, "load kubeconfig /nonexistent") {
		t.Errorf("flag override: exit %d, %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := execute(t, "", "version")
	if code != 0 || !strings.HasPrefix(out, "secctx dev") {
		t.Errorf("version: exit %d, %q", code, out)
	}
	code, out, _ = execute(t, "", "version", "-o", "json")
	if code != 0 || !strings.Contains(out, `"version": "dev"`) {
		t.Errorf("version -o json: exit %d, %q", code, out)
	}
}

// TestAgentRunsTheAgentBinary: secctx agent runs secctx-agent from PATH
// (beside secctx comes first, which a test binary cannot arrange), with
// its arguments, streams and exit code; without it, it says what to do.
func TestAgentRunsTheAgentBinary(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("PATH", dir)
	code, _, errOut := execute(t, "", "agent", "tokens", "--check")
	if code == 0 || !strings.Contains(errOut, "secctx agent runs secctx-agent, which is neither beside secctx nor on PATH") {
		t.Errorf("without secctx-agent: exit %d, %q", code, errOut)
	}
	script := "#!/bin/sh\necho \"args: $*\"\nread line\necho \"stdin: $line\" >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(dir, "secctx-agent"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":/usr/bin:/bin")
	code, out, errOut := execute(t, "hello\n", "agent", "exec", "--from-file=A=/x", "--", "true")
	if code != 3 || out != "args: exec --from-file=A=/x -- true\n" || errOut != "stdin: hello\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestInjectLeased: secctx inject says which secrets the sidecar keeps
// fresh, and of those which are leases it renews and replaces.
func TestInjectLeased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yaml")
	config := "apiVersion: config.secctx.dev/v1alpha1\nkind: SecctxConfiguration\ninject:\n  backend: vault\n  refresh:\n    intervalSeconds: 300\n  agent:\n    image: secctx:test\n" +
		"  vault:\n    mode: agent\n    role: flyte\n    address: https://vault.vault.svc:8200\n"
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	pod := strings.Replace(refPod, `{"runAs":{"k8sServiceAccount":"data-processing-sa"},"secrets":[{"group":"my-credentials","key":"db_password","mountRequirement":"ENV_VAR","envVar":"DB_PASSWORD"}]}`,
		`{"secrets":[{"group":"database/creds/app","groupVersion":"db","key":"username","mountRequirement":"FILE"},{"group":"secret/my-app","key":"token","mountRequirement":"FILE"}]}`, 1)
	code, _, errOut := execute(t, pod, "inject", "-f", "-", "--config", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"refresh: secrets[0], secrets[1] every 300s (+ up to 10%)\n",
		"leased: secrets[0]: read by the sidecar before the task starts, the lease renewed, and replaced before it ends\n"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
}
