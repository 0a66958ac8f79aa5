package layering

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/secctx/secctx/"

// deps lists the packages pkg links, from the go command itself.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", module+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestImportsPointOneWay: pkg/securityctx and pkg/agentapi import nothing of
// secctx's; pkg/inject only those two; the in-pod agent only pkg/agentapi,
// and nothing of Kubernetes or protobuf, so that every task pod runs a small
// binary.
func TestImportsPointOneWay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	for pkg, allowed := range map[string][]string{
		"pkg/securityctx": nil,
		"pkg/agentapi":    nil,
		"pkg/inject":      {"pkg/securityctx", "pkg/agentapi"},
		"pkg/agent":       {"pkg/agentapi"},
		"cmd/agent":       {"pkg/agent", "pkg/agentapi"},
	} {
		for _, d := range deps(t, pkg) {
			own, ok := strings.CutPrefix(d, module)
			if ok && own != pkg && !slices.Contains(allowed, own) {
				t.Errorf("%s links %s; it may link only %v of secctx's packages", pkg, own, allowed)
			}
		}
	}
	for _, pkg := range []string{"pkg/agent", "pkg/agentapi", "cmd/agent"} {
		for _, d := range deps(t, pkg) {
			if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") || strings.HasPrefix(d, "google.golang.org/protobuf") {
				t.Errorf("%s links %s: the in-pod agent must not carry the Kubernetes API types or protobuf", pkg, d)
			}
		}
	}
}
