//go:build tools

// Package tools pins controller-gen, which generates the CRD and deepcopy
// code of pkg/apis (make generate). A module of its own, so that
// controller-tools never enters secctx's go.mod.
package tools

import _ "sigs.k8s.io/controller-tools/cmd/controller-gen"
