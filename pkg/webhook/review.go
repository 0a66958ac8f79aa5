package webhook

import (
	"fmt"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/secctx/secctx/pkg/inject"
)

// UnmarshalJSONFrom reads the review's apiVersion and request and skips the
// rest. Like the pod's decoder it reads tokens by hand, for the same reason
// (docs/performance-notes.md), with the reflection decoder's semantics;
// TestReviewMatchesReflection and FuzzReview hold the two to the same result.
func (r *reviewIn) UnmarshalJSONFrom(d *jsontext.Decoder) error {
	return inject.DecodeObject(d, func() { *r = reviewIn{} }, func(name []byte) error {
		var err error
		switch string(name) {
		case "apiVersion":
			r.APIVersion, err = readString(d)
		case "request":
			if d.PeekKind() == 'n' {
				_, err = d.ReadToken()
				r.Request = nil
				return err
			}
			if r.Request == nil {
				r.Request = &requestIn{}
			}
			err = r.Request.read(d)
		default:
			err = d.SkipValue()
		}
		return err
	})
}

func (q *requestIn) read(d *jsontext.Decoder) error {
	return inject.DecodeObject(d, func() { *q = requestIn{} }, func(name []byte) error {
		var err error
		var s string
		switch string(name) {
		case "uid":
			s, err = readString(d)
			q.UID = types.UID(s)
		case "kind":
			err = inject.DecodeObject(d, func() { q.Kind = metav1.GroupVersionKind{} }, func(name []byte) error {
				var err error
				switch string(name) {
				case "group":
					q.Kind.Group, err = readString(d)
				case "version":
					q.Kind.Version, err = readString(d)
				case "kind":
					q.Kind.Kind, err = readString(d)
				default:
					err = d.SkipValue()
				}
				return err
			})
		case "subResource":
			q.SubResource, err = readString(d)
		case "name":
			q.Name, err = readString(d)
		case "namespace":
			q.Namespace, err = readString(d)
		case "operation":
			s, err = readString(d)
			q.Operation = admissionv1.Operation(s)
		case "object":
			if d.PeekKind() == 'n' {
				_, err = d.ReadToken()
				q.Object = nil
				return err
			}
			if q.Object == nil {
				q.Object = &inject.PodView{}
			}
			err = q.Object.UnmarshalJSONFrom(d)
		default:
			err = d.SkipValue()
		}
		return err
	})
}

// readString reads a string; null is "".
func readString(d *jsontext.Decoder) (string, error) {
	tok, err := d.ReadToken()
	if err != nil {
		return "", err
	}
	switch tok.Kind() {
	case '"':
		return tok.String(), nil
	case 'n':
		return "", nil
	}
	return "", fmt.Errorf("%s: want a string, got %s", d.StackPointer(), tok.Kind())
}

var _ jsonv2.UnmarshalerFrom = (*reviewIn)(nil)
