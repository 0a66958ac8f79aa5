package inject

import (
	"errors"
	"strings"
)

// DeniedError is a refusal: the pod asks for something secctx cannot or will
// not give it. Its message names the pod and every problem with its field.
type DeniedError struct {
	// Pod is namespace/name (or namespace/generateName* before a name is set).
	Pod string
	// Problems are full sentences, each starting with where the problem is.
	Problems []string
}

func (e *DeniedError) Error() string {
	return "pod " + e.Pod + ": " + strings.Join(e.Problems, "; ")
}

// IsDenied reports whether err is a refusal rather than an internal failure.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}
