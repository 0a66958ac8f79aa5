package securityctx

import (
	"fmt"
	"strconv"
	"strings"
)

// FieldError is one problem with a SecurityContext, at a field path such as
// secrets[1].envVar.
type FieldError struct {
	// Field is the path of the field, e.g. "secrets[1].envVar"; empty for the
	// document as a whole.
	Field string
	// Value is the offending value, shown quoted when HasValue is set. It is
	// never a secret: a SecurityContext holds references, not values.
	Value    string
	HasValue bool
	// Detail says what is allowed.
	Detail string
}

func (e *FieldError) Error() string {
	switch {
	case e.Field == "":
		return e.Detail
	case e.HasValue:
		return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Detail)
	default:
		return e.Field + ": " + e.Detail
	}
}

// Required is the error for a missing field.
func Required(field string) *FieldError {
	return &FieldError{Field: field, Detail: "required"}
}

// Invalid is the error for a field whose value is not allowed.
func Invalid(field, value, detail string) *FieldError {
	return &FieldError{Field: field, Value: value, HasValue: true, Detail: detail}
}

// ErrorList is every problem found, in document order.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Err returns the list as an error, or nil when it is empty.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func child(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
