package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/secctx/secctx/pkg/webhook"
)

// exitError carries a message already written for the user and the exit code.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:           "secctx",
		Short:         "Turn a task pod's SecurityContext into secrets, identity and tokens",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServeCommand(), newInjectCommand(), newAgentCommand(), newVersionCommand())
	err := root.Execute()
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	default:
		fmt.Fprintln(stderr, "secctx:", err)
		return 1
	}
}

// loadConfig reads --config, or returns the defaults when it is not given.
func loadConfig(path string) (webhook.Config, error) {
	if path == "" {
		return webhook.DefaultConfig(), nil
	}
	return webhook.LoadConfig(path)
}
