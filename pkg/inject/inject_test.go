package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secctx/secctx/pkg/securityctx"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"defaults", func(*Config) {}, ""},
		{"prefix with dash", func(c *Config) { c.EnvVarPrefix = "MY-" }, `inject.envVarPrefix "MY-": must match`},
		{"relative dir", func(c *Config) { c.SecretsDir = "etc/secrets" }, `inject.secretsDir "etc/secrets": must be a clean absolute path`},
		{"unclean dir", func(c *Config) { c.SecretsDir = "/etc/secrets/" }, `inject.secretsDir "/etc/secrets/"`},
		{"ANY as ANY", func(c *Config) { c.AnyMountAs = securityctx.MountAny }, `inject.anyMountAs "ANY": must be FILE or ENV_VAR`},
		{"tokens inside secrets", func(c *Config) { c.Tokens.Dir = "/etc/flyte/secrets/tokens" }, `inject.tokens.dir "/etc/flyte/secrets/tokens": must not be inside inject.secretsDir`},
		{"tokens relative", func(c *Config) { c.Tokens.Dir = "tokens" }, `inject.tokens.dir "tokens": must be a clean absolute path`},
		{"http host with path", func(c *Config) { c.Tokens.HTTPHosts = []string{"a/b"} }, `inject.tokens.httpHosts "a/b": must be a host or host:port`},
		{"CA bundle not PEM", func(c *Config) { c.Tokens.CABundle = "hello" }, `inject.tokens.caBundle: must be PEM certificates`},
		{"CA bundle with a key", func(c *Config) {
			c.Tokens.CABundle = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}, `inject.tokens.caBundle: a PEM block of type "PRIVATE KEY": only CERTIFICATE blocks belong here`},
		{"native sidecars maybe", func(c *Config) { c.Agent.NativeSidecars = "maybe" }, `inject.agent.nativeSidecars "maybe": must be auto, true or false`},
		{"pull sometimes", func(c *Config) { c.Agent.ImagePullPolicy = "Sometimes" }, `inject.agent.imagePullPolicy "Sometimes": must be Always, IfNotPresent or Never`},
		{"fetch elsewhere", func(c *Config) { c.Agent.FetchIn = "node" }, `inject.agent.fetchIn "node": must be init or sidecar`},
		{"fetch in a sidecar the cluster lacks", func(c *Config) { c.Agent.FetchIn, c.Agent.NativeSidecars = FetchInSidecar, NativeSidecarsFalse },
			`inject.agent.fetchIn "sidecar": needs native sidecars`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
			if _, err := New(c, nil); err == nil {
				t.Error("New accepted an invalid config")
			}
		})
	}
}

// TestConfigurableLayout: another prefix, directory and ANY as ENV_VAR.
func TestConfigurableLayout(t *testing.T) {
	cfg := Config{EnvVarPrefix: "SECRET_", SecretsDir: "/var/run/secrets/app", AnyMountAs: securityctx.MountEnvVar}
	in := newTestInjector(t, cfg)
	pod := testPod(`{"secrets":[{"group":"db","key":"pw"},{"group":"tls","key":"ca.crt","mountRequirement":"FILE","envVar":"CA"}]}`)
	out, _, err := in.Inject(context.Background(), pod, "default")
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range out.Spec.Containers[0].Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil {
			env[e.Name] = e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		}
	}
	want := map[string]string{
		"FLYTE_SECRETS_ENV_PREFIX": "SECRET_", "FLYTE_SECRETS_DEFAULT_DIR": "/var/run/secrets/app", "FLYTE_SECRETS_FILE_PREFIX": "",
		"SECRET_DB_PW": "db/pw", "CA": "/var/run/secrets/app/tls/ca.crt",
	}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	if got := out.Spec.Containers[0].VolumeMounts[0].MountPath; got != "/var/run/secrets/app/tls" {
		t.Errorf("mount path = %s", got)
	}
}

