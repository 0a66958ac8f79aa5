package inject

import (
	"encoding/json"
	"reflect"
	"slices"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
	corev1 "k8s.io/api/core/v1"
)

// appendValue writes an operation's value. The values secctx adds are few
// and simple (a secret env var, a read-only mount, a secret volume), so they
// are written directly; anything else goes through encoding/json.
// Reflection-based encoding of these values was a sixth of a whole
// admission request (docs/performance-notes.md); a test checks the two encodings
// agree. List items come as pointers, so that passing them as any does not
// copy them to the heap.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		return jsontext.AppendQuote(b, v)
	case *corev1.EnvVar:
		if simpleEnv(v) {
			return appendEnv(b, v)
		}
	case []corev1.EnvVar:
		return appendList(b, v)
	case *corev1.VolumeMount:
		if onlySetReflect(*v, func(m *corev1.VolumeMount) { m.Name, m.ReadOnly, m.MountPath = "", false, "" }) {
			return appendMount(b, v)
		}
	case []corev1.VolumeMount:
		return appendList(b, v)
	case *corev1.Volume:
		switch {
		case simpleSecretVolume(v):
			return appendSecretVolume(b, v)
		case simpleEmptyDir(v):
			return appendEmptyDir(b, v)
		case simpleTokenVolume(v):
			return appendTokenVolume(b, v)
		}
	case []corev1.Volume:
		return appendList(b, v)
	case *corev1.EnvFromSource:
		if v.SecretRef != nil && onlySet(*v, func(f *corev1.EnvFromSource) { f.Prefix, f.SecretRef = "", nil }) &&
			onlySet(*v.SecretRef, func(r *corev1.SecretEnvSource) { r.Name = "" }) {
			return appendEnvFrom(b, v)
		}
	case []corev1.EnvFromSource:
		return appendList(b, v)
	case map[string]string:
		return appendMap(b, v)
	}
	// encoding/json, not v2: API types' omitempty means what v1 says it means.
	enc, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, enc...), nil
}

