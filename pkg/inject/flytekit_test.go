package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/pkg/securityctx"
	"github.com/secctx/secctx/test/flytekit"
)

type vectorFile struct {
	Vectors []struct {
		Name    string `json:"name"`
		Secrets []struct {
			Group, Key, GroupVersion, MountRequirement, EnvVar string
		} `json:"secrets"`
		Annotations map[string]string `json:"annotations"`
	} `json:"vectors"`
}

// TestFlytekitFindsEveryVector: for every encoding Flyte's own code made, a
// pod carrying it is injected with each backend, the result is run as the
// kubelet (Secrets as env vars and files) or Vault Agent (rendered files)
// would run it, and flytekit's lookup must find every secret with its value;
// or the pod is denied, with a message that names the annotation. No pod is
// ever admitted with a secret flytekit cannot find.
func TestFlytekitFindsEveryVector(t *testing.T) {
	b, err := os.ReadFile("../securityctx/testdata/flyte-secrets/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(b, &vf); err != nil {
		t.Fatal(err)
	}
	// What each backend can serve; the rest is denied. A Kubernetes Secret
	// name is a DNS subdomain (no "/", ":", upper case or "ü"); Vault Agent
	// writes files only, one key each.
	served := map[string][]string{
		"env-var-with-custom-env":          {BackendKubernetes},
		"file-with-custom-env":             {BackendKubernetes, BackendVault},
		"mount-any-explicit":               {BackendKubernetes, BackendVault},
		"group-only":                       {BackendKubernetes},
		"vault-path-group-version-file":    {BackendVault},
		"mixed-case-group-version-env-var": {},
		"aws-arn-group-file":               {BackendVault},
		"unicode-group":                    {BackendVault},
		"all-fields-set":                   {BackendKubernetes, BackendVault},
		"multi-2":                          {BackendKubernetes},
		"multi-3":                          {},
	}
	for _, vec := range vf.Vectors {
		for _, backend := range []string{BackendKubernetes, BackendVault} {
			t.Run(vec.Name+"/"+backend, func(t *testing.T) {
				want, ok := served[vec.Name]
				if !ok {
					t.Fatalf("vector %s is new: say which backends serve it", vec.Name)
				}
				cfg := DefaultConfig()
				cfg.Backend = backend
				in := newTestInjector(t, cfg)
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Name: "task", Namespace: "ns", Labels: map[string]string{securityctx.LabelFlyteInject: "true"}, Annotations: vec.Annotations},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "task", Image: "task:1"}}},
				}
				out, _, err := in.Inject(context.Background(), pod, "ns")
				if !slices.Contains(want, backend) {
					if err == nil || !IsDenied(err) || !strings.Contains(err.Error(), "flyte.secrets/s") {
						t.Fatalf("want a denial naming the annotation, got %v", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				run := runAsKubelet
				if backend == BackendVault {
					run = runAsVaultAgent
				}
				env, files := run(t, out)
				for _, s := range vec.Secrets {
					key := s.Key
					if key == "" {
						key = "token" // a group without key: the whole Secret; look one key up
					}
					where, got, err := flytekit.Get(env, files.read, s.Group, s.GroupVersion, key)
					if err != nil {
						t.Errorf("flytekit: %v\nenv: %v\nfiles: %v", err, env, files)
						continue
					}
					if w := fakeValue(s.Group, s.GroupVersion, key); got != w {
						t.Errorf("flytekit found %q in %s, want %q", got, where, w)
					}
					if s.EnvVar != "" {
						v, ok := env[s.EnvVar]
						if s.MountRequirement == "ENV_VAR" && v != fakeValue(s.Group, s.GroupVersion, key) {
							t.Errorf("env %s = %q (set %v)", s.EnvVar, v, ok)
						}
						if s.MountRequirement == "FILE" {
							if c, err := files.read(v); err != nil || c != nil && string(c) != fakeValue(s.Group, s.GroupVersion, key) {
								t.Errorf("env %s = %q does not point to the secret: %v", s.EnvVar, v, err)
							}
						}
					}
				}
			})
		}
	}
}

// fakeValue is the value the fake Secret store and fake Vault hold.
func fakeValue(group, groupVersion, key string) string {
	return fmt.Sprintf("value of %s/%s/%s", group, groupVersion, key)
}

type fakeFiles map[string]string

func (f fakeFiles) read(p string) ([]byte, error) {
	if v, ok := f[path.Clean(p)]; ok {
		return []byte(v), nil
	}
	return nil, fs.ErrNotExist
}

