//go:build tools

// Package tools pins the etcd server the test cluster runs. It is a module of
// its own because etcd's server and Kubernetes' etcd client pin different
// versions of the same modules.
package tools

import _ "go.etcd.io/etcd/server/v3"
