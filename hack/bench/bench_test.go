package main

import (
	"os"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for bench's child processes.
func TestMain(m *testing.M) {
	if child() {
		return
	}
	os.Exit(m.Run())
}

// TestBenchRuns runs every measurement briefly, so that `make bench` keeps
// working: the servers answer, the load generator and the pod creation
// succeed (every request and every pod is checked), and the page section is
// complete. The numbers of so short a run mean nothing and are not checked.
func TestBenchRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and five servers")
	}
	out := t.TempDir() + "/performance.md"
	if err := os.WriteFile(out, []byte("# page\n\nbefore\n\n"+startMarker+"\nold\n"+endMarker+"\n\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(options{out: out, rounds: 1, seconds: 1, pods: 50, goBench: true, goBenchTime: "20x", goBenchCount: 1}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	page := string(b)
	for _, want := range []string{"before", "after", "| ServeHTTP/secrets=3 |", "| ServeHTTP/secrets=3,uncached |", "### 2. HTTPS load", "| secctx serve |", "| bare net/http TLS |", "| no-op as kubebuilder scaffolds it |",
		"| no-op controller-runtime webhook |", "| patch floor (secctx's patch, no webhook work) |", "| secctx registered |", "### Against the targets",
		"| through the API server ≥ 0.9× the patch floor's throughput |", "| handler < 50 µs, < 300 allocs (secrets=3,policies=10) |", "MiB |"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "\nold\n") {
		t.Error("the old section is still there")
	}
}
