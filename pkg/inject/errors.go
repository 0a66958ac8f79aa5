package inject

import (
	"errors"
	"strconv"
	"strings"

	"github.com/secctx/secctx/pkg/securityctx"
)

// DeniedError is a refusal: the pod asks for something secctx cannot or will
// not give it. Its message names the pod and every problem with its field.
type DeniedError struct {
	// Pod is namespace/name (or namespace/generateName* before a name is set).
	Pod string
	// Problems are full sentences, each starting with where the problem is.
	Problems []string
}

// The message's bounds. Every value in a problem is already quoted short
// (securityctx.Quote); these hold whatever a pod sends: the message goes
// back through the API server to the client, into its audit log and into
// secctx's own log line.
const (
	maxProblems     = 10
	maxProblemBytes = 4096
)

func (e *DeniedError) Error() string {
	var b strings.Builder
	b.WriteString("pod ")
	b.WriteString(securityctx.ShortenTo(e.Pod, maxProblemBytes))
	b.WriteString(": ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		if i == maxProblems {
			b.WriteString("and " + strconv.Itoa(len(e.Problems)-maxProblems) + " more problems")
			break
		}
		b.WriteString(securityctx.ShortenTo(p, maxProblemBytes))
	}
	return b.String()
}

// ErrFullPodNeeded is PatchView's answer for a pod whose view lacks what
// secctx must compare in full: an init container of secctx's on a
// reinvocation, a projected volume of secctx's, or the service-account token
// volumes an account switch removes. The caller decodes the whole pod and
// calls PatchTo. Such pods are a small share (reinvocations, account
// switches), so the view stays small for the rest.
var ErrFullPodNeeded = errors.New("the pod's view lacks fields secctx must compare; decode the whole pod")

// IsDenied reports whether err is a refusal rather than an internal failure.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}