func appendList[T any](b []byte, list []T) ([]byte, error) {
	b = append(b, '[')
	var err error
	for i := range list {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = appendValue(b, &list[i]); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// appendMap writes keys in order, so the same pod always gets the same patch.
func appendMap(b []byte, m map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		if b, err = jsontext.AppendQuote(b, k); err != nil {
			return nil, err
		}
		b = append(b, ':')
		if b, err = jsontext.AppendQuote(b, m[k]); err != nil {
			return nil, err
		}
	}
	return append(b, '}'), nil
}

// onlySet reports whether v has no field set besides those clear zeroes.
// It compares the whole struct, so a field added to the API later sends the
// value to the generic encoder rather than being dropped (and a field that
// makes the type incomparable stops the build here).
func onlySet[T comparable](v T, clear func(*T)) bool {
	clear(&v)
	var zero T
	return v == zero
}

// onlySetReflect is onlySet for types that hold slices; it looks at every
// field by reflection, which copies v to the heap: a few values a request.
func onlySetReflect[T any](v T, clear func(*T)) bool {
	clear(&v)
	return reflect.ValueOf(&v).Elem().IsZero()
}

// simpleEnv: a literal value, or a value from a Secret key and nothing else.
func simpleEnv(e *corev1.EnvVar) bool {
	if !onlySet(*e, func(e *corev1.EnvVar) { e.Name, e.Value, e.ValueFrom = "", "", nil }) {
		return false
	}
	f := e.ValueFrom
	return f == nil || f.SecretKeyRef != nil &&
		onlySet(*f, func(f *corev1.EnvVarSource) { f.SecretKeyRef = nil }) &&
		onlySet(*f.SecretKeyRef, func(r *corev1.SecretKeySelector) { r.Name, r.Key = "", "" })
}

func appendEnv(b []byte, e *corev1.EnvVar) ([]byte, error) {
	var err error
	b = append(b, `{"name":`...)
	if b, err = jsontext.AppendQuote(b, e.Name); err != nil {
		return nil, err
	}
	if e.Value != "" {
		b = append(b, `,"value":`...)
		if b, err = jsontext.AppendQuote(b, e.Value); err != nil {
			return nil, err
		}
	}
	if e.ValueFrom != nil {
		ref := e.ValueFrom.SecretKeyRef
		b = append(b, `,"valueFrom":{"secretKeyRef":{`...)
		if ref.Name != "" {
			b = append(b, `"name":`...)
			if b, err = jsontext.AppendQuote(b, ref.Name); err != nil {
				return nil, err
			}
			b = append(b, ',')
		}
		b = append(b, `"key":`...)
		if b, err = jsontext.AppendQuote(b, ref.Key); err != nil {
			return nil, err
		}
		b = append(b, "}}"...)
	}
	return append(b, '}'), nil
}

func appendMount(b []byte, m *corev1.VolumeMount) ([]byte, error) {
	var err error
	b = append(b, `{"name":`...)
	if b, err = jsontext.AppendQuote(b, m.Name); err != nil {
		return nil, err
	}
	if m.ReadOnly {
		b = append(b, `,"readOnly":true`...)
	}
	b = append(b, `,"mountPath":`...)
	if b, err = jsontext.AppendQuote(b, m.MountPath); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// simpleSecretVolume: a secret volume with name, items (key and path) and
// defaultMode, nothing else.
func simpleSecretVolume(v *corev1.Volume) bool {
	s := v.Secret
	if s == nil || !onlySet(*v, func(v *corev1.Volume) { v.Name, v.Secret = "", nil }) {
		return false
	}
	if !onlySetReflect(*s, func(s *corev1.SecretVolumeSource) { s.SecretName, s.Items, s.DefaultMode = "", nil, nil }) {
		return false
	}
	for _, it := range s.Items {
		if !onlySet(it, func(it *corev1.KeyToPath) { it.Key, it.Path = "", "" }) {
			return false
		}
	}
	return true
}

func appendSecretVolume(b []byte, v *corev1.Volume) ([]byte, error) {
	var err error
	s := v.Secret
	b = append(b, `{"name":`...)
	if b, err = jsontext.AppendQuote(b, v.Name); err != nil {
		return nil, err
	}
	b = append(b, `,"secret":{`...)
	sep := ""
	if s.SecretName != "" {
		b = append(b, `"secretName":`...)
		if b, err = jsontext.AppendQuote(b, s.SecretName); err != nil {
			return nil, err
		}
		sep = ","
	}
	if len(s.Items) > 0 {
		b = append(b, sep+`"items":[`...)
		for i, it := range s.Items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"key":`...)
			if b, err = jsontext.AppendQuote(b, it.Key); err != nil {
				return nil, err
			}
			b = append(b, `,"path":`...)
			if b, err = jsontext.AppendQuote(b, it.Path); err != nil {
				return nil, err
			}
			b = append(b, '}')
		}
		b = append(b, ']')
		sep = ","
	}
	if s.DefaultMode != nil {
		b = append(b, sep+`"defaultMode":`...)
		b = strconv.AppendInt(b, int64(*s.DefaultMode), 10)
	}
	return append(b, "}}"...), nil
}

func appendEnvFrom(b []byte, f *corev1.EnvFromSource) ([]byte, error) {
	var err error
	b = append(b, '{')
	if f.Prefix != "" {
		b = append(b, `"prefix":`...)
		if b, err = jsontext.AppendQuote(b, f.Prefix); err != nil {
			return nil, err
		}
		b = append(b, ',')
	}
	b = append(b, `"secretRef":{`...)
	if f.SecretRef.Name != "" {
		b = append(b, `"name":`...)
		if b, err = jsontext.AppendQuote(b, f.SecretRef.Name); err != nil {
			return nil, err
		}
	}
	return append(b, "}}"...), nil
}

// simpleEmptyDir: an emptyDir volume with at most a medium and a size, as
// secctx's agent volumes are.
func simpleEmptyDir(v *corev1.Volume) bool {
	e := v.EmptyDir
	return e != nil && onlySet(*v, func(v *corev1.Volume) { v.Name, v.EmptyDir = "", nil })
}

func appendEmptyDir(b []byte, v *corev1.Volume) ([]byte, error) {
	var err error
	e := v.EmptyDir
	b = append(b, `{"name":`...)
	if b, err = jsontext.AppendQuote(b, v.Name); err != nil {
		return nil, err
	}
	b = append(b, `,"emptyDir":{`...)
	sep := ""
	if e.Medium != "" {
		b = append(b, `"medium":`...)
		if b, err = jsontext.AppendQuote(b, string(e.Medium)); err != nil {
			return nil, err
		}
		sep = ","
	}
	if e.SizeLimit != nil {
		b = append(b, sep+`"sizeLimit":`...)
		if b, err = jsontext.AppendQuote(b, e.SizeLimit.String()); err != nil {
			return nil, err
		}
	}
	return append(b, "}}"...), nil
}

// simpleTokenVolume: a projected volume of one service-account token, as
// the IAM role's and the stores' logins are.
func simpleTokenVolume(v *corev1.Volume) bool {
	p := v.Projected
	if p == nil || !onlySet(*v, func(v *corev1.Volume) { v.Name, v.Projected = "", nil }) || len(p.Sources) != 1 {
		return false
	}
	t := p.Sources[0].ServiceAccountToken
	return t != nil && onlySet(p.Sources[0], func(s *corev1.VolumeProjection) { s.ServiceAccountToken = nil }) &&
		onlySetReflect(*p, func(p *corev1.ProjectedVolumeSource) { p.Sources, p.DefaultMode = nil, nil })
}

func appendTokenVolume(b []byte, v *corev1.Volume) ([]byte, error) {
	var err error
	p := v.Projected
	t := p.Sources[0].ServiceAccountToken
	b = append(b, `{"name":`...)
	if b, err = jsontext.AppendQuote(b, v.Name); err != nil {
		return nil, err
	}
	b = append(b, `,"projected":{"sources":[{"serviceAccountToken":{`...)
	if t.Audience != "" {
		b = append(b, `"audience":`...)
		if b, err = jsontext.AppendQuote(b, t.Audience); err != nil {
			return nil, err
		}
		b = append(b, ',')
	}
	if t.ExpirationSeconds != nil {
		b = append(b, `"expirationSeconds":`...)
		b = strconv.AppendInt(b, *t.ExpirationSeconds, 10)
		b = append(b, ',')
	}
	b = append(b, `"path":`...)
	if b, err = jsontext.AppendQuote(b, t.Path); err != nil {
		return nil, err
	}
	b = append(b, "}}]"...)
	if p.DefaultMode != nil {
		b = append(b, `,"defaultMode":`...)
		b = strconv.AppendInt(b, int64(*p.DefaultMode), 10)
	}
	return append(b, "}}"...), nil
}
