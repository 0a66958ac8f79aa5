package inject

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// fakeServiceAccounts has every account except those whose name starts
// with "missing". Accounts named no-automount* (and default in namespaces
// named no-automount*) set automountServiceAccountToken false; accounts
// named pull* have the image pull secret "registry".
type fakeServiceAccounts struct{ lookups int }

func (f *fakeServiceAccounts) ServiceAccount(_ context.Context, ns, name string) (*corev1.ServiceAccount, error) {
	f.lookups++
	if strings.HasPrefix(name, "missing") {
		return nil, nil
	}
	sa := &corev1.ServiceAccount{}
	sa.Name, sa.Namespace = name, ns
	if strings.HasPrefix(name, "no-automount") || name == "default" && strings.HasPrefix(ns, "no-automount") {
		sa.AutomountServiceAccountToken = new(bool)
	}
	if strings.HasPrefix(name, "pull") {
		sa.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "registry"}}
	}
	return sa, nil
}

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
			// name.config.yaml, when there, overrides the defaults (vault,
			// Flyte mode off); the fixtures run in Flyte mode.
			cfg := DefaultConfig()
			cfg.Flyte.Enabled = true
			cfg.Agent.Image = "ghcr.io/secctx/secctx:0.1.0"
			if b, err := os.ReadFile(filepath.Join("testdata/pods", name+".config.yaml")); err == nil {
				if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
					t.Fatal(err)
				}
			}
			injector := newTestInjector(t, cfg)
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

// assertOnlyAdds checks that the patch only adds, but for the one removal
// secctx makes: the ServiceAccount plugin's token volume and its mounts,
// each remove right after a test of the name at its path.
func assertOnlyAdds(t testing.TB, patch []byte) {
	t.Helper()
	if patch == nil {
		return
	}
	var ops []patchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch is not a list of operations: %v", err)
	}
	for i, op := range ops {
		switch op.Op {
		case "add":
		case "test":
			if i+1 == len(ops) || ops[i+1].Op != "remove" || ops[i+1].Path+"/name" != op.Path {
				t.Errorf("patch has a test at %s that guards no remove", op.Path)
			}
		case "remove":
			name, _ := ops[max(i-1, 0)].Value.(string)
			if i == 0 || ops[i-1].Op != "test" || !strings.HasPrefix(name, tokenVolumePrefix) {
				t.Errorf("patch removes %s, which is not the service-account token volume or its mount", op.Path)
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
