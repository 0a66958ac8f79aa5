package webhook

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// BenchmarkAPIServerPatch is the part of kube-apiserver's mutating-webhook
// dispatcher (k8s.io/apiserver admission/plugin/webhook/mutating, v0.37.2)
// that depends on the patch a webhook returns: decode the patch with
// gopkg.in/evanphx/json-patch.v4 (the version it links), apply it to the
// encoded pod, decode the patched pod. (Encoding the pod before, and
// comparing and defaulting after, cost the same for any patch of the same
// result.) It runs for secctx's patch of the 3-secret task pod and for
// equivalent patches in other orders, to see whether the API server would do
// less work with one of them (docs/performance-notes.md).
func BenchmarkAPIServerPatch(b *testing.B) {
	var pod corev1.Pod
	if err := json.Unmarshal(taskPod(b, 3), &pod); err != nil {
		b.Fatal(err)
	}
	s := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, clientgoscheme.Scheme, clientgoscheme.Scheme, kjson.SerializerOptions{})
	podJS, err := runtime.Encode(s, &pod)
	if err != nil {
		b.Fatal(err)
	}
	patch := post(b, newTestMutator(b), reviewBytes(b, taskPod(b, 3), admissionv1.Create)).Patch
	var ops []json.RawMessage
	if err := json.Unmarshal(patch, &ops); err != nil {
		b.Fatal(err)
	}
	byPath := slices.Clone(ops)
	slices.SortStableFunc(byPath, func(a, c json.RawMessage) int { return strings.Compare(opPath(b, a), opPath(b, c)) })
	// Annotations and labels first, as a webhook that writes metadata
	// before the spec would.
	metaFirst := slices.Clone(ops)
	slices.SortStableFunc(metaFirst, func(a, c json.RawMessage) int {
		return boolInt(!strings.HasPrefix(opPath(b, a), "/metadata")) - boolInt(!strings.HasPrefix(opPath(b, c), "/metadata"))
	})
	want := applyPatch(b, s, patch, podJS)
	for _, v := range []struct {
		name  string
		patch []byte
	}{
		{"secctx", patch},
		{"sorted-by-path", encodeOps(b, byPath)},
		{"metadata-first", encodeOps(b, metaFirst)},
	} {
		if got := applyPatch(b, s, v.patch, podJS); !equality.Semantic.DeepEqual(want, got) {
			b.Fatalf("%s: a different pod", v.name)
		}
		b.Run(v.name, func(b *testing.B) {
			b.ReportMetric(float64(len(ops)), "ops")
			b.ReportMetric(float64(len(v.patch)), "patch-bytes")
			b.ReportAllocs()
			for b.Loop() {
				applyPatch(b, s, v.patch, podJS)
			}
		})
	}
}

// applyPatch is the dispatcher's patch-dependent work for one answer.
func applyPatch(b *testing.B, s *kjson.Serializer, patch, podJS []byte) *corev1.Pod {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		b.Fatal(err)
	}
	patched, err := p.Apply(podJS)
	if err != nil {
		b.Fatal(err)
	}
	out := &corev1.Pod{}
	if _, _, err := s.Decode(patched, nil, out); err != nil {
		b.Fatal(err)
	}
	return out
}

func opPath(b *testing.B, op json.RawMessage) string {
	var o struct {
		Path string `json:"path"`
	}
	if err := json.Unmarshal(op, &o); err != nil {
		b.Fatal(err)
	}
	return o.Path
}

func encodeOps(b *testing.B, ops []json.RawMessage) []byte {
	out, err := json.Marshal(ops)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

func boolInt(v bool) int {
	if v {
		return 1
	}
	return 0
}
