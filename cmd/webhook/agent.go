package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"
)

// agentBinary is the in-pod agent's own binary (cmd/agent).
const agentBinary = "secctx-agent"

// newAgentCommand runs the in-pod agent (pkg/agent) by running the
// secctx-agent binary, from beside secctx (as in secctx's image and in bin/
// after make build), else from PATH. Its code is not linked into secctx:
// the AWS SDK and Vault's client made the webhook 5 MB larger and cost it
// 9 MiB of RSS and a megabyte of heap at every start, for a command pods
// never run through secctx (docs/performance-notes.md).
func newAgentCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "agent <sidecar|fetch|exec|install> [flags]",
		Short: "Run the in-pod agent: sidecar, fetch, exec wrapper, installer",
		Long: `Run what secctx adds to task pods (docs/tokens.md, docs/backends.md, docs/refresh.md):
  sidecar   the sidecar: obtains and renews OAuth2 tokens, and keeps fetched
            secrets fresh, in files (tokens: the same)
  fetch     the init container that reads secrets from AWS, Vault or Azure (Google: secctx-fetch)
  exec      the exec wrapper: sets env vars from files, then execs the task
  install   copies the agent binary into a directory, for the exec wrapper
It runs the secctx-agent binary, which pods run directly: beside secctx (as in
the image and bin/), else from PATH.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := findAgent()
			if err != nil {
				return err
			}
			c := exec.CommandContext(cmd.Context(), path, args...)
			c.Stdin, c.Stdout, c.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			var exit *exec.ExitError
			switch err := c.Run(); {
			case errors.As(err, &exit) && exit.ExitCode() > 0:
				return exitError{code: exit.ExitCode()}
			case err != nil:
				return fmt.Errorf("run %s: %w", path, err)
			}
			return nil
		},
	}
}

// findAgent is secctx-agent beside this binary, else on PATH.
func findAgent() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), agentBinary)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(agentBinary); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("secctx agent runs %s, which is neither beside secctx nor on PATH: make build puts both in bin/, or go install ./cmd/agent", agentBinary)
}
