// Command secctx-agent is what secctx runs inside task pods: the token
// sidecar, the fetch init container, the exec wrapper and its installer
// (docs/tokens.md, docs/backends.md). It is a
// binary of its own, in secctx's image beside secctx, so that every task pod
// runs and copies a few megabytes rather than the webhook's dependencies;
// `secctx agent ...` runs the same code.
package main

import (
	"os"

	"github.com/secctx/secctx/pkg/agent"
)

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
