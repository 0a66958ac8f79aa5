// Package v1alpha1 is secctx's API group secctx.dev, version v1alpha1: the
// cluster-scoped SecurityContextPolicy, which says which namespaces may ask
// for which secrets, identities and tokens (docs/policy.md).
//
// +kubebuilder:object:generate=true
// +groupName=secctx.dev
package v1alpha1