func TestInjectLeavesInputAlone(t *testing.T) {
	pod := testPod(`{"runAs":{"k8sServiceAccount":"sa","executionIdentity":"a"},"secrets":[{"group":"db","key":"pw","mountRequirement":"FILE"}]}`)
	pod.Spec.Containers[0].Env = make([]corev1.EnvVar, 1, 10) // spare capacity must not leak
	pod.Spec.Containers[0].Env[0] = corev1.EnvVar{Name: "A", Value: "1"}
	pod.Spec.Volumes = make([]corev1.Volume, 0, 10)
	before := pod.DeepCopy()
	in := newTestInjector(t, DefaultConfig())
	first, _, err := in.Inject(context.Background(), pod, "default")
	if err != nil {
		t.Fatal(err)
	}
	firstCopy := first.DeepCopy()
	if diff := cmp.Diff(before, pod); diff != "" {
		t.Errorf("Inject changed its input (-before +after):\n%s", diff)
	}
	// A second injection of the same input, with another layout, must not
	// write into the first one's lists.
	other, _ := New(Config{EnvVarPrefix: "X_", SecretsDir: "/x", AnyMountAs: securityctx.MountFile}, &fakeServiceAccounts{})
	if _, _, err := other.Inject(context.Background(), pod, "default"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(firstCopy, first); diff != "" {
		t.Errorf("a second Inject changed the first one's result (-before +after):\n%s", diff)
	}
}

func TestServiceAccountLookup(t *testing.T) {
	pod := testPod(`{"runAs":{"k8sServiceAccount":"sa"}}`)

	// Offline: no lookup, and a note says so.
	in, _ := New(DefaultConfig(), nil)
	out, res, err := in.Inject(context.Background(), pod, "team-a")
	if err != nil {
		t.Fatal(err)
	}
	if out.Spec.ServiceAccountName != "sa" || len(res.Notes) != 1 || !strings.Contains(res.Notes[0], "team-a/sa was not checked") {
		t.Errorf("offline: serviceAccountName %q, notes %q", out.Spec.ServiceAccountName, res.Notes)
	}

	// A failed lookup is an internal error, not a refusal, and says what it looked up.
	in, _ = New(DefaultConfig(), failingServiceAccounts{})
	_, _, err = in.Inject(context.Background(), pod, "team-a")
	if err == nil || IsDenied(err) || err.Error() != "get service account team-a/sa: connection refused" {
		t.Errorf("failing lookup: err = %v", err)
	}

	// Already running as the account (reinvocation): no lookup at all.
	sas := &fakeServiceAccounts{}
	in, _ = New(DefaultConfig(), sas)
	pod.Spec.ServiceAccountName = "sa"
	if _, _, err := in.Inject(context.Background(), pod, "team-a"); err != nil || sas.Lookups.Load() != 0 {
		t.Errorf("reinvocation: err %v, lookups %d", err, sas.Lookups.Load())
	}
}

type failingServiceAccounts struct{}

func (failingServiceAccounts) ServiceAccount(context.Context, string, string) (*corev1.ServiceAccount, error) {
	return nil, errors.New("connection refused")
}

func TestDeniedEnvVarClashesBetweenRequests(t *testing.T) {
	tests := []struct{ name, sc, want string }{
		{"same envVar, two secrets",
			`{"secrets":[{"group":"a","key":"k","mountRequirement":"ENV_VAR","envVar":"X"},{"group":"b","key":"k","mountRequirement":"ENV_VAR","envVar":"X"}]}`,
			`secrets[1].envVar: env X would be set from Secret "b" key "k", but secrets[0] sets it from Secret "a" key "k"`},
		{"group version and key spell the same env name",
			`{"secrets":[{"group":"a","groupVersion":"b","key":"c","mountRequirement":"ENV_VAR"},{"group":"a","key":"b_c","mountRequirement":"ENV_VAR"}]}`,
			`secrets[1]: env _FSEC_A_B_C would be set from Secret "a" key "b_c", but secrets[0] sets it from Secret "a-b" key "c"`},
		{"envVar takes flytekit's name",
			`{"secrets":[{"group":"a","key":"k","mountRequirement":"ENV_VAR","envVar":"FLYTE_SECRETS_DEFAULT_DIR"}]}`,
			`secrets[0].envVar: env FLYTE_SECRETS_DEFAULT_DIR would be set from Secret "a" key "k", but secctx sets it to "/etc/flyte/secrets"`},
		{"envVar without key for ENV_VAR",
			`{"secrets":[{"group":"a","mountRequirement":"ENV_VAR","envVar":"ALL"}]}`,
			`secrets[0].envVar "ALL": cannot be set for an ENV_VAR secret without key`},
		{"whole Secret and a key that is not lower case",
			`{"secrets":[{"group":"a","mountRequirement":"FILE"},{"group":"a","key":"Token","mountRequirement":"FILE"}]}`,
			`secrets[0]: Secret "a" is mounted whole at /etc/flyte/secrets/a, so key "Token" would be at /etc/flyte/secrets/a/Token`},
		{"two Secrets at one directory",
			`{"secrets":[{"group":"a-b","key":"k","mountRequirement":"FILE"},{"group":"a","groupVersion":"b","key":"k","mountRequirement":"FILE"}]}`,
			""},
		{"bad key", `{"secrets":[{"group":"a","key":"../etc"}]}`, `secrets[0].key "../etc": must be a Kubernetes Secret key`},
		{"bad group version", `{"secrets":[{"group":"a","groupVersion":"V_2","key":"k"}]}`, `secrets[0].groupVersion "V_2": the Secret name "a-V_2" (group-groupVersion) must be a Kubernetes Secret name`},
		{"bad service account", `{"runAs":{"k8sServiceAccount":"Data_SA"}}`, `runAs.k8sServiceAccount "Data_SA": must be a Kubernetes service account name`},
		{"oauth2Client without key", `{"runAs":{"oauth2Client":{"clientId":"c","clientSecret":{"group":"s"}}}}`, `runAs.oauth2Client.clientSecret.key: required`},
		{"oauth2Client as env", `{"runAs":{"oauth2Client":{"clientId":"c","clientSecret":{"group":"s","key":"k","mountRequirement":"ENV_VAR"}}}}`, `runAs.oauth2Client.clientSecret.mountRequirement "ENV_VAR": must be ANY or FILE`},
		{"oauth2Client id clashes", `{"runAs":{"oauth2Client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}}},"secrets":[{"group":"x","key":"y","mountRequirement":"ENV_VAR","envVar":"FLYTE_CREDENTIALS_CLIENT_ID"}]}`, `env FLYTE_CREDENTIALS_CLIENT_ID would be set to "c", but secrets[0] sets it from Secret "x" key "y"`},
		{"token name", `{"tokens":[{"name":"Api_Token","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}]}`, `tokens[0].name "Api_Token": must be a DNS label that starts with a letter`},
		{"token http", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"http://a/t"}]}`, `tokens[0].tokenEndpoint "http://a/t": must be an https:// URL with a host`},
		{"token endpoint with user", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://u:p@a/t"}]}`, `tokens[0].tokenEndpoint "https://<user info removed>@a/t": must be an https:// URL with a host, and no user info`},
		// Issue 22: the task never sees a token's client secret.
		{"token client secret asked for again", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}],"secrets":[{"group":"s","key":"k","mountRequirement":"FILE"}]}`,
			`secrets[0]: would give the task tokens[0].client.clientSecret (Secret "s" key "k"), which only the token sidecar may read`},
		{"token client secret's whole Secret asked for", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","groupVersion":"v1","key":"k"}},"tokenEndpoint":"https://a/t"}],"secrets":[{"group":"s-v1","mountRequirement":"ENV_VAR"}]}`,
			`secrets[0]: would give the task tokens[0].client.clientSecret (Secret "s-v1" key "k"), which only the token sidecar may read`},
		{"token client secret as runAs.oauth2Client's", `{"runAs":{"oauth2Client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}}},"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}]}`,
			`runAs.oauth2Client.clientSecret: would give the task tokens[0].client.clientSecret (Secret "s" key "k"), which only the token sidecar may read`},
		{"token env clashes with secret", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}],"secrets":[{"group":"x","key":"y","mountRequirement":"ENV_VAR","envVar":"API_TOKEN"}]}`, `tokens[0].name: env API_TOKEN is set by the exec wrapper from the token file, but secrets[0] sets it`},
		{"token file env clashes with secret", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}],"secrets":[{"group":"x","key":"y","mountRequirement":"ENV_VAR","envVar":"API_TOKEN_FILE"}]}`, `tokens[0].name: env API_TOKEN_FILE would be set to "/etc/flyte/tokens/api", but secrets[0] sets it`},
		{"token secret name", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"S{{x}}","key":"k"}},"tokenEndpoint":"https://a/t"}]}`, `tokens[0].client.clientSecret.group "S{{x}}": must be a Kubernetes Secret name`},
		{"token without agent image", `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}]}`, `tokens: secctx is not configured for tokens: inject.agent.image`},
		{"connectionRef", `{"connectionRef":"c"}`, `connectionRef "c": not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			if !strings.Contains(tt.name, "without agent image") {
				cfg.Agent.Image = "secctx:test"
			}
			_, _, err := newTestInjector(t, cfg).Inject(context.Background(), testPod(tt.sc), "default")
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Inject: %v", err)
				}
				return
			}
			if !IsDenied(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Inject error:\n  %v\nwant a refusal containing:\n  %s", err, tt.want)
			}
		})
	}
}

