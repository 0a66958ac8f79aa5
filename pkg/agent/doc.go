// Package agent is what secctx runs inside task pods, as the small
// secctx-agent binary: the token sidecar (tokens), the fetch init container
// (fetch), the exec wrapper (exec) and its installer (install). Of secctx's
// own packages it imports only pkg/agentapi, the webhook's instructions: it
// must not carry the webhook's dependencies, nor the Kubernetes API types,
// into every task pod (docs/tokens.md). A test holds it to that.
package agent
