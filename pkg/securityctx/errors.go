package securityctx

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxQuoted is how many bytes of a value, or of a name, a message quotes. A
// pod can carry megabytes in one annotation; a denial or a log line that
// echoed all of it would be as large (and the API server would store the
// denial in its audit log).
const MaxQuoted = 200

// maxListed is how many problems a message lists before it only counts them.
const maxListed = 10

// Quote quotes s as Go (and JSON, for printable text) would, but at most
// MaxQuoted bytes of it: a longer value is cut at a character boundary and
// its length is said.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	return strconv.Quote(cut(s)) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

// Shorten is Quote for text that is shown unquoted, such as a field path
// that holds a name from the input.
func Shorten(s string) string { return ShortenTo(s, MaxQuoted) }

// ShortenTo is Shorten with a bound of n bytes: a longer s is cut at a
// character boundary and its length is said.
func ShortenTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutTo(s, n) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

func cut(s string) string { return cutTo(s, MaxQuoted) }

func cutTo(s string, n int) string {
	c := s[:n]
	for len(c) > 0 && !utf8.ValidString(c) {
		c = c[:len(c)-1]
	}
	return c
}

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
		return Shorten(e.Field) + " " + Quote(e.Value) + ": " + e.Detail
	default:
		return Shorten(e.Field) + ": " + e.Detail
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

// Error lists the first problems and counts the rest, so that a document
// with thousands of mistakes gives a message of a readable size.
func (l ErrorList) Error() string {
	msgs := make([]string, 0, min(len(l), maxListed)+1)
	for i, e := range l {
		if i == maxListed {
			msgs = append(msgs, "and "+strconv.Itoa(len(l)-maxListed)+" more problems")
			break
		}
		msgs = append(msgs, e.Error())
	}
	return strings.Join(msgs, "; ")
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func child(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
