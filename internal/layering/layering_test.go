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
// secctx's; pkg/inject only those two; the in-pod agent only pkg/agentapi
// and its own internal package, and nothing of Kubernetes, so that every
// task pod runs a small binary. The gcp store (pkg/agent/gcp), whose
// official client is gRPC, is linked into secctx-fetch (cmd/fetch) alone:
// secctx-agent (cmd/agent), which the token sidecar runs, links no gRPC,
// protobuf or Google client library.
func TestImportsPointOneWay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	const storekit = "pkg/agent/internal/storekit"
	for pkg, allowed := range map[string][]string{
		"pkg/securityctx": nil,
		"pkg/agentapi":    nil,
		"pkg/inject":      {"pkg/securityctx", "pkg/agentapi"},
		"pkg/agent":       {"pkg/agentapi", storekit},
		"pkg/agent/gcp":   {"pkg/agent", "pkg/agentapi", storekit},
		"cmd/agent":       {"pkg/agent", "pkg/agentapi", storekit},
		"cmd/fetch":       {"pkg/agent", "pkg/agent/gcp", "pkg/agentapi", storekit},
	} {
		for _, d := range deps(t, pkg) {
			own, ok := strings.CutPrefix(d, module)
			if ok && own != pkg && !slices.Contains(allowed, own) {
				t.Errorf("%s links %s; it may link only %v of secctx's packages", pkg, own, allowed)
			}
		}
	}
	for _, pkg := range []string{"pkg/agent", "pkg/agentapi", "pkg/agent/gcp", "cmd/agent", "cmd/fetch"} {
		for _, d := range deps(t, pkg) {
			if strings.HasPrefix(d, "k8s.io/") || strings.HasPrefix(d, "sigs.k8s.io/") {
				t.Errorf("%s links %s: the in-pod agent must not carry the Kubernetes API types", pkg, d)
			}
		}
	}
	for _, pkg := range []string{"pkg/agent", "pkg/agentapi", "cmd/agent"} {
		for _, d := range deps(t, pkg) {
			for _, heavy := range []string{"google.golang.org/grpc", "google.golang.org/protobuf", "google.golang.org/genproto", "google.golang.org/api", "cloud.google.com/"} {
				if strings.HasPrefix(d, heavy) {
					t.Errorf("%s links %s: gRPC, protobuf and Google's client libraries belong in secctx-fetch (cmd/fetch, pkg/agent/gcp) alone, not in secctx-agent, which every token sidecar runs", pkg, d)
				}
			}
		}
	}
}