func TestExecutionIdentityLabel(t *testing.T) {
	long := strings.Repeat("x", 70)
	tests := map[string]string{
		"alice":                      "alice",
		"alice@example.com":          "alice_example.com",
		"  spaced out  ":             "spaced_out",
		"@@@":                        "d06525f7",
		"arn:aws:iam::1:user/Bob":    "arn_aws_iam__1_user_Bob",
		long:                         strings.Repeat("x", 54) + "_77f3c97d",
		"ünïcode":                    "n__code",
		strings.Repeat("é", 40):      "", // only checked for validity below
		"-leading-and-trailing-.":    "leading-and-trailing",
		"CN=Bob,OU=Eng,O=Example":    "CN_Bob_OU_Eng_O_Example",
		"user:system:serviceaccount": "user_system_serviceaccount",
	}
	for in, want := range tests {
		got := executionIdentityLabel(in)
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 || got == "" {
			t.Errorf("executionIdentityLabel(%q) = %q: not a label value: %v", in, got, errs)
		}
		if want != "" && got != want {
			t.Errorf("executionIdentityLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAppendPatchEscapesKeysAndOnlyAdds(t *testing.T) {
	before := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "1"}, Annotations: map[string]string{"x": "1"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Env: []corev1.EnvVar{{Name: "A"}}}}}}
	after := before.DeepCopy()
	after.Labels["secctx.dev/execution-identity"] = "b"
	after.Annotations["x"] = "2"
	after.Annotations["a~b/c"] = "3"
	after.Spec.Containers[0].Env = append(after.Spec.Containers[0].Env, corev1.EnvVar{Name: "B"})
	after.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}
	got, err := AppendPatch([]byte("kept"), before, after)
	if err != nil {
		t.Fatal(err)
	}
	want := `kept[{"op":"add","path":"/metadata/labels/secctx.dev~1execution-identity","value":"b"},` +
		`{"op":"add","path":"/metadata/annotations/a~0b~1c","value":"3"},` +
		`{"op":"add","path":"/metadata/annotations/x","value":"2"},` +
		`{"op":"add","path":"/spec/containers/0/env/-","value":{"name":"B"}},` +
		`{"op":"add","path":"/spec/containers/0/volumeMounts","value":[{"name":"v","mountPath":"/v"}]}]`
	if string(got) != want {
		t.Errorf("AppendPatch:\n got %s\nwant %s", got, want)
	}
	if p, err := AppendPatch([]byte("kept"), before, before); string(p) != "kept" || err != nil {
		t.Errorf("AppendPatch of a pod with itself = %s, %v", p, err)
	}
	after.Annotations["x"] = "\xff"
	if _, err := AppendPatch(nil, before, after); err == nil {
		t.Error("AppendPatch of invalid UTF-8: no error")
	}
}

func testPod(sc string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default", Labels: map[string]string{securityctx.LabelInject: "true"},
			Annotations: map[string]string{securityctx.AnnotationSecurityContext: sc}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "app"}}},
	}
}

