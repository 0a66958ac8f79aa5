//go:build tools

// Package tools pins kumo, the AWS emulator (Secrets Manager and STS) that
// the aws backend's tests run against. A module of its own: kumo pins its own
// aws-sdk-go-v2 service modules.
package tools

import _ "github.com/sivchari/kumo/cmd/kumo"
