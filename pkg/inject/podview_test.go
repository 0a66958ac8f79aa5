package inject

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

// reflectView has PodView's fields but not its decoder, so go-json-experiment
// decodes it by reflection: the reference the hand-written decoder is held to.
type reflectView struct {
	Metadata podMeta `json:"metadata"`
	Spec     podSpec `json:"spec"`
}

// decodeBoth decodes raw with the hand-written decoder and by reflection,
// with the default options and with repeated names allowed (as the webhook
// reads reviews), and reports a difference in outcome or result. Volumes are
// compared as the view keeps them: the name, the secret source when it is
// the only one, and the read-only kinds as empty sources.
func decodeBoth(t *testing.T, raw []byte) {
	t.Helper()
	decodeBothWith(t, raw)
	decodeBothWith(t, raw, jsontext.AllowDuplicateNames(true))
}

func decodeBothWith(t *testing.T, raw []byte, opts ...jsonv2.Options) {
	t.Helper()
	var got PodView
	gotErr := jsonv2.Unmarshal(raw, &got, opts...)
	var want reflectView
	wantErr := jsonv2.Unmarshal(raw, &want, opts...)
	if gotErr == nil && wantErr != nil && insideSkippedSource(wantErr) {
		// The view does not read inside a volume source other than secret
		// (PodView's decoder says so), so it cannot see what is wrong there.
		return
	}
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%s\nhand-written decoder: %v\nreflection: %v", raw, gotErr, wantErr)
	}
	if gotErr != nil {
		return
	}
	for i := range want.Spec.Containers {
		want.Spec.Containers[i].Args = nil // skipped: only init containers' are read
	}
	for i := range want.Spec.Volumes {
		v := &want.Spec.Volumes[i]
		secret, emptyDir, rest := v.Secret, v.EmptyDir, v.VolumeSource
		rest.Secret, rest.EmptyDir = nil, nil
		if rest != (corev1.VolumeSource{}) || secret != nil && emptyDir != nil {
			secret, emptyDir = nil, nil
		}
		kinds := corev1.VolumeSource{Secret: secret, EmptyDir: emptyDir}
		if v.ConfigMap != nil {
			kinds.ConfigMap = &corev1.ConfigMapVolumeSource{}
		}
		if v.Projected != nil {
			kinds.Projected = &corev1.ProjectedVolumeSource{}
		}
		if v.DownwardAPI != nil {
			kinds.DownwardAPI = &corev1.DownwardAPIVolumeSource{}
		}
		v.VolumeSource = kinds
	}
	if diff := cmp.Diff(want, reflectView(got)); diff != "" {
		t.Fatalf("%s\n(-reflection +hand-written):\n%s", raw, diff)
	}
}

func TestPodViewMatchesReflection(t *testing.T) {
	inputs, err := filepath.Glob("testdata/pods/*.in.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) { decodeBoth(t, readPodJSON(t, in)) })
	}
	for _, raw := range podViewEdgeCases {
		decodeBoth(t, []byte(raw))
	}
}