// TestNameChecksMatchAPIMachinery: the quick checks accept exactly what
// apimachinery's regular expressions accept.
func TestNameChecksMatchAPIMachinery(t *testing.T) {
	for _, s := range []string{"a", "my-certs", "tls.example.com", "a-b.c-d", "0", "9a", "", "-a", "a-", "a..b", ".a", "a.", "A", "a_b",
		"a.-b", "a-.b", strings.Repeat("a", 253), strings.Repeat("a", 254), "ä", "a b", "a/b", "..x", ".", "..", "._x", "KEY_1.txt", "x=y"} {
		if got, want := isSubdomain(s), len(validation.IsDNS1123Subdomain(s)) == 0; got != want {
			t.Errorf("isSubdomain(%q) = %v, apimachinery says %v", s, got, want)
		}
		if got, want := isSecretKey(s), len(validation.IsConfigMapKey(s)) == 0; got != want {
			t.Errorf("isSecretKey(%q) = %v, apimachinery says %v", s, got, want)
		}
	}
}

// TestPlanCache: pods with the same annotations share a prepared plan, yet
// no pod shares memory with it: changing one injected pod, in every pointer
// Inject put there, does not change the next, and concurrent injections
// agree (go test -race checks they do not race).
func TestPlanCache(t *testing.T) {
	in := newTestInjector(t, DefaultConfig())
	sc := `{"secrets":[{"group":"db","key":"password","mountRequirement":"ENV_VAR","envVar":"DB_PASSWORD"},` +
		`{"group":"certs","key":"tls.key","mountRequirement":"FILE","envVar":"TLS_KEY_PATH"},{"group":"app","mountRequirement":"ENV_VAR"}]}`
	first, err := in.Patch(context.Background(), testPod(sc), "default")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range first.Pod.Spec.Containers {
		for i := range c.Env {
			if f := c.Env[i].ValueFrom; f != nil && f.SecretKeyRef != nil {
				f.SecretKeyRef.Name, f.SecretKeyRef.Key = "changed", "changed"
			}
		}
		for i := range c.EnvFrom {
			c.EnvFrom[i].SecretRef.Name = "changed"
		}
	}
	for _, v := range first.Pod.Spec.Volumes {
		if v.Secret != nil {
			v.Secret.SecretName = "changed"
			v.Secret.Items[0].Key = "changed"
			*v.Secret.DefaultMode = 0o777
		}
	}
	if in.plans.Len() != 1 {
		t.Fatalf("cache holds %d plans, want 1", in.plans.Len())
	}
	done := make(chan *Outcome, 8)
	for range cap(done) {
		go func() {
			out, err := in.Patch(context.Background(), testPod(sc), "default")
			if err != nil {
				t.Error(err)
			}
			done <- out
		}()
	}
	fresh, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := fresh.Patch(context.Background(), testPod(sc), "default")
	if err != nil {
		t.Fatal(err)
	}
	for range cap(done) {
		if got := <-done; got == nil || string(got.Patch) != string(want.Patch) {
			t.Fatalf("from the cache after changing a pod:\n%s\nwant\n%s", got.Patch, want.Patch)
		}
	}
}

// TestFlyteKey: different sets of Flyte annotations never share a key, and
// other annotations do not count.
func TestFlyteKey(t *testing.T) {
	keys := map[string]string{}
	for _, ann := range []map[string]string{
		{},
		{"flyte.secrets/s0": "a"},
		{"flyte.secrets/s0": "a1:b"},
		{"flyte.secrets/s0": "a", "flyte.secrets/s1": "b"},
		{"flyte.secrets/s1": "a", "flyte.secrets/s0": "b"},
		{"flyte.secrets/s0": "a", "flyte.secrets/s1": ""},
		{"flyte.secrets/s0": "1:a"},
	} {
		k := flyteKey(ann)
		if prev, ok := keys[k]; ok {
			t.Errorf("%v and %v share key %q", prev, ann, k)
		}
		keys[k] = fmt.Sprint(ann)
	}
	if a, b := flyteKey(map[string]string{"flyte.secrets/s0": "a"}), flyteKey(map[string]string{"flyte.secrets/s0": "a", "other": "x"}); a != b {
		t.Errorf("another annotation changed the key: %q, %q", a, b)
	}
}

func TestStatusJSONMatchesJSONv2(t *testing.T) {
	for _, st := range []Status{
		{},
		{Containers: []string{}},
		{Containers: []string{"main", "side\"car"}, Secrets: []string{"db/password (ENV_VAR)", "certs (FILE)"}},
		{Containers: []string{"main"}, ServiceAccount: "data-processing-sa", ExecutionIdentity: true},
		{Containers: []string{"main"}, Secrets: []string{}, ExecutionIdentity: true},
		{Containers: []string{"main"}, Refreshed: []string{"secrets[0]", "secrets[1]"}, RefreshSeconds: 300, Leased: []string{"secrets[1]"}},
	} {
		got, err := st.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		want, err := jsonv2.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("%+v:\n got %s\nwant %s", st, got, want)
		}
	}
	if _, err := (&Status{Containers: []string{"\xff"}}).appendJSON(nil); err == nil {
		t.Error("invalid UTF-8: no error")
	}
}

