// Package agent is what secctx runs inside task pods, as the small
// secctx-agent binary: the token sidecar (tokens), the exec wrapper (exec)
// and its installer (install). It imports only pkg/securityctx: it must not
// carry the webhook's dependencies into every task pod (docs/tokens.md).
package agent
