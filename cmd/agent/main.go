// Command secctx-agent is what secctx runs inside task pods: the token
// sidecar, the exec wrapper and its installer, and the fetch of the stores
// that pkg/agent holds (aws, vault, azure) (docs/tokens.md,
// docs/backends.md). It is a binary of its own, in secctx's image beside
// secctx, so that every task pod runs and copies a few megabytes rather
// than the webhook's dependencies; `secctx agent ...` runs the same code.
//
// It links no gRPC, protobuf or Google client (a test holds it to that):
// the fetch init container runs secctx-fetch (cmd/fetch), which reads
// Google Secret Manager too, and a token sidecar stays small.
package main

import (
	"context"
	"errors"
	"os"

	"github.com/secctx/secctx/pkg/agent"
	"github.com/secctx/secctx/pkg/agentapi"
)

// The gcp store is in secctx-fetch alone: a fetch of this binary that
// names it fails at once, saying where it is, rather than as an unknown
// store.
func init() {
	agent.RegisterStore(agentapi.StoreGCP, func(context.Context, agent.FetchConfig, []agentapi.Secret) (agent.Store, error) {
		return nil, agent.Permanent(errors.New("gcp: Google Secret Manager is read by /secctx-fetch, the fetch init container's binary, not by secctx-agent"))
	})
}

func main() {
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
