package securityctx

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// flyteVectors are encodings made by Flyte's own marshaler, kept in
// testdata/flyte-secrets/vectors.json.
type flyteVectors struct {
	Alphabet string            `json:"alphabet"`
	Label    map[string]string `json:"label"`
	Vectors  []struct {
		Name    string `json:"name"`
		Secrets []struct {
			Group            string `json:"group"`
			Key              string `json:"key"`
			GroupVersion     string `json:"groupVersion"`
			MountRequirement string `json:"mountRequirement"`
			EnvVar           string `json:"envVar"`
		} `json:"secrets"`
		Annotations map[string]string `json:"annotations"`
		Prototext   []string          `json:"prototext"`
	} `json:"vectors"`
}

const vectorsFile = "testdata/flyte-secrets/vectors.json"

// LoadFlyteVectors is for tests in other packages too.
func loadVectors(t testing.TB) flyteVectors {
	t.Helper()
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var v flyteVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Vectors) < 10 {
		t.Fatalf("only %d vectors", len(v.Vectors))
	}
	return v
}

func TestFlyteVectors(t *testing.T) {
	v := loadVectors(t)
	if v.Alphabet != "abcdefghijklmnopqrstuvwxyz123456" || v.Label[LabelFlyteInject] != "true" {
		t.Fatalf("alphabet %q, label %v", v.Alphabet, v.Label)
	}
	for _, vec := range v.Vectors {
		t.Run(vec.Name, func(t *testing.T) {
			var want []Secret
			for _, s := range vec.Secrets {
				var m MountType
				if err := m.UnmarshalJSON([]byte(`"` + s.MountRequirement + `"`)); err != nil {
					t.Fatal(err)
				}
				want = append(want, Secret{Group: s.Group, GroupVersion: s.GroupVersion, Key: s.Key, MountRequirement: m, EnvVar: s.EnvVar})
			}
			// Decode: every annotation, in the order of N.
			got, errs := DecodeFlyteAnnotations(vec.Annotations)
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			var secrets []Secret
			for _, g := range got {
				secrets = append(secrets, g.Secret)
			}
			if diff := cmp.Diff(want, secrets); diff != "" {
				t.Errorf("decoded (-want +got):\n%s", diff)
			}
			// The text inside is the prototext Flyte wrote.
			for i, g := range got {
				text, err := flyteBase32.DecodeString(vec.Annotations[g.Annotation])
				if err != nil || string(text) != vec.Prototext[i] {
					t.Errorf("%s: text %q, want %q (%v)", g.Annotation, text, vec.Prototext[i], err)
				}
			}
			// Encode: byte for byte what Flyte writes.
			enc, err := EncodeFlyteSecrets(want)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(vec.Annotations, enc); diff != "" {
				t.Errorf("encoded (-flyte +secctx):\n%s", diff)
			}
		})
	}
}

