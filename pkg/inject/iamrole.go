package inject

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/pkg/securityctx"
)

// The AWS SDKs' web-identity settings, as the EKS Pod Identity Webhook
// sets them.
const (
	EnvAWSRoleARN              = "AWS_ROLE_ARN"
	EnvAWSWebIdentityTokenFile = "AWS_WEB_IDENTITY_TOKEN_FILE"
	EnvAWSSTSRegionalEndpoints = "AWS_STS_REGIONAL_ENDPOINTS"
	EnvAWSRegion               = "AWS_REGION"
	EnvAWSDefaultRegion        = "AWS_DEFAULT_REGION"
	iamVolumeName              = "secctx-aws-iam-token"
	iamField                   = "runAs.iamRole"
	// maxRoleARN is IAM's bound on a role ARN.
	maxRoleARN = 2048
)

// roleARN is an IAM role's ARN in any partition (aws, aws-cn, aws-us-gov,
// aws-iso-b, ...): a 12-digit account, then role/, an optional path and a
// name of at most maxRoleName of IAM's characters (checked apart, as
// secretARN's).
var roleARN = regexp.MustCompile(`^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]+$`)

const maxRoleName = 64

// validateIAMRole checks runAs.iamRole; prepare runs it, before the role is
// planned.
func validateIAMRole(arn string) *securityctx.FieldError {
	if len(arn) > maxRoleARN || !roleARN.MatchString(arn) || len(arn)-strings.LastIndexByte(arn, '/')-1 > maxRoleName {
		return securityctx.Invalid("runAs.iamRole", arn, "must be an IAM role ARN, arn:<partition>:iam::<12-digit account>:role/[<path>/]<name> (at most "+
			strconv.Itoa(maxRoleARN)+" characters, a name of at most 64)")
	}
	return nil
}

// planIAMRole adds runAs.iamRole to the plan. In irsa mode every target
// gets a projected service-account token for the STS audience, the role and
// the token's path; the AWS SDKs' default chain then assumes the role
// itself. The kubelet requests the token for the pod's final service
// account (after runAs.k8sServiceAccount), renews it at 80% of its
// lifetime, and makes the file readable by the containers' user (owner
// when they share one, group with fsGroup, else 0644). In annotation mode
// the role goes into an annotation for kube2iam or kiam.
func planIAMRole(cfg Config, id *securityctx.Identity, p *secretPlan) securityctx.ErrorList {
	iam := cfg.IAM
	if iam.Mode == IAMModeAnnotation {
		p.annotations = append(p.annotations, [2]string{iam.Annotation, id.IAMRole})
		return nil
	}
	const field = iamField
	// The role and the token are the identity: a container that sets
	// either otherwise is refused. The STS endpoint and the region are
	// preferences: as the EKS webhook does, a container's own value is
	// kept (both regions, when it sets either).
	regions := []string{EnvAWSRegion, EnvAWSDefaultRegion}
	env := []envItem{
		{env: corev1.EnvVar{Name: EnvAWSRoleARN, Value: id.IAMRole}},
		{env: corev1.EnvVar{Name: EnvAWSWebIdentityTokenFile, Value: path.Join(iam.TokenDir, "token")}},
		{env: corev1.EnvVar{Name: EnvAWSSTSRegionalEndpoints, Value: "regional"}, yieldTo: []string{EnvAWSSTSRegionalEndpoints}},
	}
	if iam.Region != "" {
		env = append(env, envItem{env: corev1.EnvVar{Name: EnvAWSRegion, Value: iam.Region}, yieldTo: regions},
			envItem{env: corev1.EnvVar{Name: EnvAWSDefaultRegion, Value: iam.Region}, yieldTo: regions})
	}
	var errs securityctx.ErrorList
	for _, e := range env {
		e.by = field
		if err := p.addEnv(e, field); err != nil {
			errs = append(errs, err)
		}
	}
	p.volumes = append(p.volumes, &secretVolume{dir: iam.TokenDir, by: field, desc: "the IAM role's web-identity token", volume: corev1.Volume{
		Name: iamVolumeName,
		VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			DefaultMode: ptr(corev1.ProjectedVolumeSourceDefaultMode),
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience: iam.Audience, ExpirationSeconds: ptr(iam.ExpirationSeconds), Path: "token",
			}}},
		}},
	}})
	return errs
}

// iamForPod fits the IAM role's part of a plan (cloned for this pod) to the
// pod, as the EKS webhook does: a Windows pod's processes name the token
// file C:\var\run\..., and the pod's eks.amazonaws.com/token-expiration
// annotation sets the token's lifetime (at least 600 seconds, as the
// webhook raises a smaller value to; a value that is not a number is a
// problem, where the webhook would ignore it).
func iamForPod(p *secretPlan, pod *corev1.Pod) string {
	vi := slices.IndexFunc(p.volumes, func(v *secretVolume) bool { return v.volume.Name == iamVolumeName })
	if vi < 0 {
		return ""
	}
	if isWindows(pod) {
		for i := range p.env {
			if e := &p.env[i].env; p.env[i].by == iamField && e.Name == EnvAWSWebIdentityTokenFile {
				e.Value = windowsPath(e.Value)
			}
		}
	}
	v, ok := pod.Annotations[eksExpirationAnnotation]
	if !ok {
		return ""
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n > 1<<32 {
		return fmt.Sprintf("annotation %s %s: must be the IAM token's lifetime in seconds, a whole number from 600 to 4294967296",
			eksExpirationAnnotation, securityctx.Quote(v))
	}
	p.volumes[vi].volume.Projected.Sources[0].ServiceAccountToken.ExpirationSeconds = ptr(max(n, eksMinExpiration))
	return ""
}
