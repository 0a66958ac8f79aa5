package webhook

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/securityctx"
)

// staticPolicies selects the same policies for every namespace.
type staticPolicies []*v1alpha1.SecurityContextPolicy

func (s staticPolicies) Select(context.Context, string) ([]*v1alpha1.SecurityContextPolicy, error) {
	return s, nil
}

func TestPolicyModes(t *testing.T) {
	allowTeam := &v1alpha1.SecurityContextPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team"}, Spec: v1alpha1.SecurityContextPolicySpec{
		Allow: v1alpha1.Allow{SecretGroups: []string{"group-*"}, MountTypes: []string{"ENV_VAR", "FILE", "ANY"}, Backends: []string{"kubernetes"}}}}
	allowOther := &v1alpha1.SecurityContextPolicy{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: v1alpha1.SecurityContextPolicySpec{
		Allow: v1alpha1.Allow{SecretGroups: []string{"other-*"}, MountTypes: []string{"ENV_VAR", "FILE", "ANY"}, Backends: []string{"kubernetes"}}}}
	body := reviewBytes(t, taskPod(t, 3), admissionv1.Create) // secrets group-0, group-1, group-2
	tests := []struct {
		name     string
		mode     string
		policies staticPolicies
		allowed  bool
		message  string
	}{
		{"off", PolicyOff, nil, true, ""},
		{"enforce, allowed", PolicyEnforce, staticPolicies{allowTeam}, true, ""},
		{"enforce, several policies add up", PolicyEnforce, staticPolicies{allowOther, allowTeam}, true, ""},
		{"enforce, denied", PolicyEnforce, staticPolicies{allowOther}, false,
			`secctx.dev/security-context: not allowed by any SecurityContextPolicy for namespace flytesnacks-development: secrets[0].group "group-0"; secrets[1].group "group-0"; secrets[2].group "group-0" (policies checked: other)`},
		{"enforce, no policy", PolicyEnforce, staticPolicies{}, false, "(no SecurityContextPolicy selects namespace flytesnacks-development)"},
		{"audit", PolicyAudit, staticPolicies{allowOther}, true, `policy audit: secctx.dev/security-context: not allowed by any SecurityContextPolicy for namespace flytesnacks-development: secrets[0].group "group-0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMutator(t).WithPolicy(tt.mode, tt.policies)
			r := post(t, m, body)
			if r.Allowed != tt.allowed {
				t.Fatalf("allowed = %v, want %v: %+v", r.Allowed, tt.allowed, r.Result)
			}
			got := strings.Join(r.Warnings, "\n")
			if r.Result != nil {
				got += r.Result.Message
			}
			if tt.message != "" && !strings.Contains(got, tt.message) {
				t.Errorf("got %q\nwant it to contain %q", got, tt.message)
			}
			if tt.allowed && len(r.Patch) == 0 {
				t.Errorf("allowed without a patch")
			}
		})
	}
}

func TestSelectPolicies(t *testing.T) {
	pols := []v1alpha1.SecurityContextPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "all"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}, Spec: v1alpha1.SecurityContextPolicySpec{NamespaceSelector: metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: v1alpha1.SecurityContextPolicySpec{NamespaceSelector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "x", Operator: "Bogus"}}}}},
	}
	for labels, want := range map[string]string{"a": "all,team-a", "b": "all"} {
		got := SelectPolicies(pols, map[string]string{"team": labels})
		var names []string
		for _, p := range got {
			names = append(names, p.Name)
		}
		if strings.Join(names, ",") != want {
			t.Errorf("team=%s: %v, want %s", labels, names, want)
		}
	}
}

// loggedMutator is the handler as secctx serve runs it, logging JSON to
// logs at info, with an agent image and native sidecars for tokens.
func loggedMutator(t *testing.T, logs *syncBuffer) *PodMutator {
	t.Helper()
	log, err := NewLogger("info", logs)
	if err != nil {
		t.Fatal(err)
	}
	cfg := inject.DefaultConfig()
	cfg.Agent.Image, cfg.Agent.NativeSidecars = "secctx:1", inject.NativeSidecarsTrue
	injector, err := inject.New(cfg, allServiceAccounts{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewPodMutator(injector, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAuditLine drives each decision through the handler and reads its one
// audit line: the decision, the reason, what was asked for, the policies
// checked; and the metrics of decisions and policy denials.
func TestAuditLine(t *testing.T) {
	var logs syncBuffer
	m := loggedMutator(t, &logs)
	other := &v1alpha1.SecurityContextPolicy{ObjectMeta: metav1.ObjectMeta{Name: "other"}}
	pod := func(sc string) []byte {
		return reviewBytes(t, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"secctx.dev/inject":"true"},"annotations":{"secctx.dev/security-context":`+
			strconv.Quote(sc)+`}},"spec":{"containers":[{"name":"c","image":"i"}]}}`), admissionv1.Create)
	}
	good := `{"runAs":{"k8sServiceAccount":"etl"},"secrets":[{"group":"db","key":"password","mountRequirement":"ENV_VAR"}],"tokens":[{"name":"api","type":"CLIENT_CREDENTIALS","client":{"clientId":"c","clientSecret":{"group":"oauth","key":"s"}},"tokenEndpoint":"https://idp.example.com/token"}]}`
	for _, step := range []struct {
		mode string
		sc   string
		want map[string]any
	}{
		{PolicyOff, `{"secrets":[{"group":"db","key":"password","mountRequirement":"ENV_VAR"}]}`,
			map[string]any{"decision": "mutated", "reason": "injected", "secrets": []any{"kubernetes:db/password:ENV_VAR"}}},
		{PolicyOff, `{"secrets":[{"group":"BAD"}]}`, map[string]any{"decision": "denied", "reason": "invalid"}},
		{PolicyEnforce, good, map[string]any{"decision": "denied", "reason": "policy", "policies": []any{"other"}, "serviceAccount": "etl",
			"tokens": []any{"api https://idp.example.com/token"}}},
		{PolicyAudit, good, map[string]any{"decision": "mutated", "reason": "policy-audit", "policies": []any{"other"}}},
	} {
		logs.Reset()
		m.WithPolicy(step.mode, staticPolicies{other})
		post(t, m, pod(step.sc))
		var lines []map[string]any
		for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(l), &e) == nil && e["logger"] == "audit" {
				lines = append(lines, e)
			}
		}
		if len(lines) != 1 {
			t.Fatalf("%s %s: %d audit lines, want 1:\n%s", step.mode, step.sc, len(lines), logs.String())
		}
		for k, v := range step.want {
			if diff := cmp.Diff(v, lines[0][k]); diff != "" {
				t.Errorf("%s %s: audit %s (-want +got):\n%s", step.mode, step.sc, k, diff)
			}
		}
		if lines[0]["msg"] != "admission" || lines[0]["namespace"] != "flytesnacks-development" || lines[0]["uid"] == "" {
			t.Errorf("audit line: %v", lines[0])
		}
	}
	for _, want := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.decisions.WithLabelValues(DecisionDenied, ReasonPolicy), 1},
		{m.decisions.WithLabelValues(DecisionMutated, ReasonPolicyAudit), 1},
		{m.policyDenials.WithLabelValues(PolicyEnforce, "other"), 1},
		{m.policyDenials.WithLabelValues(PolicyAudit, "other"), 1},
	} {
		if got := testutil.ToFloat64(want.c); got != want.want {
			t.Errorf("%v: %v, want %v", want.c, got, want.want)
		}
	}
}