// TestAttackerSizedInput: values of megabytes and requests of thousands of
// entries are denied with a message of a readable size that says how long
// the value was, and without doing the work they ask for.
func TestAttackerSizedInput(t *testing.T) {
	big := strings.Repeat("A", 2500000)
	var many strings.Builder
	many.WriteString(`{"secrets":[`)
	for i := range 10000 {
		if i > 0 {
			many.WriteByte(',')
		}
		fmt.Fprintf(&many, `{"group":"g%d","key":"k","mountRequirement":"ENV_VAR"}`, i)
	}
	many.WriteString(`]}`)
	var unknown strings.Builder
	unknown.WriteString(`{`)
	for i := range 5000 {
		fmt.Fprintf(&unknown, `"x%d":1,`, i)
	}
	unknown.WriteString(`"secrets":[]}`)

	tests := []struct {
		name string
		pod  func() *corev1.Pod
		want string
	}{
		{"2.5 MB envVar", func() *corev1.Pod {
			return testPod(`{"secrets":[{"group":"g","key":"k","envVar":"` + big + `x"}]}`)
		}, `secrets[0].envVar "AAAA`},
		{"2.5 MB envVar that matches the pattern", func() *corev1.Pod {
			return testPod(`{"secrets":[{"group":"g","key":"k","envVar":"` + big + `"}]}`)
		}, `(2500000 bytes): must be at most 256 characters`},
		{"2.5 MB execution identity", func() *corev1.Pod {
			return testPod(`{"runAs":{"executionIdentity":"` + big + `"}}`)
		}, `runAs.executionIdentity "AAAA`},
		{"2.5 MB field name", func() *corev1.Pod { return testPod(`{"` + big + `":1}`) }, `... (2500000 bytes): unknown field`},
		{"2.5 MB containers annotation", func() *corev1.Pod {
			p := testPod(`{}`)
			p.Annotations[securityctx.AnnotationContainers] = big
			return p
		}, `(2500000 bytes): the pod has none of these containers`},
		{"2.5 MB container name clash", func() *corev1.Pod {
			p := testPod(`{"secrets":[{"group":"g","key":"k","mountRequirement":"ENV_VAR","envVar":"X"}]}`)
			p.Spec.Containers[0].Name = big
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "X", Value: big}}
			return p
		}, `(2500000 bytes) already sets env X to a literal value`},
		{"10,000 secrets", func() *corev1.Pod { return testPod(many.String()) }, `secrets: 10000 secrets asked for; at most 256 are allowed (limits.maxSecrets)`},
		{"5,000 unknown fields", func() *corev1.Pod { return testPod(unknown.String()) }, `and 4990 more problems`},
		{"containers × secrets", func() *corev1.Pod {
			p := testPod(`{"secrets":[` + strings.Repeat(`{"group":"g","key":"k","mountRequirement":"ENV_VAR"},`, 200) + `{"group":"g","key":"k","mountRequirement":"ENV_VAR"}]}`)
			for i := range 30 {
				p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprint("c", i)})
			}
			return p
		}, `31 target containers × 201 secrets is 6231; at most 4096 are allowed (limits.maxContainerSecrets)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := newTestInjector(t, DefaultConfig()).Inject(context.Background(), tt.pod(), "default")
			if !IsDenied(err) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("want a refusal containing %q, got %.2000v", tt.want, err)
			}
			if n := len(err.Error()); n > 8<<10 {
				t.Errorf("message is %d bytes, want at most 8 KiB", n)
			}
		})
	}
}

// TestQuoteBounds: every value in a message is cut at a character boundary
// and says its length.
func TestQuoteBounds(t *testing.T) {
	if got := securityctx.Quote("short"); got != `"short"` {
		t.Errorf("Quote(short) = %s", got)
	}
	long := strings.Repeat("é", 300) // 600 bytes, two each
	got := securityctx.Quote(long)
	if want := `"` + strings.Repeat("é", securityctx.MaxQuoted/2) + `"... (600 bytes)`; got != want {
		t.Errorf("Quote(long) = %s, want %s", got, want)
	}
	d := &DeniedError{Pod: "ns/p", Problems: slices.Repeat([]string{strings.Repeat("x", 5000)}, 50)}
	if n := len(d.Error()); n > (maxProblemBytes+30)*(maxProblems+1) {
		t.Errorf("DeniedError of 50 problems of 5000 bytes is %d bytes", n)
	}
	if !strings.HasSuffix(d.Error(), "and 40 more problems") {
		t.Errorf("DeniedError does not count what it left out: ...%s", d.Error()[len(d.Error())-60:])
	}
}

// TestContainersNamedForLater: a name in secctx.dev/containers that the pod
// does not have yet is allowed (another webhook may add that container),
// with a warning in case it is a typo; once the container is there, a
// reinvocation injects into it.
func TestContainersNamedForLater(t *testing.T) {
	in := newTestInjector(t, DefaultConfig())
	pod := testPod(`{"secrets":[{"group":"g","key":"k","mountRequirement":"ENV_VAR"}]}`)
	pod.Annotations[securityctx.AnnotationContainers] = "main,proxy"
	out, res, err := in.Inject(context.Background(), pod, "default")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{`secctx.dev/containers names proxy, which the pod does not have: it gets the secrets only if another webhook adds it`}; !slices.Equal(res.Notes, want) {
		t.Errorf("notes %q, want %q", res.Notes, want)
	}
	out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: "proxy"})
	again, res, err := in.Inject(context.Background(), out, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Notes) != 0 || findEnv(again.Spec.Containers[1].Env, "_FSEC_G_K") < 0 {
		t.Errorf("reinvocation: notes %q, proxy env %v", res.Notes, again.Spec.Containers[1].Env)
	}
}

// TestTokensWarnings: a container without a command gets the file only,
// and the result says so; native sidecars off denies tokens.
func TestTokensWarnings(t *testing.T) {
	sc := `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}]}`
	cfg := DefaultConfig()
	cfg.Agent.Image = "secctx:test"
	out, res, err := newTestInjector(t, cfg).Inject(context.Background(), testPod(sc), "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Notes) != 1 || !strings.Contains(res.Notes[0], `container main has no explicit command, so the exec wrapper cannot set API_TOKEN`) {
		t.Errorf("notes: %q", res.Notes)
	}
	if len(out.Spec.InitContainers) != 1 || out.Spec.InitContainers[0].Name != SidecarContainer {
		t.Errorf("init containers: want the sidecar alone (nothing to wrap), have %d", len(out.Spec.InitContainers))
	}
	cfg.Agent.NativeSidecars = NativeSidecarsFalse
	_, _, err = newTestInjector(t, cfg).Inject(context.Background(), testPod(sc), "default")
	if !IsDenied(err) || !strings.Contains(err.Error(), "tokens: this cluster does not run native sidecars") {
		t.Errorf("without native sidecars: %v", err)
	}
}

func TestIAMRoleARNs(t *testing.T) {
	for _, tt := range []struct {
		arn string
		ok  bool
	}{
		{"arn:aws:iam::123456789012:role/my-workflow-role", true},
		{"arn:aws-cn:iam::123456789012:role/r", true},
		{"arn:aws-us-gov:iam::123456789012:role/a/b/c/name+=,.@-_", true},
		{"arn:aws-iso-b:iam::123456789012:role/r", true},
		{"arn:aws:iam::123456789012:role/" + strings.Repeat("n", 64), true},
		{"arn:aws:iam::123456789012:role/" + strings.Repeat("n", 65), false},
		{"arn:aws:iam::123456789012:role/" + strings.Repeat("p", 100) + "/" + strings.Repeat("n", 64), true},
		{"arn:aws:iam::12345678901:role/r", false},
		// Issue 22: the partition and the account are checked, not only
		// their shape's neighbours.
		{"arn:aws:iam::1234567890123:role/r", false},
		{"arn:aws:iam::12345678901a:role/r", false},
		{"arn:aws:iam:us-east-1:123456789012:role/r", false},
		{"arn:awsx:iam::123456789012:role/r", false},
		{"arn:gcp:iam::123456789012:role/r", false},
		{"arn:aws-:iam::123456789012:role/r", false},
		{"arn:aws-cn-:iam::123456789012:role/r", false},
		{"arn:aws-c1:iam::123456789012:role/r", false},
		{"arn::iam::123456789012:role/r", false},
		{"arn:aws:iam::123456789012:user/r", false},
		{"arn:aws:iam::123456789012:role/", false},
		{"arn:aws:sts::123456789012:assumed-role/r/s", false},
		{"arn:aws:iam::123456789012:role/r\n", false},
		{"arn:aws:iam::123456789012:role/$(id)", false},
		{"arn:aws:iam::123456789012:role/{{.x}}", false},
		{"arn:aws:iam::123456789012:role/r r", false},
		{"arn:AWS:iam::123456789012:role/r", false},
		{"arn:aws:iam::123456789012:role/" + strings.Repeat("p/", 1100) + "r", false},
		{"my-workflow-role", false},
	} {
		if got := validateIAMRole(tt.arn) == nil; got != tt.ok {
			t.Errorf("%.80q: valid = %v, want %v", tt.arn, got, tt.ok)
		}
	}
}

func TestIAMConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		set  func(*IAMConfig)
		want string
	}{
		{"mode", func(c *IAMConfig) { c.Mode = "kiam" }, `inject.iam.mode "kiam": must be irsa or annotation`},
		{"short expiry", func(c *IAMConfig) { c.ExpirationSeconds = 60 }, `inject.iam.expirationSeconds 60: must be at least 600`},
		{"relative dir", func(c *IAMConfig) { c.TokenDir = "aws" }, `inject.iam.tokenDir "aws": must be a clean absolute path`},
		{"inside secrets", func(c *IAMConfig) { c.TokenDir = "/etc/flyte/secrets/aws" }, `inject.iam.tokenDir "/etc/flyte/secrets/aws": must not be inside "/etc/flyte/secrets"`},
		{"annotation", func(c *IAMConfig) { c.Annotation = "iam role" }, `inject.iam.annotation "iam role"`},
		{"region", func(c *IAMConfig) { c.Region = "US East" }, `inject.iam.region "US East": must be an AWS region name`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.set(&c.IAM)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestPlanCacheTokens: TestPlanCache for the agent containers and volumes
// a token adds, which come from the cached plan.
func TestPlanCacheTokens(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Agent.Image = "secctx:test"
	in := newTestInjector(t, cfg)
	sc := `{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"s","key":"k"}},"tokenEndpoint":"https://a/t"}]}`
	pod := func() *corev1.Pod {
		p := testPod(sc)
		p.Spec.Containers[0].Command = []string{"/task"}
		return p
	}
	first, err := in.Patch(context.Background(), pod(), "default")
	if err != nil {
		t.Fatal(err)
	}
	for i := range first.Pod.Spec.InitContainers {
		c := &first.Pod.Spec.InitContainers[i]
		c.Args[0], c.Command[0], c.VolumeMounts[0].MountPath = "changed", "changed", "/changed"
		c.Resources.Requests[corev1.ResourceCPU] = resource.MustParse("9")
		*c.SecurityContext.RunAsUser = 0
	}
	for _, v := range first.Pod.Spec.Volumes {
		if v.Secret != nil {
			v.Secret.SecretName, v.Secret.Items[0].Key = "changed", "changed"
		}
		if v.EmptyDir != nil {
			v.EmptyDir.Medium = "changed"
		}
	}
	again, err := in.Patch(context.Background(), pod(), "default")
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, err := fresh.Patch(context.Background(), pod(), "default")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.Pod, again.Pod); diff != "" {
		t.Errorf("from the cache after changing a pod (-fresh +cached):\n%s", diff)
	}
	if string(want.Patch) != string(again.Patch) {
		t.Errorf("patch from the cache:\n%s\nwant\n%s", again.Patch, want.Patch)
	}
}

// TestAnyNote: a secret asked for as ANY is served in one form, and the
// result says which, so that kubectl shows it as a warning.
func TestAnyNote(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  func(*Config)
		want string
	}{
		{"kubernetes", func(*Config) {}, "secrets[0], secrets[2] asked for mountRequirement ANY: served as FILE (inject.anyMountAs)"},
		{"env", func(c *Config) { c.AnyMountAs = securityctx.MountEnvVar }, "secrets[0], secrets[2] asked for mountRequirement ANY: served as ENV_VAR (inject.anyMountAs)"},
		{"vault injector", func(c *Config) {
			c.Backend, c.AnyMountAs, c.Vault.Mounts = BackendVault, securityctx.MountEnvVar, []string{"a", "b", "c"}
		},
			"secrets[0], secrets[2] asked for mountRequirement ANY: served as FILE (the Vault Agent Injector writes files)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.cfg(&cfg)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Labels: map[string]string{securityctx.LabelInject: "true"},
				Annotations: map[string]string{securityctx.AnnotationSecurityContext: `{"secrets":[{"group":"a","key":"k"},{"group":"b","key":"k","mountRequirement":"FILE"},{"group":"c","key":"k","mountRequirement":"ANY"}]}`}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
			_, res, err := newTestInjector(t, cfg).Inject(context.Background(), pod, "default")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(res.Notes, tt.want) {
				t.Errorf("notes %q, want %q", res.Notes, tt.want)
			}
		})
	}
}

// TestAWSSecretARNs: group:key is a Secrets Manager ARN in any partition,
// with a region and a 12-digit account; anything else is refused.
func TestAWSSecretARNs(t *testing.T) {
	for _, tt := range []struct {
		group string
		ok    bool
	}{
		{"arn:aws:secretsmanager:us-east-1:123456789012:secret", true},
		{"arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret", true},
		{"arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret", true},
		{"arn:aws-iso-b:secretsmanager:us-isob-east-1:123456789012:secret", true},
		{"arn:gcp:secretsmanager:us-east-1:123456789012:secret", false},
		{"arn:awsx:secretsmanager:us-east-1:123456789012:secret", false},
		{"arn:aws-:secretsmanager:us-east-1:123456789012:secret", false},
		{"arn:aws:secretsmanager:us-east-1:12345678901:secret", false},
		{"arn:aws:secretsmanager:us-east-1:1234567890123:secret", false},
		{"arn:aws:secretsmanager:us-east-1:12345678901x:secret", false},
		{"arn:aws:secretsmanager::123456789012:secret", false},
		{"arn:aws:secretsmanager:us-east:123456789012:secret", false},
		{"arn:aws:ssm:us-east-1:123456789012:secret", false},
		{"arn:aws:secretsmanager:us-east-1:123456789012:parameter", false},
	} {
		_, errs := locateAWS(&securityctx.Secret{Group: tt.group, Key: "db"}, "secrets[0]")
		if got := len(errs) == 0; got != tt.ok {
			t.Errorf("%s: valid = %v, want %v: %v", tt.group, got, tt.ok, errs)
		}
	}
}

// TestAWSSecretNames: the lengths Secrets Manager allows, checked apart
// from the expression, at their bounds.
func TestAWSSecretNames(t *testing.T) {
	const group = "arn:aws:secretsmanager:us-east-1:123456789012:secret"
	for _, tt := range []struct {
		key, stage string
		ok         bool
	}{
		{strings.Repeat("n", 512), "", true},
		{strings.Repeat("n", 513), "", false},
		{"a/b/" + strings.Repeat("n", 508), "", true},
		{"db", strings.Repeat("s", 256), true},
		{"db", strings.Repeat("s", 257), false},
		{"db", "AWSCURRENT", true},
		{"db:x", "", false},
		{"db", "..", false},
		{"db", ".", false},
	} {
		_, errs := locateAWS(&securityctx.Secret{Group: group, Key: tt.key, GroupVersion: tt.stage}, "secrets[0]")
		if got := len(errs) == 0; got != tt.ok {
			t.Errorf("key %.40q (%d), stage %.40q (%d): valid = %v, want %v: %v", tt.key, len(tt.key), tt.stage, len(tt.stage), got, tt.ok, errs)
		}
	}
}

// boundsFunc is a RefreshBounds of the test's.
type boundsFunc func(namespace string) (int32, error)

func (f boundsFunc) MinRefreshSeconds(_ context.Context, ns string) (int32, error) { return f(ns) }

// TestRefreshBounds: a namespace's bound lengthens inject.refresh's
// interval, never shortens it; the sidecar, the status and the Result say
// the interval that holds; a lookup that fails is an error, not a pod
// admitted with the wrong interval.
func TestRefreshBounds(t *testing.T) {
	cfg := fixtureConfig(t, "refresh-aws-tokens")
	raw := readPodJSON(t, "testdata/pods/refresh-aws-tokens.in.yaml")
	for _, tc := range []struct {
		bound, want int32
		err         error
	}{{0, 300, nil}, {120, 300, nil}, {900, 900, nil}, {0, 0, errors.New("cache not synced")}} {
		in := newTestInjector(t, cfg).WithRefreshBounds(boundsFunc(func(ns string) (int32, error) {
			if ns != "team-a" {
				t.Errorf("bounds asked for namespace %q", ns)
			}
			return tc.bound, tc.err
		}))
		out, err := in.InjectJSON(context.Background(), "team-a", raw)
		if tc.err != nil {
			if err == nil || IsDenied(err) || !strings.Contains(err.Error(), "cache not synced") {
				t.Errorf("bound lookup failing: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		arg := fmt.Sprintf(`"--refresh=%ds"`, tc.want)
		if !strings.Contains(string(out.Patch), arg) || out.RefreshSeconds != tc.want || !slices.Equal(out.Refreshed, []string{"secrets[0]"}) {
			t.Errorf("bound %d: refresh %d %v, patch has %s: %v", tc.bound, out.RefreshSeconds, out.Refreshed, arg, strings.Contains(string(out.Patch), arg))
		}
		if want := fmt.Sprintf(`\"refreshed\":[\"secrets[0]\"],\"refreshSeconds\":%d}`, tc.want); !strings.Contains(string(out.Patch), want) {
			t.Errorf("bound %d: the status does not say %s", tc.bound, want)
		}
	}
}

