package main

import (
	"github.com/spf13/cobra"

	"github.com/secctx/secctx/pkg/agent"
)

// newAgentCommand runs the in-pod agent (pkg/agent) from the secctx binary.
// Pods run the small secctx-agent binary instead, which has the same
// commands; this one is for trying them out where only secctx is at hand.
func newAgentCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "agent <tokens|exec|install> [flags]",
		Short: "Run the in-pod agent: token sidecar, exec wrapper, installer",
		Long: `Run what secctx adds to task pods (docs/tokens.md):
  tokens    the token sidecar: obtains and refreshes OAuth2 tokens into files
  exec      the exec wrapper: sets env vars from files, then execs the task
  install   copies the agent binary into a directory, for the exec wrapper
Pods run the same commands from the smaller secctx-agent binary.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := agent.Main(args, cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				return exitError{code: code}
			}
			return nil
		},
	}
}
