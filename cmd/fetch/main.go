// Command secctx-fetch is the fetch init container's binary
// (`secctx-fetch fetch ...`): secctx-agent's fetch with every store,
// Google Secret Manager's (pkg/agent/gcp) included. It is a binary of its
// own because that store's official client brings gRPC and protobuf, which
// linked into secctx-agent made every process of it larger in memory (an
// idle token sidecar 21 MiB instead of 12.5); this one runs once per pod,
// before the task, and as the sidecar (`secctx-fetch sidecar ...`) only in
// a pod that refreshes secrets from Google Secret Manager.
package main

import (
	"fmt"
	"os"

	"github.com/secctx/secctx/pkg/agent"
	_ "github.com/secctx/secctx/pkg/agent/gcp" // the gcp store
)

const usage = `usage: secctx-fetch fetch|sidecar [flags]

The fetch init container, added by the secctx webhook: installs the exec
wrapper (the secctx-agent beside it) and reads secrets from their stores
(aws, vault, azure, gcp) into files. The sidecar too, when it refreshes
secrets from Google Secret Manager; otherwise the sidecar and the exec
wrapper are secctx-agent's.
`

func main() {
	if len(os.Args) < 2 || os.Args[1] != "fetch" && os.Args[1] != "sidecar" {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	os.Exit(agent.Main(os.Args[1:], os.Stdout, os.Stderr))
}
