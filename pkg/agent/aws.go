package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"

	"github.com/secctx/secctx/pkg/agentapi"
)

func init() { RegisterStore(agentapi.StoreAWS, openAWS) }

// awsStore reads AWS Secrets Manager with the SDK's default credential
// chain: in a pod with runAs.iamRole that is the web identity (IRSA) the
// webhook set up, so the task's own role reads its secrets.
type awsStore struct {
	cfg     aws.Config
	clients map[string]*secretsmanager.Client // by region
	// read are the versions read so far, by secret and stage: the
	// sidecar asks DescribeSecret, which costs no decryption and carries
	// no value, whether the stage has moved before it reads the value
	// again. noDescribe: the role may not DescribeSecret, so every
	// refresh reads.
	read       map[string]awsVersion
	noDescribe bool
}

// awsVersion is a version read: its id and its value.
type awsVersion struct {
	id    string
	value []byte
}

func openAWS(ctx context.Context, cfg FetchConfig, secrets []agentapi.Secret) (Store, error) {
	opts := []func(*config.LoadOptions) error{
		// The SDK's default session name is all digits, which some STS
		// implementations read as a number; and a named session says in
		// CloudTrail who assumed the role.
		config.WithWebIdentityRoleCredentialOptions(func(o *stscreds.WebIdentityRoleOptions) {
			if o.RoleSessionName == "" {
				o.RoleSessionName = sessionName()
			}
		}),
	}
	// The STS endpoint is regional (AWS_STS_REGIONAL_ENDPOINTS): without
	// AWS_REGION, the first aws secret's region is the one asked.
	if os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") == "" && len(secrets) > 0 {
		opts = append(opts, config.WithRegion(arnRegion(secrets[0].ID)))
	}
	c, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, Permanent(fmt.Errorf("aws configuration: %w", err))
	}
	return &awsStore{cfg: c, clients: map[string]*secretsmanager.Client{}, read: map[string]awsVersion{}}, nil
}

// sessionName is secctx-<pod name>, within STS's 64 characters.
func sessionName() string {
	h, _ := os.Hostname()
	name := "secctx-" + h
	if len(name) > 64 {
		name = name[:64]
	}
	return name
}

// arnRegion is the region of arn:<partition>:secretsmanager:<region>:...
func arnRegion(arn string) string {
	parts := strings.SplitN(arn, ":", 5)
	if len(parts) < 5 {
		return ""
	}
	return parts[3]
}

func (a *awsStore) Read(ctx context.Context, s agentapi.Secret) ([]byte, error) {
	region := arnRegion(s.ID)
	if region == "" {
		region = a.cfg.Region
	}
	client, ok := a.clients[region]
	if !ok {
		client = secretsmanager.NewFromConfig(a.cfg, func(o *secretsmanager.Options) { o.Region = region })
		a.clients[region] = client
	}
	stage := s.Version
	if stage == "" {
		stage = "AWSCURRENT"
	}
	key := s.ID + "\x00" + stage
	if last, ok := a.read[key]; ok && !a.noDescribe {
		id, err := a.currentVersion(ctx, client, s.ID, stage)
		var api smithy.APIError
		switch {
		case err == nil && id == last.id:
			return last.value, nil
		case errors.As(err, &api) && (api.ErrorCode() == "AccessDeniedException" || api.ErrorCode() == "AccessDenied") &&
			innermostOperation(err) == "DescribeSecret":
			// Least privilege: a role that may read but not describe. (Not
			// STS refusing the role, which fails the reads as well.)
			a.noDescribe = true
		case err != nil:
			return nil, awsError(err)
		}
	}
	in := &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.ID), VersionStage: aws.String(stage)}
	out, err := client.GetSecretValue(ctx, in)
	if err != nil {
		return nil, awsError(err)
	}
	v := out.SecretBinary
	if out.SecretString != nil {
		v = []byte(*out.SecretString)
	}
	if out.VersionId != nil {
		a.read[key] = awsVersion{id: *out.VersionId, value: v}
	}
	return v, nil
}

// innermostOperation names the deepest SDK operation in err's chain: the
// call that failed, which is not DescribeSecret when it is the credentials'
// AssumeRoleWithWebIdentity that DescribeSecret needed.
func innermostOperation(err error) string {
	name := ""
	for e := err; e != nil; e = errors.Unwrap(e) {
		if op, ok := e.(*smithy.OperationError); ok {
			name = op.OperationName
		}
	}
	return name
}

// currentVersion is the id of the version of secret id that has stage.
func (a *awsStore) currentVersion(ctx context.Context, client *secretsmanager.Client, id, stage string) (string, error) {
	out, err := client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(id)})
	if err != nil {
		return "", err
	}
	for v, stages := range out.VersionIdsToStages {
		if slices.Contains(stages, stage) {
			return v, nil
		}
	}
	return "", nil
}

// awsError words an SDK error and says whether it is worth retrying: a
// missing secret, a denied read or a refused web identity is not.
func awsError(err error) error {
	var api smithy.APIError
	if errors.As(err, &api) {
		msg := api.ErrorCode() + ": " + api.ErrorMessage()
		switch api.ErrorCode() {
		case "ResourceNotFoundException":
			return Permanent(fmt.Errorf("not found in AWS Secrets Manager (%s)", msg))
		case "AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidSignatureException",
			"InvalidIdentityToken", "InvalidIdentityTokenException", "ExpiredTokenException":
			return Permanent(fmt.Errorf("access denied (%s)", msg))
		case "ThrottlingException", "Throttling", "InternalServiceError", "InternalFailure", "ServiceUnavailable",
			"IDPCommunicationError", "IDPCommunicationErrorException":
			return errors.New(msg)
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		code := re.HTTPStatusCode()
		if code >= 400 && code < 500 && code != http.StatusTooManyRequests && code != http.StatusRequestTimeout {
			return Permanent(fmt.Errorf("refused (HTTP %d): %w", code, err))
		}
	}
	return err
}
