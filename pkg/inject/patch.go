package inject

import (
	"slices"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	corev1 "k8s.io/api/core/v1"
)

// AppendPatch appends to b the JSON patch that turns before into after,
// where after came from Inject(before), and returns b unchanged when there
// is nothing to do. It looks only at what Inject may change: the ends of
// env, envFrom and volumeMounts lists in each container, the start of a
// wrapped command and of the init containers (tokens), the end of the
// volume and imagePullSecrets lists, the service account, and label and
// annotation keys. Every operation is an append or a keyed add, so fields
// secctx does not know (newer API fields, native sidecars' restartPolicy)
// are never touched. The one exception is the account switch
// (switchAccount), which removes what was added for the pod's old account:
// the ServiceAccount plugin's token volume and its mounts, and the EKS
// webhook's role (env entries, volume, mounts). Those are removed by index,
// each remove guarded by tests of the item's key fields at that index (its
// name, and a mount's path or an env var's value), so that the patch fails
// rather than removes anything else.
//
// The operations are written straight into b, values included, instead of
// being collected as []Op and encoded: the boxed values, path strings and
// buffers of that detour were a fifth of the memory a request allocated,
// and allocation is what makes the garbage collector run
// (docs/performance-notes.md).
func AppendPatch(b []byte, before, after *corev1.Pod) ([]byte, error) {
	return appendPatch(b, before, after, nil)
}

// appendPatch is AppendPatch; encoded, when not nil, gives the JSON of an
// init container secctx inserts (the token plan keeps its agent
// containers encoded), or nil to encode it here.
func appendPatch(b []byte, before, after *corev1.Pod, encoded func(*corev1.Container) []byte) ([]byte, error) {
	w := patchWriter{b: b, start: len(b)}
	w.diffMap("/metadata/labels", before.Labels, after.Labels)
	w.diffMap("/metadata/annotations", before.Annotations, after.Annotations)
	// secctx's agent containers are inserted at the front of the init
	// containers (applyAgent); the others keep their order, so the first
	// added are the new ones. They are written after every change to the
	// others, whose paths are their indexes before the insertion.
	added := len(after.Spec.InitContainers) - len(before.Spec.InitContainers)
	for i := range before.Spec.InitContainers {
		w.diffContainer("/spec/initContainers/", i, &before.Spec.InitContainers[i], &after.Spec.InitContainers[i+added])
	}
	switch {
	case added == 0:
	case len(before.Spec.InitContainers) == 0:
		w.op("/spec/initContainers", -1, "", "")
		w.b = append(w.b, '[')
		for i := range after.Spec.InitContainers {
			if i > 0 {
				w.b = append(w.b, ',')
			}
			w.container(&after.Spec.InitContainers[i], encoded)
		}
		w.b = append(w.b, ']')
	default:
		for i := range added {
			w.op("/spec/initContainers/", i, "", "")
			w.container(&after.Spec.InitContainers[i], encoded)
		}
	}
	for i := range after.Spec.Containers {
		w.diffContainer("/spec/containers/", i, &before.Spec.Containers[i], &after.Spec.Containers[i])
	}
	diffNamed(&w, "/spec/volumes", -1, "", before.Spec.Volumes, after.Spec.Volumes, keptVolume, volumeKey)
	diffList(&w, "/spec/imagePullSecrets", -1, "", before.Spec.ImagePullSecrets, after.Spec.ImagePullSecrets)
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
	w.opAt("add", base, index, field, suffix)
}

// opAt is op for another operation than add.
func (w *patchWriter) opAt(kind, base string, index int, field, suffix string) {
	if len(w.b) == w.start {
		w.b = append(w.b, `[{"op":"`...)
	} else {
		w.b = append(w.b, `},{"op":"`...)
	}
	w.b = append(w.b, kind...)
	w.b = append(w.b, `","path":"`...)
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

// container writes an inserted init container, from its encoding when the
// plan has it.
func (w *patchWriter) container(c *corev1.Container, encoded func(*corev1.Container) []byte) {
	if encoded != nil {
		if j := encoded(c); j != nil {
			w.b = append(w.b, j...)
			return
		}
	}
	w.value(c)
}

func (w *patchWriter) diffContainer(base string, i int, before, after *corev1.Container) {
	// A wrapped command is the wrapper's words, then the command as it was:
	// each word is inserted at its index, the command itself left alone.
	if n := len(after.Command) - len(before.Command); n > 0 {
		for j := range n {
			w.op(base, i, "/command/", strconv.Itoa(j))
			w.value(after.Command[j])
		}
	}
	diffNamed(w, base, i, "/env", before.Env, after.Env, keptEnv, envKey)
	diffList(w, base, i, "/envFrom", before.EnvFrom, after.EnvFrom)
	diffNamed(w, base, i, "/volumeMounts", before.VolumeMounts, after.VolumeMounts, keptMount, mountKey)
}

// The fields that tell one item of a list from another, as JSON pointer
// suffix and value: what diffNamed tests before it removes an item. A
// container may mount one volume at several paths, and set one env name
// twice.
func volumeKey(v *corev1.Volume) [][2]string { return [][2]string{{"/name", v.Name}} }
func mountKey(m *corev1.VolumeMount) [][2]string {
	return [][2]string{{"/name", m.Name}, {"/mountPath", m.MountPath}}
}
func envKey(e *corev1.EnvVar) [][2]string {
	k := [][2]string{{"/name", e.Name}}
	if e.Value != "" {
		k = append(k, [2]string{"/value", e.Value})
	}
	return k
}

// Whether an item of after is the item of before it was copied from. Inject
// never changes an item in place: it keeps it (copied by value, so its
// pointers are the same), drops it, or appends a new one, such as a volume
// made again under the same name (switchEKSRole). So the comparison is of
// values and pointers, which costs nothing and tells a remade item from the
// one it replaces.
func keptVolume(a, b *corev1.Volume) bool {
	return a.Name == b.Name && a.VolumeSource == b.VolumeSource
}
func keptEnv(a, b *corev1.EnvVar) bool { return *a == *b }
func keptMount(a, b *corev1.VolumeMount) bool {
	return a.Name == b.Name && a.MountPath == b.MountPath && a.ReadOnly == b.ReadOnly && a.SubPath == b.SubPath &&
		a.SubPathExpr == b.SubPathExpr && a.MountPropagation == b.MountPropagation && a.RecursiveReadOnly == b.RecursiveReadOnly
}

// diffNamed is diffList for a list whose items Inject may also remove
// (switchAccount): after is before with some items left out, then a tail
// appended. The removed items go first, last index first so that the
// indexes stay right, each after a test of its key's fields, so that the
// patch fails rather than removes another item.
func diffNamed[T any](w *patchWriter, base string, index int, field string, before, after []T, same func(a, b *T) bool, key func(*T) [][2]string) {
	kept := 0
	var removed []int
	for i := range before {
		if kept < len(after) && same(&before[i], &after[kept]) {
			kept++
		} else {
			removed = append(removed, i)
		}
	}
	if len(removed) == 0 {
		diffList(w, base, index, field, before, after)
		return
	}
	for _, i := range slices.Backward(removed) {
		at := "/" + strconv.Itoa(i)
		for _, f := range key(&before[i]) {
			w.opAt("test", base, index, field, at+f[0])
			w.value(f[1])
		}
		w.opAt("remove", base, index, field, at)
		w.b = w.b[:len(w.b)-len(`,"value":`)] // a remove has no value
	}
	for k := kept; k < len(after); k++ {
		w.op(base, index, field, "/-")
		w.value(&after[k])
	}
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
