package webhook

import (
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admission/v1"
)

// reflectReview has reviewIn's fields but not its decoder: the reference.
// requestIn itself has no decoder method, so reflection decodes it here.
type reflectReview struct {
	APIVersion string     `json:"apiVersion"`
	Request    *requestIn `json:"request"`
}

// decodeReviewBoth decodes with the default options and with those the
// handler uses.
func decodeReviewBoth(t *testing.T, raw []byte) {
	t.Helper()
	decodeReviewBothWith(t, raw)
	decodeReviewBothWith(t, raw, reviewDecodeOptions)
}

func decodeReviewBothWith(t *testing.T, raw []byte, opts ...jsonv2.Options) {
	t.Helper()
	var got reviewIn
	gotErr := jsonv2.Unmarshal(raw, &got, opts...)
	var want reflectReview
	wantErr := jsonv2.Unmarshal(raw, &want, opts...)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%s\nhand-written decoder: %v\nreflection: %v", raw, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	if diff := cmp.Diff(want, reflectReview(got)); diff != "" {
		t.Fatalf("%s\n(-reflection +hand-written):\n%s", raw, diff)
	}
}

var reviewEdgeCases = []string{
	`null`, `{}`, `{"request":null}`, `{"request":{}}`, `{"request":{"object":null}}`, `{"request":[]}`,
	`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},` +
		`"resource":{"group":"","version":"v1","resource":"pods"},"subResource":"status","requestKind":{"kind":"Pod"},"name":"n","namespace":"ns",` +
		`"operation":"CREATE","userInfo":{"username":"u","groups":["a"],"extra":{"k":["v"]}},"object":{"metadata":{"name":"p"}},"oldObject":null,` +
		`"dryRun":true,"options":{"kind":"CreateOptions"}}}`,
	`{"request":{"kind":{"kind":1}}}`, `{"request":{"uid":7}}`, `{"request":{"operation":null,"name":null}}`,
	`{"request":{"k\u0069nd":{"kind":"Pod"},"Kind":{"kind":"Lower"}}}`,
	`{"request":{"uid":"a","uid":"b"}}`, `{"request":{"object":{"spec":{"containers":[{"name":"c"}]}}}}`,
	`{"request":{"object":"pod"}}`, `{"request":{"object":{}}`, `{"apiVersion":"v1"} {}`,
	`{"request":{"kind":{"kind":"Pod"},"kind":null,"uid":"u"},"request":{"name":"n"}}`,
	`{"request":{"uid":"u"},"request":null}`, `{"request":{"object":{"metadata":{"name":"a"}},"object":null}}`,
	`{"request":{"object":{"metadata":{"name":"a"}},"object":{"spec":{}}}}`,
}

func TestReviewMatchesReflection(t *testing.T) {
	inputs := [][]byte{
		reviewBytes(t, taskPod(t, 0), admissionv1.Create),
		reviewBytes(t, taskPod(t, 3), admissionv1.Create),
		reviewBytes(t, taskPod(t, 20), admissionv1.Update),
	}
	for _, s := range reviewEdgeCases {
		inputs = append(inputs, []byte(s))
	}
	for _, raw := range inputs {
		decodeReviewBoth(t, raw)
	}
}

func FuzzReview(f *testing.F) {
	for _, s := range reviewEdgeCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { decodeReviewBoth(t, raw) })
}
