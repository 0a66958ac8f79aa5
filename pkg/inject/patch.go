package inject

import (
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Op is one JSON patch (RFC 6902) operation. secctx only ever adds: to a
// list's end, a map key, or a field it owns.
type Op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

// Diff returns the operations that turn before into after, where after came
// from Inject(before). It looks only at what Inject may change: the ends of
// env, envFrom and volumeMounts lists in each container, the end of the
// volume list, the service account, and label and annotation keys. Because
// every operation is an append or a keyed add, fields secctx does not know
// (newer API fields, native sidecars' restartPolicy) are never touched.
func Diff(before, after *corev1.Pod) []Op {
	ops := make([]Op, 0, 16)
	ops = diffMap(ops, "/metadata/labels", before.Labels, after.Labels)
	ops = diffMap(ops, "/metadata/annotations", before.Annotations, after.Annotations)
	for i := range after.Spec.InitContainers {
		ops = diffContainer(ops, "/spec/initContainers/"+strconv.Itoa(i), &before.Spec.InitContainers[i], &after.Spec.InitContainers[i])
	}
	for i := range after.Spec.Containers {
		ops = diffContainer(ops, "/spec/containers/"+strconv.Itoa(i), &before.Spec.Containers[i], &after.Spec.Containers[i])
	}
	ops = diffList(ops, "/spec/volumes", before.Spec.Volumes, after.Spec.Volumes)
	if after.Spec.ServiceAccountName != before.Spec.ServiceAccountName {
		ops = append(ops, Op{Op: "add", Path: "/spec/serviceAccountName", Value: after.Spec.ServiceAccountName})
	}
	if after.Spec.DeprecatedServiceAccount != before.Spec.DeprecatedServiceAccount {
		ops = append(ops, Op{Op: "add", Path: "/spec/serviceAccount", Value: after.Spec.DeprecatedServiceAccount})
	}
	return ops
}

func diffContainer(ops []Op, base string, before, after *corev1.Container) []Op {
	ops = diffList(ops, base+"/env", before.Env, after.Env)
	ops = diffList(ops, base+"/envFrom", before.EnvFrom, after.EnvFrom)
	return diffList(ops, base+"/volumeMounts", before.VolumeMounts, after.VolumeMounts)
}

// diffList emits the appended tail. An empty or missing list is set whole,
// since "/-" cannot append to a list that is not there.
func diffList[T any](ops []Op, path string, before, after []T) []Op {
	switch {
	case len(after) == len(before):
		return ops
	case len(before) == 0:
		return append(ops, Op{Op: "add", Path: path, Value: after})
	}
	for i := len(before); i < len(after); i++ {
		ops = append(ops, Op{Op: "add", Path: path + "/-", Value: after[i]})
	}
	return ops
}

// diffMap emits one add per key that is new or changed, in key order. A map
// that was empty or missing is set whole.
func diffMap(ops []Op, path string, before, after map[string]string) []Op {
	if len(before) == 0 {
		if len(after) == 0 {
			return ops
		}
		return append(ops, Op{Op: "add", Path: path, Value: after})
	}
	var keys []string
	for k, v := range after {
		if old, ok := before[k]; !ok || old != v {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		ops = append(ops, Op{Op: "add", Path: path + "/" + escapePointer(k), Value: after[k]})
	}
	return ops
}

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func escapePointer(s string) string { return pointerEscaper.Replace(s) }
