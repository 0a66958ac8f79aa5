package inject

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/secctx/secctx/pkg/securityctx"
)

// ServiceAccounts looks service accounts up. The webhook answers from a
// cache of the cluster; offline injection has none.
type ServiceAccounts interface {
	// ServiceAccount returns the account, or nil and no error when there is
	// none.
	ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error)
}

// AccountAnnotations are the service-account annotations injection reads:
// the EKS Pod Identity Webhook's role and token settings, and Azure
// Workload Identity's client id. A cache of accounts must keep them.
var AccountAnnotations = []string{eksRoleAnnotation, eksAudienceAnnotation, eksExpirationAnnotation, AzureClientIDAnnotation}

// defaultServiceAccount is what the ServiceAccount admission plugin sets on
// every pod before webhooks run, so it cannot tell us what the author meant.
const defaultServiceAccount = "default"

// validateIdentity checks runAs against the pod, without lookups. What does
// not depend on the pod (the IAM role's ARN) is checked once per
// SecurityContext, in prepare.
func validateIdentity(id *securityctx.Identity, pod *corev1.Pod) securityctx.ErrorList {
	if id == nil {
		return nil
	}
	var errs securityctx.ErrorList
	if sa := id.K8sServiceAccount; sa != "" {
		for _, msg := range validation.IsDNS1123Subdomain(sa) {
			errs = append(errs, securityctx.Invalid("runAs.k8sServiceAccount", sa, "must be a Kubernetes service account name: "+msg))
		}
		if cur := podServiceAccount(pod); cur != "" && cur != defaultServiceAccount && cur != sa {
			errs = append(errs, securityctx.Invalid("runAs.k8sServiceAccount", sa, fmt.Sprintf(
				"the pod already sets spec.serviceAccountName %s; remove it or make the two match", securityctx.Quote(cur))))
		}
	}
	if ei := id.ExecutionIdentity; ei != "" {
		if have, ok := pod.Labels[securityctx.LabelExecutionIdentity]; ok && have != executionIdentityLabel(ei) {
			errs = append(errs, securityctx.Invalid("runAs.executionIdentity", ei, fmt.Sprintf(
				"the pod already has label %s=%s; remove it or make the two match", securityctx.LabelExecutionIdentity, securityctx.Quote(have))))
		}
		if have, ok := pod.Annotations[securityctx.AnnotationExecutionIdentity]; ok && have != ei {
			errs = append(errs, securityctx.Invalid("runAs.executionIdentity", ei, fmt.Sprintf(
				"the pod already has annotation %s=%s; remove it or make the two match", securityctx.AnnotationExecutionIdentity, securityctx.Quote(have))))
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

// The ServiceAccount admission plugin's token volume: its mount path, the
// prefix of its name, and what it projects.
const (
	tokenMountPath        = "/var/run/secrets/kubernetes.io/serviceaccount"
	tokenVolumePrefix     = "kube-api-access-"
	tokenExpirationSecond = 3607 // the plugin's WarnOnlyBoundTokenExpirationSeconds
)

// switchAccount moves the pod to service account name and makes it what it
// would be had it been created with that account. The ServiceAccount
// admission plugin runs before webhooks, so it has already worked on the
// account the pod had (most often default): it mounted that account's API
// token or not, and added its image pull secrets. So:
//   - the new account's automountServiceAccountToken decides, unless the pod
//     sets its own (the pod's wins, as in Kubernetes): the plugin's token
//     volume and its mounts are removed, or the volume is added to every
//     container as the plugin adds it;
//   - the new account's imagePullSecrets are appended, unless the pod set
//     its own list (one that differs from the old account's).
//
// A missing account is a refusal, returned as its message (the pod would
// otherwise be rejected later, or run as the wrong identity); a failed
// lookup is an error.
func (in *Injector) switchAccount(ctx context.Context, pod *corev1.Pod, namespace, name string, partial bool) (string, error) {
	acct, err := in.sas.ServiceAccount(ctx, namespace, name)
	if err != nil {
		return "", fmt.Errorf("get service account %s/%s: %w", namespace, name, err)
	}
	if acct == nil {
		return fmt.Sprintf("runAs.k8sServiceAccount %s: service account %s/%s not found; create it before the pod",
			securityctx.Quote(name), namespace, name), nil
	}
	prevName := podServiceAccount(pod)
	if prevName == "" {
		prevName = defaultServiceAccount
	}
	prev, err := in.sas.ServiceAccount(ctx, namespace, prevName)
	if err != nil {
		return "", fmt.Errorf("get service account %s/%s: %w", namespace, prevName, err)
	}

	was, will := automount(pod, prev), automount(pod, acct)
	switch {
	case was && !will:
		if err := removeTokenVolume(pod, partial); err != nil {
			return "", err
		}
	case !was && will:
		addTokenVolume(pod, namespace+"/"+name)
	}
	if err := switchEKSRole(pod, prev, acct, partial); err != nil {
		return "", err
	}
	var prevPull []corev1.LocalObjectReference
	if prev != nil {
		prevPull = prev.ImagePullSecrets
	}
	if slices.Equal(pod.Spec.ImagePullSecrets, prevPull) {
		pull := slices.Clip(pod.Spec.ImagePullSecrets)
		for _, s := range acct.ImagePullSecrets {
			if !slices.Contains(pull, s) {
				pull = append(pull, s)
			}
		}
		pod.Spec.ImagePullSecrets = pull
	}
	return "", nil
}

// automount is the ServiceAccount plugin's rule: the pod's setting, else the
// account's, else true.
func automount(pod *corev1.Pod, acct *corev1.ServiceAccount) bool {
	if pod.Spec.AutomountServiceAccountToken != nil {
		return *pod.Spec.AutomountServiceAccountToken
	}
	if acct != nil && acct.AutomountServiceAccountToken != nil {
		return *acct.AutomountServiceAccountToken
	}
	return true
}

// hasTokenMount reports whether the container mounts something at the
// token's path, which the plugin leaves alone.
func hasTokenMount(c *corev1.Container) bool {
	return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return cleanMountPath(m.MountPath) == tokenMountPath })
}

// removeTokenVolume removes the plugin's token volume and its mounts at the
// token's path: a volume named kube-api-access-*, of exactly the shape the
// plugin gives it (pluginTokenVolume), mounted at the token's path. A volume
// of another shape or name is the pod author's and stays, and so do the
// author's own mounts of the plugin's volume elsewhere (the volume then
// stays too, since they need it). From a pod view, which keeps only a
// projected volume's kind, it returns ErrFullPodNeeded.
func removeTokenVolume(pod *corev1.Pod, partial bool) error {
	isTokenMount := func(name string) func(m corev1.VolumeMount) bool {
		return func(m corev1.VolumeMount) bool {
			return m.Name == name && cleanMountPath(m.MountPath) == tokenMountPath
		}
	}
	mounted := func(match func(corev1.VolumeMount) bool) bool {
		for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
			for i := range list {
				if slices.ContainsFunc(list[i].VolumeMounts, match) {
					return true
				}
			}
		}
		return false
	}
	name := ""
	want := pluginTokenVolume()
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		if !strings.HasPrefix(v.Name, tokenVolumePrefix) || v.Projected == nil || !mounted(isTokenMount(v.Name)) {
			continue
		}
		if partial {
			return ErrFullPodNeeded
		}
		if equalProjected(v.VolumeSource, want) {
			name = v.Name
			break
		}
	}
	if name == "" {
		return nil
	}
	isToken := isTokenMount(name)
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if slices.ContainsFunc(list[i].VolumeMounts, isToken) {
				list[i].VolumeMounts = slices.DeleteFunc(slices.Clone(list[i].VolumeMounts), isToken)
			}
		}
	}
	if !mounted(func(m corev1.VolumeMount) bool { return m.Name == name }) {
		pod.Spec.Volumes = slices.DeleteFunc(slices.Clone(pod.Spec.Volumes), func(v corev1.Volume) bool { return v.Name == name })
	}
	return nil
}