func TestDecodeFlyteAnnotationsErrors(t *testing.T) {
	good, _ := EncodeFlyteSecrets([]Secret{{Group: "g", Key: "k"}})
	text := func(s string) string { return flyteBase32.EncodeToString([]byte(s)) }
	tests := []struct {
		name        string
		annotations map[string]string
		want        string
	}{
		{"not base32", map[string]string{"flyte.secrets/s0": "ABC!"}, `flyte.secrets/s0: not Flyte's base32 (a-z, 1-6, no padding)`},
		{"digits 7-9 are not in the alphabet", map[string]string{"flyte.secrets/s0": "m7"}, `flyte.secrets/s0: not Flyte's base32`},
		{"not text format", map[string]string{"flyte.secrets/s0": text("group = {")}, `flyte.secrets/s0: not a flyteidl.core.Secret in text format`},
		{"unknown field", map[string]string{"flyte.secrets/s0": text(`group: "g"` + "\nflavour: \"x\"\n")}, `flyte.secrets/s0: not a flyteidl.core.Secret in text format`},
		{"unknown enum", map[string]string{"flyte.secrets/s0": text(`group: "g"` + "\nmount_requirement: DISK\n")}, `flyte.secrets/s0: not a flyteidl.core.Secret in text format`},
		{"no group", map[string]string{"flyte.secrets/s1": text(`key: "k"` + "\n")}, `flyte.secrets/s1.group: required`},
		{"bad env var", map[string]string{"flyte.secrets/s0": text(`group: "g"` + "\nenv_var: \"a-b\"\n")}, `flyte.secrets/s0.envVar "a-b": must match`},
		{"bad key name", map[string]string{"flyte.secrets/sx": good["flyte.secrets/s0"]}, `flyte.secrets/sx: must be named flyte.secrets/s<N>`},
		// Issue 22: s00 was read as a second index 0.
		{"leading zero", map[string]string{"flyte.secrets/s0": good["flyte.secrets/s0"], "flyte.secrets/s00": good["flyte.secrets/s0"]}, `flyte.secrets/s00: must be named flyte.secrets/s<N>`},
		{"sign", map[string]string{"flyte.secrets/s+1": good["flyte.secrets/s0"]}, `flyte.secrets/s+1: must be named flyte.secrets/s<N>`},
		{"no number", map[string]string{"flyte.secrets/s": good["flyte.secrets/s0"]}, `flyte.secrets/s: must be named flyte.secrets/s<N>`},
		{"huge number", map[string]string{"flyte.secrets/s99999999999999999999": good["flyte.secrets/s0"]}, `flyte.secrets/s99999999999999999999: must be named flyte.secrets/s<N>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := DecodeFlyteAnnotations(tt.annotations)
			if !strings.Contains(errs.Error(), tt.want) {
				t.Errorf("got %q, want %q", errs.Error(), tt.want)
			}
		})
	}
	// Other annotations are not Flyte's business.
	if got, errs := DecodeFlyteAnnotations(map[string]string{"flyte.secretsx": "?", "other": "x"}); len(got) != 0 || len(errs) != 0 {
		t.Errorf("got %v %v", got, errs)
	}
}

func TestMergeFlyte(t *testing.T) {
	sc := &SecurityContext{Secrets: []Secret{{Group: "db", Key: "password", MountRequirement: MountEnvVar, EnvVar: "DB_PASSWORD"}}}
	same := FlyteSecret{Annotation: "flyte.secrets/s0", Secret: sc.Secrets[0]}
	other := FlyteSecret{Annotation: "flyte.secrets/s1", Secret: Secret{Group: "certs", Key: "tls.key", MountRequirement: MountFile}}
	merged, fields, errs := MergeFlyte(sc, []FlyteSecret{same, other})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if diff := cmp.Diff([]Secret{sc.Secrets[0], other.Secret}, merged.Secrets); diff != "" {
		t.Errorf("merged (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"secrets[0]", "flyte.secrets/s1"}, fields); diff != "" {
		t.Errorf("fields (-want +got):\n%s", diff)
	}
	if len(sc.Secrets) != 1 {
		t.Error("MergeFlyte changed its input")
	}
	contra := FlyteSecret{Annotation: "flyte.secrets/s0", Secret: Secret{Group: "db", Key: "password", MountRequirement: MountFile}}
	_, _, errs = MergeFlyte(sc, []FlyteSecret{contra})
	want := `flyte.secrets/s0: asks for secret group "db" key "password" as FILE, but secctx.dev/security-context secrets[0] asks for it as ENV_VAR with envVar DB_PASSWORD`
	if errs.Error() != want {
		t.Errorf("got  %s\nwant %s", errs.Error(), want)
	}
	// Without a SecurityContext annotation, Flyte's secrets stand alone.
	merged, _, errs = MergeFlyte(nil, []FlyteSecret{other})
	if len(errs) > 0 || len(merged.Secrets) != 1 {
		t.Errorf("got %v %v", merged, errs)
	}
}

func FuzzDecodeFlyteSecret(f *testing.F) {
	v := loadVectors(f)
	for _, vec := range v.Vectors {
		for _, a := range vec.Annotations {
			f.Add(a)
		}
	}
	f.Add("")
	f.Add("m4zg54lqhiqceozhhixvyxbcbi")
	f.Fuzz(func(t *testing.T, value string) {
		s, err := DecodeFlyteSecret(value)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to something that decodes the same.
		enc, err := EncodeFlyteSecrets([]Secret{s})
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeFlyteSecret(enc["flyte.secrets/s0"])
		if err != nil || again != s {
			t.Fatalf("round trip: %+v -> %+v, %v", s, again, err)
		}
	})
}
