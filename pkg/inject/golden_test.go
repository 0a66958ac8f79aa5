package inject

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"

	"github.com/secctx/secctx/internal/fixtures"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeServiceAccounts are the accounts the fixtures expect (see
// fixtures.Accounts).
type fakeServiceAccounts = fixtures.Accounts

// TestGolden runs every fixture under testdata/pods: the input pod, patched
// as the API server would patch it, must match the golden .out.yaml (or the
// refusal the golden .err); the patch must only add; applied to the raw
// input it must give exactly the typed pod Inject returned; injecting into
// the result again must change nothing; and the webhook's path (InjectJSON,
// which decodes only a PodView) must give the same patch or error.
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/pods/*.in.yaml")
	if err != nil || len(inputs) < 20 {
		t.Fatalf("want at least 20 fixtures, have %d (%v)", len(inputs), err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			raw := readPodJSON(t, in)
			ns := namespaceOf(t, raw)
			injector := newTestInjector(t, fixtureConfig(t, name))
			outFile := filepath.Join("testdata/pods", name+".out.yaml")
			errFile := filepath.Join("testdata/pods", name+".err")

			full := &corev1.Pod{}
			if err := kjson.UnmarshalCaseSensitivePreserveInts(raw, full); err != nil {
				t.Fatal(err)
			}
			out, err := injector.Patch(context.Background(), full, ns)
			viewOut, viewErr := injector.InjectJSON(context.Background(), ns, raw)
			if fmt.Sprint(err) != fmt.Sprint(viewErr) {
				t.Errorf("the whole pod and its PodView give different errors:\n%v\n%v", err, viewErr)
			}
			if err == nil && viewErr == nil && string(out.Patch) != string(viewOut.Patch) {
				t.Errorf("the whole pod and its PodView give different patches:\n%s\n%s", out.Patch, viewOut.Patch)
			}
			if err != nil {
				if !IsDenied(err) {
					t.Fatalf("InjectJSON: an internal error, want a refusal: %v", err)
				}
				golden(t, errFile, []byte(err.Error()+"\n"))
				mustNotExist(t, outFile)
				return
			}
			mustNotExist(t, errFile)
			assertOnlyAdds(t, out.Patch)
			patched := applyPatch(t, raw, out.Patch)
			y, err := yaml.JSONToYAML(patched)
			if err != nil {
				t.Fatal(err)
			}
			golden(t, outFile, y)

			var fromPatch corev1.Pod
			if err := kjson.UnmarshalCaseSensitivePreserveInts(patched, &fromPatch); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(out.Pod, &fromPatch); diff != "" {
				t.Errorf("patch applied to the raw pod differs from the typed result (-typed +patched):\n%s", diff)
			}

			again, err := injector.Patch(context.Background(), &fromPatch, ns)
			if err != nil {
				t.Fatalf("second injection: %v", err)
			}
			if again.Patch != nil {
				t.Errorf("second injection is not a no-op; patch: %s", again.Patch)
			}
			if diff := cmp.Diff(&fromPatch, again.Pod); diff != "" {
				t.Errorf("second injection changed the pod (-once +twice):\n%s", diff)
			}
		})
	}
}

// fixtureConfig is the config a fixture runs with: the defaults in Flyte
// mode with an agent image, and name.config.yaml over them when there
// (vault, Flyte mode off, ...).
func fixtureConfig(t testing.TB, name string) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Flyte.Enabled = true
	cfg.Agent.Image = "ghcr.io/secctx/secctx:0.1.0"
	if b, err := os.ReadFile(filepath.Join("testdata/pods", name+".config.yaml")); err == nil {
		if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

func newTestInjector(t testing.TB, cfg Config) *Injector {
	t.Helper()
	in, err := New(cfg, &fakeServiceAccounts{})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func readPodJSON(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSON(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return j
}

func namespaceOf(t testing.TB, raw []byte) string {
	var m struct {
		Metadata struct {
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m.Metadata.Namespace == "" {
		return "default"
	}
	return m.Metadata.Namespace
}

// applyPatch applies a patch with the library the API server uses.
func applyPatch(t testing.TB, raw, patch []byte) []byte {
	t.Helper()
	if patch == nil {
		return raw
	}
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", patch, err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch %s: %v", patch, err)
	}
	return out
}

// patchOp is one JSON patch operation, as a test reads it.
type patchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// assertOnlyAdds checks that the patch only adds, but for the removals of
// the documented account switch: the ServiceAccount plugin's token volume and
// its mounts, and what the EKS webhook added for the pod's old account (its
// aws-iam-token volume and mounts, AWS_ROLE_ARN and
// AWS_WEB_IDENTITY_TOKEN_FILE); each remove right after tests of the item's
// key fields at its path, the name first.
func assertOnlyAdds(t testing.TB, patch []byte) {
	t.Helper()
	if patch == nil {
		return
	}
	var ops []patchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch is not a list of operations: %v", err)
	}
	removable := func(name string) bool {
		return strings.HasPrefix(name, tokenVolumePrefix) || name == eksVolumeName || name == EnvAWSRoleARN || name == EnvAWSWebIdentityTokenFile
	}
	for i, op := range ops {
		switch op.Op {
		case "add":
		case "test":
			j := i + 1
			for j < len(ops) && ops[j].Op == "test" {
				j++
			}
			if j == len(ops) || ops[j].Op != "remove" || !strings.HasPrefix(op.Path, ops[j].Path+"/") {
				t.Errorf("patch has a test at %s that guards no remove", op.Path)
			}
		case "remove":
			k := i
			for k > 0 && ops[k-1].Op == "test" {
				k--
			}
			name, _ := ops[k].Value.(string)
			if k == i || ops[k].Path != op.Path+"/name" || !removable(name) {
				t.Errorf("patch removes %s, which is not what the account switch removes", op.Path)
			}
		default:
			t.Errorf("patch has %q at %s; secctx only adds", op.Op, op.Path)
		}
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got); run go test -update if the change is right:\n%s", path, diff)
	}
}

func mustNotExist(t *testing.T, path string) {
	t.Helper()
	if *update {
		os.Remove(path)
		return
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("stale golden file %s: this fixture gives the other outcome", path)
	}
}

// TestViewAsksForTheWholePod: the pod view is enough for every fixture but
// those where secctx must compare what the view leaves out (a reinvocation
// with secctx's own containers or projected volumes, an account switch that
// removes the API token or moves the EKS webhook's role); for those, and
// only those, PatchView asks for the whole pod. Every other pod, the common
// case, stays on the view's fast path.
func TestViewAsksForTheWholePod(t *testing.T) {
	needsFull := map[string]bool{
		"eks-switch-audience": true, "eks-switch-audience-last": true, "eks-switch-none": true, "eks-switch-none-still-mounted": true, "eks-switch-role": true,
		"iam-role-forged-volume": true, "sa-no-automount": true, "sa-no-automount-author-volume": true,
		"sa-no-automount-mounted-twice": true, "sa-no-automount-other-shape": true,
		"tokens-forged-sidecar": true, "tokens-forged-token-mount": true, "tokens-reinvocation-defaulted": true,
	}
	inputs, _ := filepath.Glob("testdata/pods/*.in.yaml")
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		cfg := fixtureConfig(t, name)
		raw := readPodJSON(t, in)
		var v PodView
		if err := jsonv2.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		_, err := newTestInjector(t, cfg).PatchView(context.Background(), nil, &v, namespaceOf(t, raw))
		if got := errors.Is(err, ErrFullPodNeeded); got != needsFull[name] {
			t.Errorf("%s: PatchView asks for the whole pod: %v, want %v (%v)", name, got, needsFull[name], err)
		}
	}
}
