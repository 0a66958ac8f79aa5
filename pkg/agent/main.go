package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

const usage = `usage: secctx-agent <command> [flags]

Runs inside task pods, added by the secctx webhook:
  sidecar   the sidecar: obtains and renews OAuth2 tokens, and keeps fetched
            secrets fresh, in files (tokens: the same)
  fetch     the init container: reads secrets from their stores into files
            (Google Secret Manager's only in secctx-fetch, which pods run)
  exec      the exec wrapper: sets env vars from files, then execs the task
  install   copies this binary into a directory, for the exec wrapper
`

// Main runs the agent command in args (without the program name) and
// returns the exit code. It stops on SIGTERM or SIGINT.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "exec":
		return runExec(args[1:], stderr)
	case "install":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "usage: secctx-agent install <dir>")
			return 2
		}
		if err := Install(args[1]); err != nil {
			fmt.Fprintln(stderr, "secctx-agent install:", err)
			return 1
		}
		return 0
	case "fetch":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		return runFetch(ctx, args[1:], stderr)
	case "sidecar", "tokens": // tokens: the sidecar's name when it kept only tokens
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		defer stop()
		return runSidecar(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "secctx-agent: unknown command %q\n%s", args[0], usage)
	return 2
}

// newLogger logs JSON lines to w, as the webhook does.
func newLogger(w io.Writer) logr.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	core := zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.InfoLevel)
	return zapr.NewLogger(zap.New(core))
}
