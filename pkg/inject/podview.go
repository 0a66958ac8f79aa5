package inject

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"sync"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	corev1 "k8s.io/api/core/v1"
)

// UnmarshalJSONFrom decodes a pod's JSON into the view, reading tokens by
// hand: through reflection, decoding the pod was a quarter of the CPU
// secctx spent on a request, and most of that was finding fields, growing
// slices and maps and allocating strings, not reading bytes. Values that are
// rare or deep (env valueFrom, envFrom, a secret volume's source) still go
// through go-json-experiment. Field names match case-sensitively, unknown
// fields are skipped and null sets the zero value, as with the reflection
// decoder; TestPodViewMatchesReflection and FuzzPodView hold the two to the
// same result on every input.
//
// Volumes keep their name, their secret or emptyDir source only when it is
// their only source, and of a configMap, projected or downwardAPI source an empty one
// of that kind: that is all Inject reads, and skipping the projected
// service-account token volume every pod has saves decoding its sources.
func (v *PodView) UnmarshalJSONFrom(d *jsontext.Decoder) error { return v.decode(d, false) }

// UnmarshalJSONFrom decodes a pod as PodView does, but for its init
// containers and volumes, which it decodes whole (AgentView).
func (v *AgentView) UnmarshalJSONFrom(d *jsontext.Decoder) error { return v.PodView.decode(d, true) }

func (v *PodView) decode(d *jsontext.Decoder, whole bool) error {
	s := stringsPool.Get().(*stringTable)
	defer stringsPool.Put(s)
	r := viewReader{d: d, strs: s, whole: whole}
	return DecodeObject(r.d, func() { *v = PodView{} }, func(name []byte) error {
		switch string(name) {
		case "metadata":
			return r.metadata(&v.Metadata)
		case "spec":
			return r.spec(&v.Spec)
		}
		return d.SkipValue()
	})
}

type viewReader struct {
	d    *jsontext.Decoder
	strs *stringTable
	unq  []byte
	// whole: init containers and volumes are decoded whole (AgentView).
	whole bool
}

func (r *viewReader) metadata(m *podMeta) error {
	return DecodeObject(r.d, func() { *m = podMeta{} }, func(name []byte) error {
		var err error
		switch string(name) {
		case "name":
			m.Name, err = r.str(false)
		case "generateName":
			m.GenerateName, err = r.str(false)
		case "namespace":
			m.Namespace, err = r.str(false)
		case "labels":
			// Label values (a project, a domain, a task name) recur from
			// pod to pod and are short; annotation values mostly do not.
			// Annotations get copied when the status is added, and a map's
			// copy is as big as the map, so only labels get room up front.
			m.Labels, err = r.stringMap(m.Labels, 16, true)
		case "annotations":
			m.Annotations, err = r.stringMap(m.Annotations, 0, false)
		default:
			err = r.d.SkipValue()
		}
		return err
	})
}

func (r *viewReader) spec(s *podSpec) error {
	return DecodeObject(r.d, func() { *s = podSpec{} }, func(name []byte) error {
		var err error
		switch string(name) {
		case "initContainers":
			s.InitContainers, err = readArray(r, s.InitContainers, 2, (*viewReader).initContainer)
		case "containers":
			s.Containers, err = readArray(r, s.Containers, 2, (*viewReader).container)
		case "volumes":
			s.Volumes, err = readArray(r, s.Volumes, 2, (*viewReader).volume)
		case "serviceAccountName":
			s.ServiceAccountName, err = r.str(true)
		case "serviceAccount":
			s.DeprecatedServiceAccount, err = r.str(true)
		case "automountServiceAccountToken":
			err = jsonv2.UnmarshalDecode(r.d, &s.AutomountServiceAccountToken)
		case "imagePullSecrets":
			err = jsonv2.UnmarshalDecode(r.d, &s.ImagePullSecrets)
		case "nodeSelector":
			s.NodeSelector, err = r.stringMap(s.NodeSelector, 0, true)
		case "securityContext":
			err = jsonv2.UnmarshalDecode(r.d, &s.SecurityContext)
		case "shareProcessNamespace":
			err = jsonv2.UnmarshalDecode(r.d, &s.ShareProcessNamespace)
		default:
			err = r.d.SkipValue()
		}
		return err
	})
}

func (r *viewReader) container(c *ContainerView) error { return r.containerArgs(c, false) }

// initContainer reads args too: Inject compares them to recognise its own
// agent containers, which are init containers. A container's args are
// skipped, since nothing reads them, and they are the longest lists of
// strings in a task pod.
func (r *viewReader) initContainer(c *ContainerView) error {
	if !r.whole {
		return r.containerArgs(c, true)
	}
	*c = ContainerView{Whole: &corev1.Container{}}
	return jsonv2.UnmarshalDecode(r.d, c.Whole)
}

