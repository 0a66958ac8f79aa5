package inject

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestAppendValueMatchesEncodingJSON: the direct encoding of each value
// means the same as encoding/json's, for the values secctx adds and for
// values it hands to the generic encoder. List items come to appendValue as
// pointers, the way AppendPatch passes them.
func TestAppendValueMatchesEncodingJSON(t *testing.T) {
	mode := int32(0o400)
	yes := true
	ref := &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}
	values := []any{
		"plain", "quote\" and \\ and \u2028 and <html>", "",
		corev1.EnvVar{Name: "A"},
		corev1.EnvVar{Name: "A", Value: "/etc/flyte/secrets/x"},
		corev1.EnvVar{Name: "_FSEC_X", ValueFrom: ref},
		corev1.EnvVar{Name: "N", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}},
		corev1.EnvVar{Name: "O", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k", Optional: &yes}}},
		corev1.EnvVar{Name: "F", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		[]corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "B", ValueFrom: ref}},
		corev1.VolumeMount{Name: "v", MountPath: "/p", ReadOnly: true},
		corev1.VolumeMount{Name: "v", MountPath: "/p"},
		corev1.VolumeMount{Name: "v", MountPath: "/p", SubPath: "x"},
		corev1.VolumeMount{Name: "v", MountPath: "/p", BindMountOptions: []string{"ro"}},
		[]corev1.VolumeMount{{Name: "v", MountPath: "/p", ReadOnly: true}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s", DefaultMode: &mode,
			Items: []corev1.KeyToPath{{Key: "A", Path: "a"}, {Key: "b", Path: "b"}}}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s", Items: []corev1.KeyToPath{{Key: "a", Path: "a", Mode: &mode}}}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: ptr(resource.MustParse("64Mi"))}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("1.5Gi"))}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{DefaultMode: &mode,
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: "a\"b", ExpirationSeconds: ptr(int64(600)), Path: "token"}}}}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}, {ConfigMap: &corev1.ConfigMapProjection{}}}}}},
		corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}, ConfigMap: &corev1.ConfigMapProjection{}}}}}},
		[]corev1.Volume{{Name: "v", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}}},
		corev1.EnvFromSource{Prefix: "_FSEC_APP_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app"}}},
		corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{}},
		corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{Optional: &yes}},
		corev1.EnvFromSource{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}},
		[]corev1.EnvFromSource{{SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app"}}}},
		map[string]string{"b": "2", "a": "1", "secctx.dev/status": `{"containers":["x"]}`},
		map[string]string{},
		42,
	}
	for _, v := range values {
		arg := v
		if k := reflect.TypeOf(v).Kind(); k == reflect.Struct {
			p := reflect.New(reflect.TypeOf(v))
			p.Elem().Set(reflect.ValueOf(v))
			arg = p.Interface()
		}
		got, err := appendValue([]byte("x"), arg)
		if err != nil {
			t.Fatalf("appendValue(%#v): %v", v, err)
		}
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got[1:], &g); err != nil || string(got[:1]) != "x" {
			t.Fatalf("appendValue(%#v) is not x followed by JSON: %s", v, got)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, g); diff != "" {
			t.Errorf("appendValue(%#v) (-encoding/json +direct):\n%s", v, diff)
		}
	}
	if _, err := appendValue(nil, "\xff"); err == nil {
		t.Error("appendValue of invalid UTF-8: no error")
	}
}
