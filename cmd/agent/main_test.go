package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secctx/secctx/pkg/agent"
)

// TestFetchRefusesGCP: secctx-agent's fetch does not read Google Secret
// Manager (pkg/agent/gcp is secctx-fetch's): a fetch that names it fails
// at once, before any store is read, saying which binary does.
func TestFetchRefusesGCP(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	var stdout, stderr bytes.Buffer
	code := agent.Main([]string{"fetch", "--timeout=5s",
		`--secrets=[{"field":"secrets[0]","store":"gcp","id":"projects/p/secrets/s","file":"` + file + `"}]`}, &stdout, &stderr)
	want := "open store gcp: gcp: Google Secret Manager is read by /secctx-fetch, the fetch init container's binary, not by secctx-agent"
	if code != 1 || !strings.Contains(stderr.String(), want) {
		t.Errorf("exit %d, stderr:\n%s\nwant exit 1 and %q", code, stderr.String(), want)
	}
	if n := strings.Count(stderr.String(), "will retry"); n != 0 {
		t.Errorf("retried %d times", n)
	}
}