// TestRefreshSidecarOnlyItsStores: of several stores, the sidecar gets the
// args, env and login tokens of the stores whose FILE secrets it
// refreshes, and none of a store whose secrets are all ENV_VAR values.
func TestRefreshSidecarOnlyItsStores(t *testing.T) {
	in := newTestInjector(t, fixtureConfig(t, "refresh-mixed"))
	out, err := in.InjectJSON(context.Background(), "default", readPodJSON(t, "testdata/pods/refresh-mixed.in.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var sidecar, fetch *corev1.Container
	for i, c := range out.Pod.Spec.InitContainers {
		switch c.Name {
		case SidecarContainer:
			sidecar = &out.Pod.Spec.InitContainers[i]
		case FetchContainer:
			fetch = &out.Pod.Spec.InitContainers[i]
		}
	}
	if sidecar == nil || fetch == nil {
		t.Fatalf("init containers: %v", out.Pod.Spec.InitContainers)
	}
	has := func(c *corev1.Container, mount, env, arg string) [3]bool {
		return [3]bool{
			slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == mount }),
			findEnv(c.Env, env) >= 0,
			slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, arg) }),
		}
	}
	// Azure's secret is an ENV_VAR: the fetch signs in to Entra, the sidecar does not.
	if got := has(fetch, azureTokenVolumeName, EnvAzureClientID, "--secrets="); got != [3]bool{true, true, true} {
		t.Errorf("the fetch's Azure parts: %v", got)
	}
	if got := has(sidecar, azureTokenVolumeName, EnvAzureClientID, "--none"); got[0] || got[1] {
		t.Errorf("the sidecar has Azure's login: mount %v, env %v", got[0], got[1])
	}
	// Vault's and Google's are FILE secrets: the sidecar logs in to both.
	if got := has(sidecar, vaultTokenVolumeName, "NONE", "--vault-role="); !got[0] || !got[2] {
		t.Errorf("the sidecar lacks Vault's login: %v", got)
	}
	if !slices.Contains(sidecar.Command, FetchBinary) {
		t.Errorf("the sidecar refreshes a Google secret but runs %v", sidecar.Command)
	}
}