// podViewEdgeCases are inputs a real API server does not send; both
// decoders must still agree on them.
var podViewEdgeCases = []string{
	// The users the fetched secrets' files are for.
	`{"spec":{"securityContext":{"runAsUser":1000,"runAsGroup":3000,"fsGroup":2000,"seLinuxOptions":{"level":"s0"}},"containers":[{"name":"a","securityContext":{"runAsUser":1001,"privileged":true}}]}}`,
	`{"spec":{"securityContext":null,"containers":[{"name":"a","securityContext":{"runAsUser":"x"}}]}}`,
	`{"spec":{"securityContext":{"runAsUser":1.5},"initContainers":[{"name":"a","securityContext":[]}]}}`,
	`null`, `{}`, `[]`, `"pod"`, `{"metadata":null,"spec":null}`,
	`{"metadata":{"name":null,"labels":null,"annotations":{}}}`,
	`{"metadata":{"labels":{"a":null,"b":"2"}}}`,
	`{"metadata":{"labels":{"a":"1","a":"2"}}}`,
	`{"metadata":{"name":"a","name":"b"}}`,
	`{"metadata":{"name":1}}`, `{"metadata":{"labels":[]}}`, `{"metadata":{"labels":{"a":1}}}`,
	`{"metadata":{"Name":"upper","nAme":"mixed"}}`,
	`{"metadata":{"n\u0061me":"escaped","annotations":{"k\"ey":"v\u00e9"}}}`,
	`{"spec":{"containers":null,"initContainers":[]}}`,
	`{"spec":{"containers":[null,{}]}}`,
	`{"spec":{"containers":[{"name":"c","env":[{"name":"A","value":"1","valueFrom":{"fieldRef":{"fieldPath":"metadata.name"}}},{"name":"B","future":{"x":[1,2]}}]}]}}`,
	`{"spec":{"containers":[{"name":"c","env":{}}]}}`,
	`{"spec":{"containers":[{"name":"c","env":[1]}]}}`,
	`{"spec":{"containers":[{"name":"c","envFrom":[{"prefix":"P_","secretRef":{"name":"s","optional":true}}]}]}}`,
	`{"spec":{"containers":[{"name":"c","volumeMounts":[{"name":"v","mountPath":"/p","readOnly":true,"subPath":"x","subPathExpr":"y","mountPropagation":"None","recursiveReadOnly":"Disabled","bindMountOptions":["ro"]}]}]}}`,
	`{"spec":{"containers":[{"name":"c","volumeMounts":[{"readOnly":"yes"}]}]}}`,
	`{"spec":{"containers":[{"name":"c","volumeMounts":[{"readOnly":null}]}]}}`,
	`{"spec":{"volumes":[{"name":"s","secret":{"secretName":"x","items":[{"key":"a","path":"a"}],"defaultMode":256}}]}}`,
	`{"spec":{"volumes":[{"name":"both","secret":{"secretName":"x"},"emptyDir":{}}]}}`,
	`{"spec":{"volumes":[{"name":"n","secret":null,"emptyDir":null}]}}`,
	`{"spec":{"volumes":[{"name":"n","secret":{"secretName":"x"},"emptyDir":null,"futureSource":{}}]}}`,
	`{"spec":{"volumes":[{"name":"p","projected":{"sources":[{"serviceAccountToken":{"path":"token"}}]}}]}}`,
	`{"spec":{"volumes":[{"name":"bad","secret":"x"}]}}`,
	`{"spec":{"serviceAccountName":"a","serviceAccount":"b","nodeName":"n"}}`,
	`{"spec":{"automountServiceAccountToken":false,"imagePullSecrets":[{"name":"r"},{}]}}`,
	`{"spec":{"automountServiceAccountToken":null,"imagePullSecrets":null}}`,
	`{"spec":{"automountServiceAccountToken":"no"}}`,
	`{"spec":{"volumes":[{"name":"c","configMap":{"name":"x"}},{"name":"d","downwardAPI":{"items":[]}},{"name":"p","projected":null}]}}`,
	`{"spec":{"serviceAccountName":true}}`,
	`{"spec":{"nodeSelector":{"kubernetes.io/os":"windows","zone":null}}}`, `{"spec":{"nodeSelector":null}}`, `{"spec":{"nodeSelector":["x"]}}`,
	`{"spec":{"containers":[{"name":"c"}]`, `{"spec":{"containers":[{"name":"c"},]}}`, `{"metadata":{"name":"\xff"}}`,
	`{"metadata":{}} trailing`,
	`{"metadata":{"labels":{"a":"1"},"labels":null,"name":"x"},"metadata":{"namespace":"n"}}`,
	`{"metadata":{"name":"x"},"metadata":null,"spec":{"containers":[{"name":"a","env":[{"name":"A"}],"env":null}]}}`,
	`{"spec":{"containers":[{"name":"a"}],"containers":[{"name":"b"}]}}`,
	`{"spec":{"volumes":[{"name":"v","emptyDir":{},"secret":{"secretName":"s"},"emptyDir":null}]}}`,
	`{"spec":{"volumes":[{"name":"v","secret":{"secretName":"s"},"secret":{"items":[{"key":"k","path":"p"}]}}]}}`,
	`{"spec":{"volumes":[{"name":"v","secret":{"secretName":"s"}},null]},"spec":{"serviceAccountName":"sa"}}`,
	`{"spec":{"containers":[{"volumeMounts":[{"name":"a","readOnly":true,"readOnly":null}],"env":[{"valueFrom":{"fieldRef":{"fieldPath":"x"}},"valueFrom":{"secretKeyRef":{"key":"k"}}}]}]}}`,
	`{"metadata":{"annotations":{"a":"1"}},"metadata":{"annotations":{"b":"2"}}}`,
	`{"spec":{"initContainers":[{"name":"i","image":"x:1","command":["/a",null,"b"],"args":[]}],"containers":[{"command":null,"args":["-c","$(X)"]}]}}`,
	`{"spec":{"containers":[{"command":[1]}]}}`, `{"spec":{"containers":[{"args":"x"}]}}`, `{"spec":{"containers":[{"image":7}]}}`,
	`{"spec":{"containers":[{"command":["a"],"command":["b","c"],"args":["x"],"args":null}]}}`,
	`{"spec":{"volumes":[{"name":"t","emptyDir":{"medium":"Memory","sizeLimit":"1Mi"}},{"name":"b","emptyDir":{"sizeLimit":"x"}}]}}`,
}

// insideSkippedSource reports whether a reflection error is inside the value
// of a volume source other than secret: /spec/volumes/<i>/<source>/...
func insideSkippedSource(err error) bool {
	var se *jsonv2.SemanticError
	if !errors.As(err, &se) {
		return false
	}
	parts := strings.Split(string(se.JSONPointer), "/")
	if len(parts) >= 5 && parts[1] == "spec" && parts[2] == "containers" && parts[4] == "args" {
		return true // a container's args are skipped
	}
	if len(parts) < 6 || parts[1] != "spec" || parts[2] != "volumes" {
		return false
	}
	_, isSource := volumeSources[parts[4]]
	return isSource && parts[4] != "secret" && parts[4] != "emptyDir"
}

func FuzzPodView(f *testing.F) {
	for _, s := range podViewEdgeCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { decodeBoth(t, raw) })
}
