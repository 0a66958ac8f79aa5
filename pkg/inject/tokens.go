package inject

import (
	"fmt"

	"github.com/secctx/secctx/pkg/securityctx"
)

// validateTokens refuses token requests and connections: they are not
// implemented yet, and a pod that asks for one must not start without it.
func validateTokens(sc *securityctx.SecurityContext) securityctx.ErrorList {
	var errs securityctx.ErrorList
	for i, t := range sc.Tokens {
		errs = append(errs, securityctx.Invalid(fmt.Sprintf("tokens[%d]", i), t.Name, "not supported yet"))
	}
	if sc.ConnectionRef != "" {
		errs = append(errs, securityctx.Invalid("connectionRef", sc.ConnectionRef, "not supported: connections are for Flyte agents, not pods"))
	}
	return errs
}
