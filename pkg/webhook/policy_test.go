package webhook

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/secctx/secctx/pkg/apis/v1alpha1"
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
		got, _ := SelectPolicies(pols, map[string]string{"team": labels})
		var names []string
		for _, p := range got {
			names = append(names, p.Name)
		}
		if strings.Join(names, ",") != want {
			t.Errorf("team=%s: %v, want %s", labels, names, want)
		}
	}
}
