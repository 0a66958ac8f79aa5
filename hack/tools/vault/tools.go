//go:build tools

// Package tools pins the Vault server that the vault backend's tests run in
// dev mode. A module of its own: Vault needs a patched copy of its published
// sdk (build.sh makes it) and replaces that no other module should inherit.
package tools

import _ "github.com/hashicorp/vault"