// TestPolicyMessageNamesEveryField (issue 22): a denial lists every field no
// policy allows, however many (it was cut at 200 bytes), and names a secret
// from Flyte's annotations by its annotation, not by secctx's.
func TestPolicyMessageNamesEveryField(t *testing.T) {
	none := staticPolicies{&v1alpha1.SecurityContextPolicy{ObjectMeta: metav1.ObjectMeta{Name: "none"}}}
	m := newTestMutator(t).WithPolicy(PolicyEnforce, none)
	r := post(t, m, reviewBytes(t, taskPod(t, 20), admissionv1.Create))
	if r.Allowed {
		t.Fatal("allowed")
	}
	for i := range 20 {
		if want := `secrets[` + strconv.Itoa(i) + `].group "group-` + strconv.Itoa(i/3) + `"`; !strings.Contains(r.Result.Message, want) {
			t.Errorf("the denial lacks %s: %s", want, r.Result.Message)
		}
	}

	flyte := newTestMutator(t, func(c *inject.Config) { c.Flyte.Enabled = true }).WithPolicy(PolicyEnforce, none)
	enc, err := securityctx.EncodeFlyteSecrets([]securityctx.Secret{{Group: "payroll", Key: "k", MountRequirement: securityctx.MountFile}})
	if err != nil {
		t.Fatal(err)
	}
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"inject-flyte-secrets":"true"},"annotations":{"flyte.secrets/s0":` +
		strconv.Quote(enc["flyte.secrets/s0"]) + `}},"spec":{"containers":[{"name":"c","image":"i"}]}}`
	r = post(t, flyte, reviewBytes(t, []byte(pod), admissionv1.Create))
	const want = `pod flytesnacks-development/p: flyte.secrets/s<N>: not allowed by any SecurityContextPolicy for namespace flytesnacks-development: flyte.secrets/s0.group "payroll"; flyte.secrets/s0.backend "kubernetes"; flyte.secrets/s0.mountRequirement "FILE" (policies checked: none)`
	if r.Allowed || r.Result.Message != want {
		t.Errorf("got %q\nwant %q", r.Result.Message, want)
	}
}

// TestPolicyRefreshBounds: of the policies that select a namespace, the
// largest minIntervalSeconds holds; a policy without refresh bounds
// nothing.
func TestPolicyRefreshBounds(t *testing.T) {
	bound := func(n int32) *v1alpha1.SecurityContextPolicy {
		p := &v1alpha1.SecurityContextPolicy{}
		p.Spec.Refresh = &v1alpha1.RefreshBounds{MinIntervalSeconds: n}
		return p
	}
	for _, tc := range []struct {
		pols staticPolicies
		want int32
	}{
		{nil, 0},
		{staticPolicies{{}}, 0},
		{staticPolicies{bound(600)}, 600},
		{staticPolicies{bound(600), {}, bound(3600), bound(60)}, 3600},
	} {
		got, err := PolicyRefreshBounds{Source: tc.pols}.MinRefreshSeconds(context.Background(), "team-a")
		if err != nil || got != tc.want {
			t.Errorf("%d policies: %d, %v; want %d", len(tc.pols), got, err, tc.want)
		}
	}
}