func (r *viewReader) containerArgs(c *ContainerView, args bool) error {
	return DecodeObject(r.d, func() { *c = ContainerView{} }, func(name []byte) error {
		var err error
		switch string(name) {
		case "name":
			c.Name, err = r.str(true)
		case "image":
			c.Image, err = r.str(true)
		case "command":
			// Commands recur from pod to pod (an entrypoint, pyflyte-execute).
			c.Command, err = readArray(r, c.Command, 4, (*viewReader).internedString)
		case "args":
			if !args {
				return r.d.SkipValue()
			}
			c.Args, err = readArray(r, c.Args, 8, (*viewReader).plainString)
		case "env":
			c.Env, err = readArray(r, c.Env, 16, (*viewReader).envVar)
		case "envFrom":
			err = jsonv2.UnmarshalDecode(r.d, &c.EnvFrom)
		case "volumeMounts":
			c.VolumeMounts, err = readArray(r, c.VolumeMounts, 2, (*viewReader).volumeMount)
		case "securityContext":
			err = jsonv2.UnmarshalDecode(r.d, &c.SecurityContext)
		default:
			err = r.d.SkipValue()
		}
		return err
	})
}

func (r *viewReader) envVar(e *corev1.EnvVar) error {
	return DecodeObject(r.d, func() { *e = corev1.EnvVar{} }, func(name []byte) error {
		var err error
		switch string(name) {
		case "name":
			e.Name, err = r.str(true)
		case "value":
			e.Value, err = r.str(false)
		case "valueFrom":
			err = jsonv2.UnmarshalDecode(r.d, &e.ValueFrom)
		default:
			err = r.d.SkipValue()
		}
		return err
	})
}

func (r *viewReader) volumeMount(m *corev1.VolumeMount) error {
	return DecodeObject(r.d, func() { *m = corev1.VolumeMount{} }, func(name []byte) error {
		var err error
		switch string(name) {
		case "name":
			m.Name, err = r.str(true)
		case "mountPath":
			m.MountPath, err = r.str(true)
		case "readOnly":
			m.ReadOnly, err = r.boolean()
		case "subPath":
			m.SubPath, err = r.str(false)
		case "subPathExpr":
			m.SubPathExpr, err = r.str(false)
		case "recursiveReadOnly":
			err = jsonv2.UnmarshalDecode(r.d, &m.RecursiveReadOnly)
		case "mountPropagation":
			err = jsonv2.UnmarshalDecode(r.d, &m.MountPropagation)
		case "bindMountOptions":
			err = jsonv2.UnmarshalDecode(r.d, &m.BindMountOptions)
		default:
			err = r.d.SkipValue()
		}
		return err
	})
}

func (r *viewReader) volume(v *corev1.Volume) error {
	if r.whole {
		*v = corev1.Volume{}
		return jsonv2.UnmarshalDecode(r.d, v)
	}
	var others uint64 // bit i: volumeSources[name] == i is set, not null
	err := DecodeObject(r.d, func() { *v = corev1.Volume{}; others = 0 }, func(name []byte) error {
		switch string(name) {
		case "name":
			var err error
			v.Name, err = r.str(true)
			return err
		case "secret":
			return jsonv2.UnmarshalDecode(r.d, &v.Secret)
		case "emptyDir":
			return jsonv2.UnmarshalDecode(r.d, &v.EmptyDir)
		}
		if i, ok := volumeSources[string(name)]; ok {
			switch k := r.d.PeekKind(); k {
			case 'n':
				others &^= 1 << i
			case '{':
				others |= 1 << i
			default:
				// A source is an object: anything else fails as it does by
				// reflection. What is inside is not read (see above).
				if _, err := r.d.ReadToken(); err != nil {
					return err
				}
				return kindError(r.d, "an object", k)
			}
		}
		return r.d.SkipValue()
	})
	if others != 0 || v.Secret != nil && v.EmptyDir != nil {
		v.Secret, v.EmptyDir = nil, nil
	}
	// The kinds that are always read-only are kept as empty sources: Inject
	// needs the kind (can a mount point be made inside it?), not the contents.
	if others&(1<<volumeSources["configMap"]) != 0 {
		v.ConfigMap = &corev1.ConfigMapVolumeSource{}
	}
	if others&(1<<volumeSources["projected"]) != 0 {
		v.Projected = &corev1.ProjectedVolumeSource{}
	}
	if others&(1<<volumeSources["downwardAPI"]) != 0 {
		v.DownwardAPI = &corev1.DownwardAPIVolumeSource{}
	}
	return err
}

// volumeSources numbers the JSON names of corev1.VolumeSource's fields
// (fewer than 64).
var volumeSources = func() map[string]int {
	m := map[string]int{}
	t := reflect.TypeFor[corev1.VolumeSource]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		m[name] = i
	}
	if len(m) > 64 {
		panic("corev1.VolumeSource has more than 64 fields")
	}
	return m
}()

