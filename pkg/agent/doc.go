// Package agent is what secctx runs inside task pods, as the small
// secctx-agent binary: the token sidecar (tokens), the fetch init container
// (fetch), the exec wrapper (exec) and its installer (install). Of secctx's
// own packages it imports only pkg/agentapi, the webhook's instructions,
// and its internal storekit: it must not carry the webhook's dependencies,
// nor the Kubernetes API types, into every task pod (docs/tokens.md). A
// test holds it to that.
//
// The fetch reads each secret from its store (agentapi.Secret.Store). The
// stores of this package (aws, vault, azure) register themselves; a store
// whose client is heavier lives in a package of its own that registers it
// with RegisterStore when imported, so that only the binary that imports
// it links its client: pkg/agent/gcp (Google Secret Manager, over gRPC) is
// in secctx-fetch, the fetch init container's binary, and not in
// secctx-agent, which every token sidecar runs.
package agent
