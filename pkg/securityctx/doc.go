// Package securityctx holds the SecurityContext API that workflow engines put on
// task pods for secctx: the Go types, their JSON codec (the protobuf-JSON form of
// flyteidl.core.SecurityContext), validation, and helpers that write and read the
// opt-in label and the annotation on any Kubernetes object.
//
// It imports no other secctx package, so a workflow engine can depend on it alone:
//
//	sc := &securityctx.SecurityContext{Secrets: []securityctx.Secret{{
//		Group: "my-credentials", Key: "db_password",
//		MountRequirement: securityctx.MountEnvVar, EnvVar: "DB_PASSWORD",
//	}}}
//	if err := securityctx.Apply(pod, sc); err != nil { ... }
package securityctx