// secretStore answers for Kubernetes Secrets: a Secret named group or
// group-groupVersion holds the asked key (and "token" for whole Secrets).
func secretStore(pod *corev1.Pod) func(name, key string) string {
	var st Status
	_ = json.Unmarshal([]byte(pod.Annotations[securityctx.AnnotationStatus]), &st)
	return func(name, key string) string {
		for _, rec := range st.Secrets {
			// records look like group[/groupVersion]/key:MOUNT
			ref := rec[:strings.LastIndexByte(rec, ':')]
			parts := strings.Split(ref, "/")
			group, version := parts[0], ""
			if len(parts) == 3 {
				version = parts[1]
			}
			secret := group
			if version != "" {
				secret = group + "-" + version
			}
			if secret == name {
				return fakeValue(group, version, key)
			}
		}
		return ""
	}
}

// runAsKubelet builds the task container's environment and files from the
// pod spec, as the kubelet does with Secret env refs, envFrom and volumes.
func runAsKubelet(t *testing.T, pod *corev1.Pod) (flytekit.Env, fakeFiles) {
	t.Helper()
	value := secretStore(pod)
	keysOf := func(name string) []string { return []string{"token"} }
	c := pod.Spec.Containers[0]
	env := flytekit.Env{}
	for _, f := range c.EnvFrom {
		for _, k := range keysOf(f.SecretRef.Name) {
			env[f.Prefix+k] = value(f.SecretRef.Name, k)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = value(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		}
	}
	files := fakeFiles{}
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			if len(v.Secret.Items) == 0 {
				for _, k := range keysOf(v.Secret.SecretName) {
					files[path.Join(m.MountPath, k)] = value(v.Secret.SecretName, k)
				}
			}
			for _, it := range v.Secret.Items {
				files[path.Join(m.MountPath, it.Path)] = value(v.Secret.SecretName, it.Key)
			}
		}
	}
	return env, files
}

var templateRE = regexp.MustCompile(`^\{\{- with secret "([^"]*)" -\}\}\{\{ (\.Data(?:\.data)?)\.(.*) \}\}\{\{- end -\}\}$`)

// runAsVaultAgent renders the files Vault Agent would write from the pod's
// annotations, against a fake Vault whose secret at path group holds each
// key as fakeValue; and the container's plain env.
func runAsVaultAgent(t *testing.T, pod *corev1.Pod) (flytekit.Env, fakeFiles) {
	t.Helper()
	a := pod.Annotations
	if a[vaultInject] != "true" || a[vaultPrepopulate] != "true" || a[vaultRole] == "" {
		t.Fatalf("vault agent would not run: %v", a)
	}
	// The fake Vault knows which groupVersion each path was asked with from
	// the status annotation, to hand back the right fake value.
	var st Status
	_ = json.Unmarshal([]byte(a[securityctx.AnnotationStatus]), &st)
	files := fakeFiles{}
	for k, group := range a {
		id, ok := strings.CutPrefix(k, vaultSecret)
		if !ok {
			continue
		}
		file, ok := a[vaultFile+id]
		if !ok {
			t.Fatalf("no %s%s", vaultFile, id)
		}
		tmpl, ok := a[vaultTemplate+id]
		if !ok {
			continue // db engine: the whole secret, not a key
		}
		m := templateRE.FindStringSubmatch(tmpl)
		if m == nil || m[1] != group {
			t.Fatalf("template %q does not read secret %q", tmpl, group)
		}
		version := versionFor(st.Secrets, group, file)
		files[path.Join(a[vaultVolumePath], file)] = fakeValue(group, version, m[3])
	}
	env := flytekit.Env{}
	for _, e := range pod.Spec.Containers[0].Env {
		if e.ValueFrom != nil {
			t.Fatalf("vault backend set env %s from a Secret", e.Name)
		}
		env[e.Name] = e.Value
	}
	return env, files
}

// versionFor finds the groupVersion a file was asked with.
func versionFor(records []string, group, file string) string {
	for _, r := range records {
		ref := strings.TrimPrefix(r[:strings.LastIndexByte(r, ':')], "vault:")
		if !strings.HasPrefix(ref, group+"/") {
			continue
		}
		rest := strings.Split(strings.TrimPrefix(ref, group+"/"), "/")
		if len(rest) == 2 && strings.EqualFold(path.Join(strings.ToLower(group), strings.ToLower(rest[0]), strings.ToLower(rest[1])), file) {
			return rest[0]
		}
	}
	return ""
}
