package agent

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestSidecarArgsFromWebhook: the sidecar's arguments as the webhook
// writes them (the golden fixtures of inject.agent.fetchIn: sidecar) are
// what the agent parses: a flag renamed on one side fails here, not in a
// pod.
func TestSidecarArgsFromWebhook(t *testing.T) {
	files, _ := filepath.Glob("../inject/testdata/pods/fetch-sidecar-*.out.yaml")
	files = append(files, "../inject/testdata/pods/refresh-vault-db.out.yaml", "../inject/testdata/pods/refresh-aws-tokens.out.yaml")
	if len(files) < 3 {
		t.Fatalf("fixtures: %v", files)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var pod struct {
			Spec struct {
				InitContainers []struct {
					Name      string   `json:"name"`
					Args      []string `json:"args"`
					Lifecycle struct {
						PostStart struct {
							Exec struct {
								Command []string `json:"command"`
							} `json:"exec"`
						} `json:"postStart"`
					} `json:"lifecycle"`
				} `json:"initContainers"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(b, &pod); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, c := range pod.Spec.InitContainers {
			if c.Name != "secctx-sidecar" {
				continue
			}
			cfg, check, err := parseSidecarArgs(c.Args[1:], io.Discard)
			if err != nil || check {
				t.Errorf("%s: the sidecar's args: %v (check %v)", f, err, check)
			}
			if hook := c.Lifecycle.PostStart.Exec.Command; len(hook) > 2 {
				hcfg, check, err := parseSidecarArgs(hook[2:], io.Discard)
				if err != nil || !check || hcfg.Status != cfg.Status {
					t.Errorf("%s: the hook's args %q: %v, check %v, status %q; the sidecar writes %q", f, hook, err, check, hcfg.Status, cfg.Status)
				}
			}
		}
	}
}