// TestFetchInSidecar: with inject.agent.fetchIn: sidecar a pod gets no
// fetch init container, its one sidecar fetches, and every target is
// wrapped with the sidecar's status; a pod with a target that has no
// explicit command keeps the init container, with a note that says why.
func TestFetchInSidecar(t *testing.T) {
	in := newTestInjector(t, fixtureConfig(t, "fetch-sidecar-aws"))
	for name, tc := range map[string]struct {
		fixture  string
		want     []string
		wrapped  bool
		wantNote string
	}{
		"sidecar":              {"fetch-sidecar-aws", []string{SidecarContainer}, true, ""},
		"no command":           {"fetch-sidecar-no-command", []string{FetchContainer}, false, "container main has no explicit command (Flyte's Python tasks give args alone), so the exec wrapper cannot fail it when the secrets cannot be fetched: the secrets are fetched by an init container instead of the sidecar (inject.agent.fetchIn)"},
		"a container left out": {"fetch-sidecar-aws", []string{FetchContainer}, false, "container proxy gets no secrets, and would run on if they could not be fetched: the secrets are fetched by an init container"},
	} {
		t.Run(name, func(t *testing.T) {
			raw := readPodJSON(t, "testdata/pods/"+tc.fixture+".in.yaml")
			if name == "a container left out" {
				var pod corev1.Pod
				if err := json.Unmarshal(raw, &pod); err != nil {
					t.Fatal(err)
				}
				pod.Annotations["secctx.dev/containers"] = "main"
				pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: "proxy", Image: "proxy:1", Command: []string{"/proxy"}})
				raw, _ = json.Marshal(&pod)
			}
			out, err := in.InjectJSON(context.Background(), "default", raw)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, c := range out.Pod.Spec.InitContainers {
				names = append(names, c.Name)
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("init containers %v, want %v", names, tc.want)
			}
			main := out.Pod.Spec.Containers[0]
			if got := slices.Contains(main.Command, "--status="+FetchStatusPath); got != tc.wrapped {
				t.Errorf("wrapped with the status: %v, want %v (%q)", got, tc.wrapped, main.Command)
			}
			if tc.wantNote == "" && len(out.Result.Notes) > 0 || tc.wantNote != "" && (len(out.Result.Notes) != 1 || !strings.Contains(out.Result.Notes[0], tc.wantNote)) {
				t.Errorf("notes %q, want %q", out.Result.Notes, tc.wantNote)
			}
		})
	}
}
