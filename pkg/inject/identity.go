package inject

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secctx/secctx/pkg/securityctx"
)

// ServiceAccounts tells whether a service account exists. The webhook answers
// from a cache of the cluster; offline injection has none.
type ServiceAccounts interface {
	ServiceAccountExists(ctx context.Context, namespace, name string) (bool, error)
}

// defaultServiceAccount is what the ServiceAccount admission plugin sets on
// every pod before webhooks run, so it cannot tell us what the author meant.
const defaultServiceAccount = "default"

// validateIdentity checks runAs against the pod, without lookups, and refuses
// what this version does not implement rather than ignoring it.
func validateIdentity(id *securityctx.Identity, pod *corev1.Pod) securityctx.ErrorList {
	if id == nil {
		return nil
	}
	var errs securityctx.ErrorList
	if id.IAMRole != "" {
		errs = append(errs, securityctx.Invalid("runAs.iamRole", id.IAMRole, "not supported yet"))
	}
	if id.OAuth2Client != nil {
		errs = append(errs, &securityctx.FieldError{Field: "runAs.oauth2Client", Detail: "not supported yet"})
	}
	if sa := id.K8sServiceAccount; sa != "" {
		for _, msg := range validation.IsDNS1123Subdomain(sa) {
			errs = append(errs, securityctx.Invalid("runAs.k8sServiceAccount", sa, "must be a Kubernetes service account name: "+msg))
		}
		if cur := podServiceAccount(pod); cur != "" && cur != defaultServiceAccount && cur != sa {
			errs = append(errs, securityctx.Invalid("runAs.k8sServiceAccount", sa, fmt.Sprintf(
				"the pod already sets spec.serviceAccountName %q; remove it or make the two match", cur)))
		}
	}
	if ei := id.ExecutionIdentity; ei != "" {
		if have, ok := pod.Labels[securityctx.LabelExecutionIdentity]; ok && have != executionIdentityLabel(ei) {
			errs = append(errs, securityctx.Invalid("runAs.executionIdentity", ei, fmt.Sprintf(
				"the pod already has label %s=%q; remove it or make the two match", securityctx.LabelExecutionIdentity, have)))
		}
		if have, ok := pod.Annotations[securityctx.AnnotationExecutionIdentity]; ok && have != ei {
			errs = append(errs, securityctx.Invalid("runAs.executionIdentity", ei, fmt.Sprintf(
				"the pod already has annotation %s=%q; remove it or make the two match", securityctx.AnnotationExecutionIdentity, have)))
		}
	}
	return errs
}

func podServiceAccount(pod *corev1.Pod) string {
	if pod.Spec.ServiceAccountName != "" {
		return pod.Spec.ServiceAccountName
	}
	return pod.Spec.DeprecatedServiceAccount
}

// checkServiceAccount looks the account up. A missing account is a refusal
// (the pod would otherwise be rejected later, or run as the wrong identity);
// a failed lookup is an error.
func checkServiceAccount(ctx context.Context, sas ServiceAccounts, namespace, name string) (string, error) {
	ok, err := sas.ServiceAccountExists(ctx, namespace, name)
	if err != nil {
		return "", fmt.Errorf("get service account %s/%s: %w", namespace, name, err)
	}
	if !ok {
		return fmt.Sprintf("runAs.k8sServiceAccount %q: service account %s/%s not found; create it before the pod", name, namespace, name), nil
	}
	return "", nil
}

// setIdentity writes runAs into the pod. Validation has already refused any
// clash, so this only sets.
func setIdentity(pod *corev1.Pod, id *securityctx.Identity) {
	if id == nil {
		return
	}
	if sa := id.K8sServiceAccount; sa != "" {
		pod.Spec.ServiceAccountName = sa
		// The deprecated alias is kept in step where the pod carries it, so the
		// pod never shows two different accounts.
		if pod.Spec.DeprecatedServiceAccount != "" {
			pod.Spec.DeprecatedServiceAccount = sa
		}
	}
	if ei := id.ExecutionIdentity; ei != "" {
		pod.Labels = maps.Clone(pod.Labels) // shared with Inject's input
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		pod.Labels[securityctx.LabelExecutionIdentity] = executionIdentityLabel(ei)
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[securityctx.AnnotationExecutionIdentity] = ei
	}
}

// executionIdentityLabel makes a valid label value from any string: characters
// a label value cannot hold become '_', the ends are trimmed to alphanumerics,
// and a value that had to be cut or emptied gets a hash of the original so
// two identities do not meet.
func executionIdentityLabel(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	v := strings.TrimFunc(string(b), func(r rune) bool { return !isAlnum(r) })
	if v != "" && len(v) <= validation.LabelValueMaxLength {
		return v
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	suffix := fmt.Sprintf("%08x", h.Sum32())
	if max := validation.LabelValueMaxLength - len(suffix) - 1; len(v) > max {
		v = strings.TrimFunc(v[:max], func(r rune) bool { return !isAlnum(r) })
	}
	if v == "" {
		return suffix
	}
	return v + "_" + suffix
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}
