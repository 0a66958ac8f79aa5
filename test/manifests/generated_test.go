package manifests

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/secctx/secctx/test/framework"
)

// TestGeneratedUpToDate runs controller-gen, pinned in hack/tools/codegen,
// on pkg/apis and fails when the committed deepcopy code or CRD differ from
// what it writes: run make generate.
func TestGeneratedUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds controller-gen")
	}
	root := framework.Root()
	bin := filepath.Join(t.TempDir(), "controller-gen")
	build := exec.Command("go", "build", "-o", bin, "sigs.k8s.io/controller-tools/cmd/controller-gen")
	build.Dir = filepath.Join(root, "hack", "tools", "codegen")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build controller-gen: %v\n%s", err, out)
	}
	for _, g := range []struct{ args, file string }{
		{"object", "pkg/apis/v1alpha1/zz_generated.deepcopy.go"},
		{"crd:crdVersions=v1", "config/crd/secctx.dev_securitycontextpolicies.yaml"},
		{"crd:crdVersions=v1", "charts/secctx/files/secctx.dev_securitycontextpolicies.yaml"},
	} {
		gen := exec.Command(bin, g.args, "paths=./pkg/apis/...", "output:"+map[bool]string{true: "object", false: "crd"}[g.args == "object"]+":stdout")
		gen.Dir = root
		want, err := gen.Output()
		if err != nil {
			t.Fatalf("controller-gen %s: %v", g.args, err)
		}
		have, err := os.ReadFile(filepath.Join(root, g.file))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(have)); diff != "" {
			t.Errorf("%s is stale; run make generate (-generated +committed):\n%s", g.file, diff)
		}
	}
}
