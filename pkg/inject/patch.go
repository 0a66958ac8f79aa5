package inject

import (
	"slices"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	corev1 "k8s.io/api/core/v1"
)

// Op is one JSON patch (RFC 6902) operation. secctx only ever adds: to a
// list's end, a map key, or a field it owns.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// AppendPatch appends to b the JSON patch that turns before into after,
// where after came from Inject(before), and returns b unchanged when there
// is nothing to do. It looks only at what Inject may change: the ends of
// env, envFrom and volumeMounts lists in each container, the end of the
// volume list, the service account, and label and annotation keys. Because
// every operation is an append or a keyed add, fields secctx does not know
// (newer API fields, native sidecars' restartPolicy) are never touched.
//
// The operations are written straight into b, values included, instead of
// being collected as []Op and encoded: the boxed values, path strings and
// buffers of that detour were a fifth of the memory a request allocated,
// and allocation is what makes the garbage collector run
// (docs/performance.md).
func AppendPatch(b []byte, before, after *corev1.Pod) ([]byte, error) {
	w := patchWriter{b: b, start: len(b)}
	w.diffMap("/metadata/labels", before.Labels, after.Labels)
	w.diffMap("/metadata/annotations", before.Annotations, after.Annotations)
	for i := range after.Spec.InitContainers {
		w.diffContainer("/spec/initContainers/", i, &before.Spec.InitContainers[i], &after.Spec.InitContainers[i])
	}
	for i := range after.Spec.Containers {
		w.diffContainer("/spec/containers/", i, &before.Spec.Containers[i], &after.Spec.Containers[i])
	}
	diffList(&w, "/spec/volumes", -1, "", before.Spec.Volumes, after.Spec.Volumes)
	if after.Spec.ServiceAccountName != before.Spec.ServiceAccountName {
		w.op("/spec/serviceAccountName", -1, "", "")
		w.value(after.Spec.ServiceAccountName)
	}
	if after.Spec.DeprecatedServiceAccount != before.Spec.DeprecatedServiceAccount {
		w.op("/spec/serviceAccount", -1, "", "")
		w.value(after.Spec.DeprecatedServiceAccount)
	}
	if w.err != nil || len(w.b) == w.start {
		return b, w.err
	}
	return append(w.b, "}]"...), nil
}

// patchWriter writes operations one after another; the first error sticks.
type patchWriter struct {
	b     []byte
	start int
	err   error
}

// open starts an add operation and leaves the writer where the path goes.
func (w *patchWriter) open() {
	if len(w.b) == w.start {
		w.b = append(w.b, `[{"op":"add","path":`...)
	} else {
		w.b = append(w.b, `},{"op":"add","path":`...)
	}
}

// op starts an add operation at base, then index (if not negative), then
// field, then suffix, all plain JSON pointer text, and leaves the writer
// where the value goes.
func (w *patchWriter) op(base string, index int, field, suffix string) {
	w.open()
	w.b = append(w.b, '"')
	w.b = append(w.b, base...)
	if index >= 0 {
		w.b = strconv.AppendInt(w.b, int64(index), 10)
	}
	w.b = append(w.b, field...)
	w.b = append(w.b, suffix...)
	w.b = append(w.b, `","value":`...)
}

// opKey starts an add operation at base/key, key escaped as a JSON pointer
// token, the path quoted as JSON.
func (w *patchWriter) opKey(base, key string) {
	w.open()
	if w.err == nil {
		w.b, w.err = jsontext.AppendQuote(w.b, base+"/"+escapePointer(key))
	}
	w.b = append(w.b, `,"value":`...)
}

func (w *patchWriter) value(v any) {
	if w.err != nil {
		return
	}
	w.b, w.err = appendValue(w.b, v)
}

func (w *patchWriter) diffContainer(base string, i int, before, after *corev1.Container) {
	diffList(w, base, i, "/env", before.Env, after.Env)
	diffList(w, base, i, "/envFrom", before.EnvFrom, after.EnvFrom)
	diffList(w, base, i, "/volumeMounts", before.VolumeMounts, after.VolumeMounts)
}

// diffList writes the appended tail. An empty or missing list is set whole,
// since "/-" cannot append to a list that is not there.
func diffList[T any](w *patchWriter, base string, index int, field string, before, after []T) {
	switch {
	case len(after) == len(before):
		return
	case len(before) == 0:
		w.op(base, index, field, "")
		w.value(after)
		return
	}
	for i := len(before); i < len(after); i++ {
		w.op(base, index, field, "/-")
		w.value(&after[i])
	}
}

// diffMap writes one add per key that is new or changed, in key order. A map
// that was empty or missing is set whole.
func (w *patchWriter) diffMap(path string, before, after map[string]string) {
	if len(before) == 0 {
		if len(after) != 0 {
			w.op(path, -1, "", "")
			w.value(after)
		}
		return
	}
	var buf [4]string
	keys := buf[:0]
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		w.opKey(path, k)
		w.value(after[k])
	}
}

// appendQuoteErr appends s quoted, unless *err is set; the first error
// sticks, so a run of appends checks once.
func appendQuoteErr(b []byte, s string, err *error) []byte {
	if *err != nil {
		return b
	}
	b, *err = jsontext.AppendQuote(b, s)
	return b
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func escapePointer(s string) string { return pointerEscaper.Replace(s) }
