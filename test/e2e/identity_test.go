package e2e

import (
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestIAMRoleIRSA: a task with runAs.iamRole and runAs.k8sServiceAccount,
// running as a non-root user, reads the AWS SDK's web-identity settings and
// the projected token; the API server's TokenReview accepts the token for
// the STS audience, as the pod's final service account.
func TestIAMRoleIRSA(t *testing.T) {
	needCluster(t)
	ctx := testContext(t)
	ns := namespace(t, ctx, nil)
	createServiceAccounts(t, ctx, ns, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "data-processing-sa"}})
	const role = "arn:aws:iam::123456789012:role/my-workflow-role"
	_, logs := runPod(t, ctx, taskPod(ns, "example-5", `{"runAs": {"iamRole": "`+role+`", "k8sServiceAccount": "data-processing-sa"}}`, true,
		taskContainer("settings", "-full", "env", "AWS_ROLE_ARN", "AWS_STS_REGIONAL_ENDPOINTS"),
		taskContainer("token", "-full", "file-from-env", "AWS_WEB_IDENTITY_TOKEN_FILE")))
	if want := "AWS_ROLE_ARN = " + role + "\nAWS_STS_REGIONAL_ENDPOINTS = regional\n"; logs["settings"] != want {
		t.Errorf("settings: got %q, want %q", logs["settings"], want)
	}
	const path = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"
	token, ok := strings.CutPrefix(strings.TrimSpace(logs["token"]), "AWS_WEB_IDENTITY_TOKEN_FILE = "+path+" = ")
	if !ok || token == "" {
		t.Fatalf("the task (user 65532) did not read the token at %s: %q", path, logs["token"])
	}
	review, err := kube.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{"sts.amazonaws.com"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st := review.Status
	if !st.Authenticated || st.User.Username != "system:serviceaccount:"+ns+":data-processing-sa" ||
		len(st.Audiences) != 1 || st.Audiences[0] != "sts.amazonaws.com" {
		t.Errorf("TokenReview: authenticated %v as %q for %v (%s); want data-processing-sa for sts.amazonaws.com",
			st.Authenticated, st.User.Username, st.Audiences, st.Error)
	}
	// Not a token for the API server itself.
	review, err = kube.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if review.Status.Authenticated {
		t.Errorf("the STS token is accepted by the API server for its own audience")
	}
}
