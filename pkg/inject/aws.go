package inject

import (
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/pkg/agentapi"
	"github.com/secctx/secctx/pkg/securityctx"
)

// BackendAWS is AWS Secrets Manager, read by the fetch init container.
const BackendAWS = "aws"

func init() { stores[BackendAWS] = awsStore{} }

// awsStore reads AWS Secrets Manager in the pod, with the AWS SDK's default
// credential chain: the pod's runAs.iamRole (IRSA) when it has one.
//
// The mapping is Flyte's (its AWS secret manager): the secret's ARN is
// group:key, the group being the ARN up to "secret" and the key the
// secret's name, so that task code written for Flyte's AWS mode works
// unchanged. groupVersion, which Flyte leaves out, selects a version by
// its staging label (AWSCURRENT, AWSPREVIOUS or one of yours).
type awsStore struct{}

func (awsStore) fetched(Config) bool { return true }

// owns: a Secrets Manager ARN, as Flyte's group:key makes it.
func (awsStore) owns(_ Config, group string) bool {
	return strings.HasPrefix(group, "arn:") && strings.Contains(group, ":secretsmanager:")
}

func (awsStore) validate(c Config) error {
	for _, e := range []struct{ field, url string }{
		{"inject.aws.secretsManagerEndpoint", c.AWS.SecretsManagerEndpoint},
		{"inject.aws.stsEndpoint", c.AWS.STSEndpoint},
	} {
		if e.url != "" {
			if err := checkURL(e.field, e.url, c.Tokens.HTTPHosts); err != nil {
				return err
			}
		}
	}
	return checkAgentImage(c, "backend aws")
}

// The AWS SDKs' endpoint settings.
const (
	EnvAWSEndpointSecretsManager = "AWS_ENDPOINT_URL_SECRETS_MANAGER"
	EnvAWSEndpointSTS            = "AWS_ENDPOINT_URL_STS"
)

func (awsStore) plan(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList) {
	fp := &fetchPlan{store: BackendAWS, desc: "AWS Secrets Manager", iam: true}
	if e := cfg.AWS.SecretsManagerEndpoint; e != "" {
		fp.env = append(fp.env, corev1.EnvVar{Name: EnvAWSEndpointSecretsManager, Value: e})
	}
	if e := cfg.AWS.STSEndpoint; e != "" {
		fp.env = append(fp.env, corev1.EnvVar{Name: EnvAWSEndpointSTS, Value: e})
	}
	return planFetched(cfg, fp, secrets, fields, locateAWS)
}

// secretARN is a Secrets Manager secret's ARN in any partition; the name
// is Secrets Manager's characters (letters, digits, / _ + = . @ -), at most
// maxSecretName of them. Lengths are checked apart: a {1,512} in the
// expression compiles to 512 copies of the class, 0.6 MB of heap and 6 ms
// at every start of secctx.
var secretARN = regexp.MustCompile(`^arn:aws(-[a-z]+)*:secretsmanager:[a-z]{2}(-[a-z]+)+-[0-9]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+$`)

// versionStage is a staging label: 1 to maxVersionStage of these characters.
var versionStage = regexp.MustCompile(`^[A-Za-z0-9_+=.@-]+$`)

const (
	maxSecretName   = 512
	maxVersionStage = 256
)

func locateAWS(s *securityctx.Secret, field string) (agentapi.Secret, securityctx.ErrorList) {
	id := strings.TrimRight(s.Group, ":") + ":" + strings.TrimLeft(s.Key, ":")
	var errs securityctx.ErrorList
	if len(id) > 2048 || !secretARN.MatchString(id) || len(id)-strings.LastIndex(id, ":secret:")-len(":secret:") > maxSecretName {
		errs = append(errs, &securityctx.FieldError{Field: field, Detail: fmt.Sprintf(
			"with backend aws, group:key must be a Secrets Manager ARN, as in Flyte: group arn:<partition>:secretsmanager:<region>:<12-digit account>:secret, key the secret's name (letters, digits and / _ + = . @ -); got %s",
			securityctx.Quote(id))})
	}
	if v := s.GroupVersion; v != "" && (len(v) > maxVersionStage || !versionStage.MatchString(v) || v == "." || v == "..") {
		errs = append(errs, securityctx.Invalid(field+".groupVersion", v,
			"with backend aws, a version staging label: 1 to 256 letters, digits and _ + = . @ -, not . or .."))
	}
	return agentapi.Secret{ID: id, Version: s.GroupVersion}, errs
}
