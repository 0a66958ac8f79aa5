package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/secctx/secctx/pkg/inject"
)

// secretKeys answers from a map of Secret name to key names, and counts
// the lookups. The real lookup (APISecretKeys) is tested on a real cluster
// in test/e2e.
type secretKeys struct {
	secrets map[string][]string
	err     error
	reads   []string
}

func (s *secretKeys) Keys(_ context.Context, _, name string) ([]string, bool, error) {
	s.reads = append(s.reads, name)
	if s.err != nil {
		return nil, false, s.err
	}
	keys, ok := s.secrets[name]
	return keys, ok, nil
}

func ref(field, secret, key string) inject.SecretRef {
	return inject.SecretRef{Field: field, Secret: secret, Key: key}
}

func TestCheckReferences(t *testing.T) {
	keys := &secretKeys{secrets: map[string][]string{
		"db":    {"password", "user"},
		"api":   {"Token"},
		"empty": nil,
		"many":  {"a", "b", "c", "d", "e", "f", "g"},
	}}
	tests := []struct {
		name  string
		refs  []inject.SecretRef
		want  []string
		reads []string
	}{
		{"all there", []inject.SecretRef{ref("secrets[0]", "db", "password"), ref("secrets[1]", "db", ""), ref("secrets[2]", "db", "user")}, nil, []string{"db"}},
		{"missing Secret, named by every field", []inject.SecretRef{ref("secrets[0]", "nope", "a"), ref("secrets[1]", "db", "user"), ref("secrets[2]", "nope", "")},
			[]string{`secrets[0], secrets[2]: Secret "nope" not found in namespace ns`}, []string{"nope", "db"}},
		{"missing key", []inject.SecretRef{ref("secrets[0]", "db", "pasword")},
			[]string{`secrets[0]: Secret "db" in namespace ns has no key "pasword" (it has "password", "user")`}, []string{"db"}},
		{"key in another case", []inject.SecretRef{ref("runAs.oauth2Client.clientSecret", "api", "token")},
			[]string{`runAs.oauth2Client.clientSecret: Secret "api" in namespace ns has no key "token" (it has "Token": keys are case-sensitive)`}, []string{"api"}},
		{"no keys", []inject.SecretRef{ref("secrets[0]", "empty", "k")},
			[]string{`secrets[0]: Secret "empty" in namespace ns has no key "k" (it has no keys)`}, []string{"empty"}},
		{"many keys", []inject.SecretRef{ref("secrets[0]", "many", "z")},
			[]string{`secrets[0]: Secret "many" in namespace ns has no key "z" (it has "a", "b", "c", "d", "e" and 2 more)`}, []string{"many"}},
		{"several problems", []inject.SecretRef{ref("secrets[0]", "db", "x"), ref("secrets[1]", "db", "y"), ref("secrets[2]", "gone", "x")},
			[]string{`secrets[0]: Secret "db" in namespace ns has no key "x" (it has "password", "user")`,
				`secrets[1]: Secret "db" in namespace ns has no key "y" (it has "password", "user")`,
				`secrets[2]: Secret "gone" not found in namespace ns`}, []string{"db", "gone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys.reads = nil
			got, err := CheckReferences(context.Background(), keys, "ns", tt.refs)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.reads, keys.reads); diff != "" {
				t.Errorf("Secrets read (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := CheckReferences(context.Background(), &secretKeys{err: errors.New("forbidden")}, "ns", tests[0].refs); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("lookup error: %v", err)
	}
}

// TestReferenceChecksModes drives the handler in each mode: what the
// author sees, the decision counted, and which Secrets were read.
func TestReferenceChecksModes(t *testing.T) {
	pod := func(sc string, extra string) []byte {
		return reviewBytes(t, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"secctx.dev/inject":"true"},"annotations":{"secctx.dev/security-context":`+
			strconv.Quote(sc)+extra+`}},"spec":{"containers":[{"name":"c","image":"i"}]}}`), admissionv1.Create)
	}
	const sc = `{"secrets":[{"group":"db","key":"password","mountRequirement":"ENV_VAR"},{"group":"certs","mountRequirement":"FILE"}]}`
	// injected is the pod as the first pass left it, for a reinvocation.
	first, err := newTestMutator(t).injector.InjectJSON(context.Background(), "flytesnacks-development", []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"secctx.dev/inject":"true"},"annotations":{"secctx.dev/security-context":`+
		strconv.Quote(sc)+`}},"spec":{"containers":[{"name":"c","image":"i"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	injected, err := json.Marshal(first.Pod)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		mode     string
		keys     *secretKeys
		body     []byte
		allowed  bool
		code     int32
		message  string
		warnings []string
		reason   string
		reads    []string
	}{
		{name: "off reads nothing", mode: RefChecksOff, keys: &secretKeys{}, body: pod(sc, ""), allowed: true, reason: ReasonInjected},
		{name: "warn, all there", mode: RefChecksWarn, keys: &secretKeys{secrets: map[string][]string{"db": {"password"}, "certs": {"ca.crt"}}},
			body: pod(sc, ""), allowed: true, reason: ReasonInjected, reads: []string{"db", "certs"}},
		{name: "warn, missing", mode: RefChecksWarn, keys: &secretKeys{secrets: map[string][]string{"db": {"pass"}}},
			body: pod(sc, ""), allowed: true, reason: ReasonMissingReference, reads: []string{"db", "certs"},
			warnings: []string{
				`reference check: secrets[0]: Secret "db" in namespace flytesnacks-development has no key "password" (it has "pass"): the pod will not start until it exists`,
				`reference check: secrets[1]: Secret "certs" not found in namespace flytesnacks-development: the pod will not start until it exists`}},
		{name: "deny, missing", mode: RefChecksDeny, keys: &secretKeys{secrets: map[string][]string{"db": {"password"}}},
			body: pod(sc, ""), code: 403, reason: ReasonMissingReference, reads: []string{"db", "certs"},
			message: `pod flytesnacks-development/p: secrets[1]: Secret "certs" not found in namespace flytesnacks-development: the pod could not start (referenceChecks: deny)`},
		{name: "deny, lookup fails", mode: RefChecksDeny, keys: &secretKeys{err: errors.New("secrets is forbidden")},
			body: pod(sc, ""), code: 500, reason: ReasonInternal, reads: []string{"db"},
			message: "check the Secrets the pod refers to: secrets is forbidden (referenceChecks: deny)"},
		{name: "warn, lookup fails", mode: RefChecksWarn, keys: &secretKeys{err: errors.New("secrets is forbidden")},
			body: pod(sc, ""), allowed: true, reason: ReasonInjected, reads: []string{"db"},
			warnings: []string{"reference check skipped: check the Secrets the pod refers to: secrets is forbidden"}},
		{name: "deny, already injected", mode: RefChecksDeny, keys: &secretKeys{},
			body: reviewBytes(t, injected, admissionv1.Create), allowed: true, reason: ReasonNoChange},
		{name: "deny, nothing asked", mode: RefChecksDeny, keys: &secretKeys{}, body: pod(`{}`, ""), allowed: true, reason: ReasonInjected},
		// Issue 22: a token's client secret is a Secret the kubelet must
		// mount for the sidecar; missing, the pod would wait in
		// ContainerCreating.
		{name: "deny, token client secret missing", mode: RefChecksDeny, keys: &secretKeys{secrets: map[string][]string{"db": {"password"}, "certs": {"ca.crt"}}},
			body: pod(`{"tokens":[{"name":"api","client":{"clientId":"c","clientSecret":{"group":"oauth","key":"s"}},"tokenEndpoint":"https://idp.example.com/token"}]}`, ""),
			code: 403, reason: ReasonMissingReference, reads: []string{"oauth"},
			message: `pod flytesnacks-development/p: tokens[0].client.clientSecret: Secret "oauth" not found in namespace flytesnacks-development: the pod could not start (referenceChecks: deny)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMutator(t).WithReferenceChecks(tt.mode, tt.keys)
			r := post(t, m, tt.body)
			if r.Allowed != tt.allowed {
				t.Fatalf("allowed = %v, want %v: %+v", r.Allowed, tt.allowed, r.Result)
			}
			if !tt.allowed {
				if r.Result.Code != tt.code || r.Result.Message != tt.message {
					t.Errorf("got %d %q\nwant %d %q", r.Result.Code, r.Result.Message, tt.code, tt.message)
				}
			} else if len(r.Patch) == 0 && tt.reason != ReasonNoChange {
				t.Errorf("allowed without a patch")
			}
			if diff := cmp.Diff(tt.warnings, r.Warnings); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.reads, tt.keys.reads); diff != "" {
				t.Errorf("Secrets read (-want +got):\n%s", diff)
			}
			decision := DecisionMutated
			switch {
			case tt.code == 403:
				decision = DecisionDenied
			case tt.code == 500:
				decision = DecisionError
			case tt.reason == ReasonNoChange:
				decision = DecisionUnchanged
			}
			if got := testutil.ToFloat64(m.decisions.WithLabelValues(decision, tt.reason)); got != 1 {
				t.Errorf("secctx_admission_decisions_total{decision=%q,reason=%q} = %v, want 1", decision, tt.reason, got)
			}
		})
	}
}
