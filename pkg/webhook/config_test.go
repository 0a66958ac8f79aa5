package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/secctx/secctx/pkg/securityctx"
)

func TestLoadConfig(t *testing.T) {
	const hdr = "apiVersion: config.secctx.dev/v1alpha1\nkind: SecctxConfiguration\n"
	tests := []struct {
		name, yaml string
		want       func(*Config)
		wantErr    string
	}{
		{name: "header only keeps the defaults", yaml: hdr, want: func(*Config) {}},
		{name: "no header", yaml: "port: 1\n", wantErr: "start the file with:\napiVersion: config.secctx.dev/v1alpha1\nkind: SecctxConfiguration"},
		{name: "empty file", yaml: "", wantErr: `apiVersion "", kind "": must be config.secctx.dev/v1alpha1, SecctxConfiguration`},
		{name: "other version", yaml: "apiVersion: config.secctx.dev/v1\nkind: SecctxConfiguration\n", wantErr: `apiVersion "config.secctx.dev/v1"`},
		{name: "overrides", yaml: hdr + `
port: 10250
certDir: /certs
logLevel: debug
enableHTTP2: true
inject:
  anyMountAs: ENV_VAR
  secretsDir: /run/secrets
`, want: func(c *Config) {
			c.Port, c.CertDir, c.LogLevel, c.EnableHTTP2 = 10250, "/certs", "debug", true
			c.Inject.AnyMountAs, c.Inject.SecretsDir = securityctx.MountEnvVar, "/run/secrets"
		}},
		{name: "unknown key", yaml: hdr + "port: 1\nprot: 2\n", wantErr: `unknown field "prot"`},
		{name: "unknown nested key", yaml: hdr + "inject:\n  prefix: X\n", wantErr: `unknown field "inject.prefix"`},
		{name: "repeated key", yaml: hdr + "port: 1\nport: 2\n", wantErr: `"port" already set`},
		{name: "wrong type", yaml: hdr + "port: nine\n", wantErr: "port"},
		{name: "bad enum", yaml: hdr + "inject:\n  anyMountAs: DISK\n", wantErr: "DISK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tt.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := LoadConfig(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("LoadConfig error = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := DefaultConfig()
			tt.want(&want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("LoadConfig (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Error("LoadConfig of a missing file: no error")
	}
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.Port, c.CertDir, c.MetricsBindAddress, c.LogLevel = 0, "", "8080", "loud"
	c.Inject.SecretsDir = "relative"
	err := c.Validate()
	for _, want := range []string{"port 0: must be 1-65535", "certDir: required", `metricsBindAddress "8080": must be host:port`,
		`logLevel "loud": must be debug, info or error`, `inject.secretsDir "relative"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v; want it to contain %q", err, want)
		}
	}
	c = DefaultConfig()
	c.MetricsBindAddress, c.HealthProbeBindAddress = "0", "0"
	if err := c.Validate(); err != nil {
		t.Errorf("0 to turn servers off: %v", err)
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger("info", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("pod denied", "namespace", "ns", "reason", "r")
	log.V(1).Info("hidden at info")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("not one JSON line: %q", buf.String())
	}
	if line["msg"] != "pod denied" || line["namespace"] != "ns" || line["level"] != "info" || line["ts"] == nil {
		t.Errorf("log line %v", line)
	}
	if _, err := NewLogger("verbose", &buf); err == nil {
		t.Error("NewLogger(verbose): no error")
	}
}
