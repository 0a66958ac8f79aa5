package inject

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

// TestMarshalPatchMatchesEncodingJSON: the direct encoding of each value
// means the same as encoding/json's, for the values secctx adds and for
// values it hands to the generic encoder.
func TestMarshalPatchMatchesEncodingJSON(t *testing.T) {
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
		ops := []Op{{Op: "add", Path: "/a~1b/-", Value: v}}
		got, err := MarshalPatch(ops)
		if err != nil {
			t.Fatalf("MarshalPatch(%#v): %v", v, err)
		}
		want, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		var g, w any
		if err := json.Unmarshal(got, &g); err != nil {
			t.Fatalf("MarshalPatch(%#v) is not JSON: %s", v, got)
		}
		if err := json.Unmarshal(want, &w); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(w, g); diff != "" {
			t.Errorf("MarshalPatch(%#v) (-encoding/json +direct):\n%s", v, diff)
		}
	}
	if p, err := MarshalPatch(nil); p != nil || err != nil {
		t.Errorf("MarshalPatch(nil) = %s, %v", p, err)
	}
	if _, err := MarshalPatch([]Op{{Op: "add", Path: "/x", Value: "\xff"}}); err == nil {
		t.Error("MarshalPatch of invalid UTF-8: no error")
	}
}
