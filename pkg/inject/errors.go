package inject

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
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
	b.WriteString(clip(e.Pod, maxProblemBytes))
	b.WriteString(": ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		if i == maxProblems {
			b.WriteString("and " + strconv.Itoa(len(e.Problems)-maxProblems) + " more problems")
			break
		}
		b.WriteString(clip(p, maxProblemBytes))
	}
	return b.String()
}

// clip cuts s to at most n bytes at a character boundary, saying how long it was.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	c := s[:n]
	for len(c) > 0 && !utf8.ValidString(c) {
		c = c[:len(c)-1]
	}
	return c + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

// IsDenied reports whether err is a refusal rather than an internal failure.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}
