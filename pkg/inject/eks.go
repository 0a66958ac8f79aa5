package inject

import (
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// What the EKS Pod Identity Webhook (aws/amazon-eks-pod-identity-webhook,
// pkg/handler) puts on a pod whose service account carries a role: on EKS it
// runs before secctx, for the account the pod had then.
const (
	eksRoleAnnotation       = "eks.amazonaws.com/role-arn"
	eksAudienceAnnotation   = "eks.amazonaws.com/audience"
	eksExpirationAnnotation = "eks.amazonaws.com/token-expiration"
	eksVolumeName           = "aws-iam-token"
	eksTokenDir             = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
	eksDefaultAudience      = "sts.amazonaws.com"
	eksDefaultExpiration    = 86400
	// eksMinExpiration is the least the webhook and the API server accept;
	// the webhook raises a smaller value to it.
	eksMinExpiration = 600
)

// switchEKSRole makes the EKS webhook's work on the pod what it would have
// been for the account the pod moves to (acct), as switchAccount does for
// the API token: the webhook injected prev's role (AWS_ROLE_ARN, the token
// file and the aws-iam-token volume), and the kubelet will issue that
// token for acct, so STS would refuse it or, with a lax trust policy, the
// task would run as prev's role. So when prev's role is on the pod:
//   - acct has a role: AWS_ROLE_ARN becomes it, and the volume is made
//     again when acct's audience or the token's lifetime differ;
//   - acct has none: AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE and the
//     volume's mounts go, and the volume with them.
//
// Only what the webhook wrote is touched: an AWS_ROLE_ARN of another value,
// a token file elsewhere, a volume without a service-account token are the
// author's. From a pod view it returns ErrFullPodNeeded.
func switchEKSRole(pod *corev1.Pod, prev, acct *corev1.ServiceAccount, partial bool) error {
	prevRole := annotation(prev, eksRoleAnnotation)
	vi := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == eksVolumeName && v.Projected != nil })
	if prevRole == "" || vi < 0 {
		return nil
	}
	if partial {
		return ErrFullPodNeeded
	}
	newRole := annotation(acct, eksRoleAnnotation)
	want := eksVolume(pod, acct)
	sameVolume := equalProjected(pod.Spec.Volumes[vi].VolumeSource, want.VolumeSource)
	if !slices.ContainsFunc(pod.Spec.Volumes[vi].Projected.Sources, func(p corev1.VolumeProjection) bool { return p.ServiceAccountToken != nil }) ||
		newRole == prevRole && sameVolume {
		return nil
	}
	tokenFile := func(v string) bool { return v == eksTokenDir+"/token" || v == windowsPath(eksTokenDir+"/token") }
	changed := false
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			c := &list[i]
			isRole := func(e corev1.EnvVar) bool {
				return e.Name == EnvAWSRoleARN && e.ValueFrom == nil && e.Value == prevRole
			}
			if !slices.ContainsFunc(c.Env, isRole) {
				continue
			}
			changed = true
			c.Env = slices.DeleteFunc(slices.Clone(c.Env), isRole)
			if newRole != "" {
				c.Env = append(c.Env, corev1.EnvVar{Name: EnvAWSRoleARN, Value: newRole})
				continue
			}
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool {
				return e.Name == EnvAWSWebIdentityTokenFile && e.ValueFrom == nil && tokenFile(e.Value)
			})
			c.VolumeMounts = slices.DeleteFunc(slices.Clone(c.VolumeMounts), func(m corev1.VolumeMount) bool { return m.Name == eksVolumeName })
		}
	}
	if !changed || newRole != "" && sameVolume {
		return nil
	}
	// A container the webhook did not give the role (the author's own
	// mount of the volume) still needs it: the volume stays as it is.
	for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range list {
			if slices.ContainsFunc(list[i].VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == eksVolumeName }) &&
				(newRole == "" || !slices.ContainsFunc(list[i].Env, func(e corev1.EnvVar) bool { return e.Name == EnvAWSRoleARN && e.Value == newRole })) {
				return nil
			}
		}
	}
	pod.Spec.Volumes = slices.Delete(slices.Clone(pod.Spec.Volumes), vi, vi+1)
	if newRole != "" {
		pod.Spec.Volumes = append(pod.Spec.Volumes, want)
	}
	return nil
}

// eksVolume is the volume the EKS webhook gives a pod of account acct:
// acct's audience, and the token's lifetime from the pod's annotation, else
// acct's, else a day, at least 10 minutes.
func eksVolume(pod *corev1.Pod, acct *corev1.ServiceAccount) corev1.Volume {
	aud := annotation(acct, eksAudienceAnnotation)
	if aud == "" {
		aud = eksDefaultAudience
	}
	exp := int64(eksDefaultExpiration)
	for _, v := range []string{pod.Annotations[eksExpirationAnnotation], annotation(acct, eksExpirationAnnotation)} {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			exp = min(max(n, eksMinExpiration), 1<<32) // the API server's bounds
			break
		}
	}
	return corev1.Volume{Name: eksVolumeName, VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
		Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
			Audience: aud, ExpirationSeconds: ptr(exp), Path: "token",
		}}},
	}}}
}

func annotation(acct *corev1.ServiceAccount, key string) string {
	if acct == nil {
		return ""
	}
	return acct.Annotations[key]
}

// windowsPath is a path as a Windows container's processes name it, as the
// EKS webhook writes AWS_WEB_IDENTITY_TOKEN_FILE for a Windows pod: C:,
// then the path with backslashes. The mount path stays as it is.
func windowsPath(p string) string { return `C:` + strings.ReplaceAll(p, "/", `\`) }

// isWindows: the pod is scheduled on Windows nodes, as the EKS webhook
// tells (its node selector).
func isWindows(pod *corev1.Pod) bool {
	ns := pod.Spec.NodeSelector
	return ns["kubernetes.io/os"] == "windows" || ns["beta.kubernetes.io/os"] == "windows"
}