// DecodeObject reads a JSON object from d, calling field for each member
// with the member's unescaped name (valid only during the call) to read its
// value; on null it calls null, which should set the value to its zero, as
// go-json-experiment's reflection decoder does. It is how the pod view's
// decoder walks objects, exported for decoders of documents that carry a
// pod, such as the webhook's AdmissionReview.
func DecodeObject(d *jsontext.Decoder, null func(), field func(name []byte) error) error {
	tok, err := d.ReadToken()
	if err != nil {
		return err
	}
	switch tok.Kind() {
	case 'n':
		null()
		return nil
	case '{':
	default:
		return kindError(d, "an object", tok.Kind())
	}
	for d.PeekKind() == '"' {
		raw, err := d.ReadValue()
		if err != nil {
			return err
		}
		name := raw[1 : len(raw)-1]
		if bytes.IndexByte(name, '\\') >= 0 {
			if name, err = jsontext.AppendUnquote(nil, raw); err != nil {
				return err
			}
		}
		if err := field(name); err != nil {
			return err
		}
	}
	_, err = d.ReadToken() // '}', or the syntax error where it should be
	return err
}

// name reads an object member's name or a string, unescaped, valid until
// the next read.
func (r *viewReader) name() ([]byte, error) {
	raw, err := r.d.ReadValue()
	if err != nil {
		return nil, err
	}
	s := raw[1 : len(raw)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return s, nil
	}
	r.unq, err = jsontext.AppendUnquote(r.unq[:0], raw)
	return r.unq, err
}

// readArray decodes a JSON array into s, reusing its array: null gives nil
// and [] an empty slice, as the reflection decoder does. The first element
// makes room for size, so that a typical list takes one allocation.
func readArray[T any](r *viewReader, s []T, size int, elem func(*viewReader, *T) error) ([]T, error) {
	tok, err := r.d.ReadToken()
	if err != nil {
		return s, err
	}
	switch tok.Kind() {
	case 'n':
		return nil, nil
	case '[':
	default:
		return s, kindError(r.d, "an array", tok.Kind())
	}
	s = s[:0]
	if s == nil {
		s = []T{}
	}
	for k := r.d.PeekKind(); k != ']'; k = r.d.PeekKind() {
		if k == 0 {
			break // the syntax error comes from the next read
		}
		if len(s) == 0 && cap(s) < size {
			s = make([]T, 0, size)
		}
		var zero T
		s = append(s, zero)
		if err := elem(r, &s[len(s)-1]); err != nil {
			return s, err
		}
	}
	_, err = r.d.ReadToken()
	return s, err
}

func (r *viewReader) internedString(s *string) (err error) {
	*s, err = r.str(true)
	return err
}

func (r *viewReader) plainString(s *string) (err error) {
	*s, err = r.str(false)
	return err
}

// str reads a string; null is "". Names that recur from pod to pod (env
// names, container and volume names, mount paths, label and annotation
// keys) are interned, so that they are allocated once, not per request.
func (r *viewReader) str(intern bool) (string, error) {
	switch r.d.PeekKind() {
	case '"':
		b, err := r.name()
		if err != nil {
			return "", err
		}
		if intern {
			return r.strs.intern(b), nil
		}
		return string(b), nil
	case 'n', 0: // 0: the read returns the syntax error
		_, err := r.d.ReadToken()
		return "", err
	}
	tok, err := r.d.ReadToken()
	if err != nil {
		return "", err
	}
	return "", kindError(r.d, "a string", tok.Kind())
}

func (r *viewReader) boolean() (bool, error) {
	tok, err := r.d.ReadToken()
	if err != nil {
		return false, err
	}
	switch tok.Kind() {
	case 't', 'f':
		return tok.Bool(), nil
	case 'n':
		return false, nil
	}
	return false, kindError(r.d, "a boolean", tok.Kind())
}

// stringMap adds an object's members to m, making it with room for size;
// null gives nil. Keys are interned, values when internValues.
func (r *viewReader) stringMap(m map[string]string, size int, internValues bool) (map[string]string, error) {
	if m == nil && r.d.PeekKind() == '{' {
		m = make(map[string]string, size)
	}
	err := DecodeObject(r.d, func() { m = nil }, func(name []byte) error {
		k := r.strs.intern(name)
		v, err := r.str(internValues)
		m[k] = v
		return err
	})
	return m, err
}

// kindError names where in the pod the value was, as the reflection
// decoder's errors do.
func kindError(d *jsontext.Decoder, want string, got jsontext.Kind) error {
	return fmt.Errorf("%s: want %s, got %s", d.StackPointer(), want, got)
}

// stringTable interns strings up to 128 bytes. Tables are pooled and
// emptied once they hold 4,096 strings, which bounds what they keep alive
// to about half a megabyte each.
type stringTable struct{ m map[string]string }

var stringsPool = sync.Pool{New: func() any { return &stringTable{m: make(map[string]string, 256)} }}

func (t *stringTable) intern(b []byte) string {
	if s, ok := t.m[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(b) > 128 {
		return s
	}
	if len(t.m) >= 4096 {
		clear(t.m)
	}
	t.m[s] = s
	return s
}

var _ jsonv2.UnmarshalerFrom = (*PodView)(nil)
