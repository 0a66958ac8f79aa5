// Package webhook serves secctx's mutating admission webhook with
// controller-runtime: the pod handler, which answers with targeted JSON patch
// operations from pkg/inject, the service-account lookup it uses, the typed
// config, logging and the manager that ties them together.
package webhook
