package webhook

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTrimServiceAccountKeepsIdentity: the cache keeps the annotations
// that name an account's cloud identity (issue 23: without them a cached
// account had no EKS role and no Azure client id), and nothing else.
func TestTrimServiceAccountKeepsIdentity(t *testing.T) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "n", Annotations: map[string]string{
		"eks.amazonaws.com/role-arn":                       "arn:aws:iam::111122223333:role/r",
		"eks.amazonaws.com/audience":                       "sts.amazonaws.com",
		"azure.workload.identity/client-id":                "00000000-0000-0000-0000-00000000a991",
		"kubectl.kubernetes.io/last-applied-configuration": "{...}",
	}}, Secrets: []corev1.ObjectReference{{Name: "old-token"}}}
	got, err := trimServiceAccount(sa)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"eks.amazonaws.com/role-arn":        "arn:aws:iam::111122223333:role/r",
		"eks.amazonaws.com/audience":        "sts.amazonaws.com",
		"azure.workload.identity/client-id": "00000000-0000-0000-0000-00000000a991",
	}
	trimmed := got.(*corev1.ServiceAccount)
	if diff := cmp.Diff(want, trimmed.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	if len(trimmed.Secrets) != 0 {
		t.Errorf("kept the account's secrets list: %v", trimmed.Secrets)
	}
}