// pluginTokenVolume is the source of the API-token volume the
// ServiceAccount admission plugin adds: a token, the cluster's CA and the
// namespace.
func pluginTokenVolume() corev1.VolumeSource {
	return corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		DefaultMode: ptr(corev1.ProjectedVolumeSourceDefaultMode),
		Sources: []corev1.VolumeProjection{
			{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(tokenExpirationSecond))}},
			{ConfigMap: &corev1.ConfigMapProjection{
				LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
				Items:                []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}},
			}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{
				Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"},
			}}}},
		},
	}}
}

// addTokenVolume adds the token volume as the plugin would, to every
// container and init container that mounts nothing at the token's path. Its
// name ends in five characters from the plugin's alphabet, derived from
// seed rather than random, so that the same pod gets the same name.
func addTokenVolume(pod *corev1.Pod, seed string) {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	h := fnv.New64a()
	name := ""
	for try := 0; name == "" || slices.ContainsFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == name }); try++ {
		h.Write([]byte(seed))
		n := h.Sum64()
		b := []byte(tokenVolumePrefix)
		for range 5 {
			b = append(b, alphabet[n%uint64(len(alphabet))])
			n /= uint64(len(alphabet))
		}
		name = string(b)
	}
	added := false
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if hasTokenMount(&list[i]) {
				continue
			}
			list[i].VolumeMounts = append(slices.Clip(list[i].VolumeMounts), corev1.VolumeMount{Name: name, ReadOnly: true, MountPath: tokenMountPath})
			added = true
		}
	}
	if !added {
		return
	}
	pod.Spec.Volumes = append(slices.Clip(pod.Spec.Volumes), corev1.Volume{Name: name, VolumeSource: pluginTokenVolume()})
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
