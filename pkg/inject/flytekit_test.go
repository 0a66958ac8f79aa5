package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/secctx/secctx/internal/flytekit"
	"github.com/secctx/secctx/pkg/securityctx"
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
				cfg.Flyte.Enabled = true
				// The vectors' groups are Flyte's, not Vault paths under
				// the default mounts: each is allowed as a mount of its own.
				for _, s := range vec.Secrets {
					cfg.Vault.Mounts = append(cfg.Vault.Mounts, s.Group)
				}
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
				st := newStore()
				for _, s := range vec.Secrets {
					st.put(s.Group, s.GroupVersion, s.Key)
				}
				var env flytekit.Env
				var files fakeFiles
				if backend == BackendVault {
					env, files = runAsVaultAgent(t, out, st)
				} else {
					env, files = runAsKubelet(t, out, st)
				}
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

// store is the fake secret store behind both backends: the Kubernetes
// Secrets (named group or group-groupVersion) and the Vault secrets (at path
// group) that a vector's secrets name, each holding the asked key (or
// "token", for a group without key) with fakeValue. The fake kubelet and
// Vault Agent read only the pod spec and this store, as the real ones do.
type fakeStore struct {
	k8s   map[string]map[string]string // Secret name -> key -> value
	vault map[string]map[string]string // Vault path -> key -> value
}

func newStore() *fakeStore {
	return &fakeStore{k8s: map[string]map[string]string{}, vault: map[string]map[string]string{}}
}

func (s *fakeStore) put(group, groupVersion, key string) {
	if key == "" {
		key = "token"
	}
	name := group
	if groupVersion != "" {
		name = group + "-" + groupVersion
	}
	for m, at := range map[*map[string]map[string]string]string{&s.k8s: name, &s.vault: group} {
		if (*m)[at] == nil {
			(*m)[at] = map[string]string{}
		}
		(*m)[at][key] = fakeValue(group, groupVersion, key)
	}
}

// runAsKubelet builds the task container's environment and files from the
// pod spec, as the kubelet does with Secret env refs, envFrom and volumes:
// a Secret or key that the store does not have fails the test, as it would
// keep the container from starting.
func runAsKubelet(t *testing.T, pod *corev1.Pod, st *fakeStore) (flytekit.Env, fakeFiles) {
	t.Helper()
	secret := func(name string) map[string]string {
		data, ok := st.k8s[name]
		if !ok {
			t.Fatalf("the pod refers to Secret %q, which does not exist", name)
		}
		return data
	}
	value := func(name, key string) string {
		v, ok := secret(name)[key]
		if !ok {
			t.Fatalf("the pod refers to key %q of Secret %q, which does not exist", key, name)
		}
		return v
	}
	c := pod.Spec.Containers[0]
	env := flytekit.Env{}
	for _, f := range c.EnvFrom {
		for k, v := range secret(f.SecretRef.Name) {
			env[f.Prefix+k] = v
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
				for k, val := range secret(v.Secret.SecretName) {
					files[path.Join(m.MountPath, k)] = val
				}
			}
			for _, it := range v.Secret.Items {
				files[path.Join(m.MountPath, it.Path)] = value(v.Secret.SecretName, it.Key)
			}
		}
	}
	return env, files
}

// runAsVaultAgent renders the files Vault Agent would write from the pod's
// annotations: each template is parsed and executed with Go's text/template,
// as Vault Agent's template engine does, with its function names defined
// and secret answering from the store, shaped as Vault answers for KV v1
// (.Data holds the keys) and v2 (.Data.data does). And the container's
// plain env.
func runAsVaultAgent(t *testing.T, pod *corev1.Pod, st *fakeStore) (flytekit.Env, fakeFiles) {
	t.Helper()
	a := pod.Annotations
	if a[vaultInject] != "true" || a[vaultPrepopulate] != "true" || a[vaultRole] == "" {
		t.Fatalf("vault agent would not run: %v", a)
	}
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
		out, err := renderVaultTemplate(tmpl, func(p string) (*vaultSecretData, error) {
			if p != group {
				return nil, fmt.Errorf("template reads %q, annotation names %q", p, group)
			}
			data, ok := st.vault[p]
			if !ok {
				return nil, fmt.Errorf("no secret at %q", p)
			}
			kv := map[string]any{}
			for k, v := range data {
				kv[k] = v
			}
			return &vaultSecretData{Data: map[string]any{"data": kv, "metadata": map[string]any{"version": 1}, "kv1": kv}}, nil
		})
		if err != nil {
			t.Fatalf("template %q: %v", tmpl, err)
		}
		files[path.Join(a[vaultVolumePath], file)] = out
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

// vaultSecretData is the shape of what Vault Agent's secret function
// returns, as far as templates read it.
type vaultSecretData struct {
	Data map[string]any
}

// vaultFuncNames are the functions Vault Agent's templates can call (the
// consul-template functions it keeps); each is defined, so that a template
// that names one parses as it would in Vault Agent.
var vaultFuncNames = []string{
	"secret", "secrets", "key", "keyExists", "keyOrDefault", "ls", "safeLs", "tree", "safeTree", "service", "services",
	"node", "nodes", "datacenters", "env", "file", "executeTemplate", "pkiCert", "writeToFile", "base64Decode",
	"base64Encode", "base64URLDecode", "base64URLEncode", "byKey", "byTag", "contains", "containsAll", "containsAny",
	"containsNone", "containsNotAll", "explode", "explodeMap", "in", "indent", "loop", "join", "trimSpace", "parseBool",
	"parseFloat", "parseInt", "parseJSON", "parseUint", "parseYAML", "plugin", "regexMatch", "regexReplaceAll", "replaceAll",
	"sha256Hex", "md5sum", "split", "timestamp", "toJSON", "toJSONPretty", "toLower", "toTitle", "toTOML", "toUpper",
	"toYAML", "sockaddr", "add", "subtract", "multiply", "divide", "modulo", "minimum", "maximum",
}

// renderVaultTemplate parses and executes tmpl as Vault Agent does. A KV v1
// query (.Data) is answered from the "kv1" entry, so one store serves both.
func renderVaultTemplate(tmpl string, secret func(string) (*vaultSecretData, error)) (string, error) {
	funcs := template.FuncMap{}
	for _, n := range vaultFuncNames {
		funcs[n] = func(...any) (string, error) { return "", fmt.Errorf("%s called", n) }
	}
	funcs["secret"] = func(p string, _ ...string) (*vaultSecretData, error) {
		s, err := secret(p)
		if err != nil {
			return nil, err
		}
		if strings.Contains(tmpl, "index .Data.data ") {
			return s, nil
		}
		return &vaultSecretData{Data: s.Data["kv1"].(map[string]any)}, nil
	}
	tp, err := template.New("vault").Funcs(funcs).Option("missingkey=error").Parse(tmpl)
	if err != nil {
		return "", fmt.Errorf("parse: %w", err)
	}
	var b strings.Builder
	if err := tp.Execute(&b, nil); err != nil {
		return "", fmt.Errorf("render: %w", err)
	}
	if b.Len() == 0 || strings.Contains(b.String(), "<no value>") {
		return "", fmt.Errorf("rendered %q", b.String())
	}
	return b.String(), nil
}
