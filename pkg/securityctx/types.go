package securityctx

import (
	"fmt"
	"strconv"
)

// Keys of the labels and annotations that carry a SecurityContext on a pod.
const (
	// LabelInject opts a pod in; the webhook registration selects on it.
	LabelInject = "secctx.dev/inject"
	// AnnotationSecurityContext holds the SecurityContext as JSON.
	AnnotationSecurityContext = "secctx.dev/security-context"
	// AnnotationContainers optionally names, comma-separated, the containers to
	// inject into. Without it every container and init container is a target.
	AnnotationContainers = "secctx.dev/containers"
	// AnnotationStatus is written by secctx: a short record of what it injected.
	AnnotationStatus = "secctx.dev/status"
	// LabelExecutionIdentity and AnnotationExecutionIdentity carry
	// runAs.executionIdentity, sanitised for the label and raw in the annotation.
	LabelExecutionIdentity      = "secctx.dev/execution-identity"
	AnnotationExecutionIdentity = "secctx.dev/execution-identity"
)

// SecurityContext is what a task asks for: an identity to run as, secrets and
// OAuth2 tokens. It mirrors flyteidl.core.SecurityContext.
type SecurityContext struct {
	RunAs   *Identity            `json:"runAs,omitempty"`
	Secrets []Secret             `json:"secrets,omitempty"`
	Tokens  []OAuth2TokenRequest `json:"tokens,omitempty"`
	// ConnectionRef names a Flyte connection; it is decoded so that it can be
	// refused clearly, since connections belong to agents, not pods.
	ConnectionRef string `json:"connectionRef,omitempty"`
}

// Secret is one secret a task needs. Group names the secret (for Kubernetes the
// Secret object), Key one entry inside it; without Key the whole group is meant.
type Secret struct {
	Group            string    `json:"group,omitempty"`
	GroupVersion     string    `json:"groupVersion,omitempty"`
	Key              string    `json:"key,omitempty"`
	MountRequirement MountType `json:"mountRequirement,omitempty"`
	// EnvVar, when set, is an extra environment variable: the value itself for
	// ENV_VAR, the file's path for FILE.
	EnvVar string `json:"envVar,omitempty"`
}

// Identity is who the task runs as.
type Identity struct {
	IAMRole           string        `json:"iamRole,omitempty"`
	K8sServiceAccount string        `json:"k8sServiceAccount,omitempty"`
	OAuth2Client      *OAuth2Client `json:"oauth2Client,omitempty"`
	ExecutionIdentity string        `json:"executionIdentity,omitempty"`
}

// OAuth2Client is an OAuth2 client id and a reference to its secret.
type OAuth2Client struct {
	ClientID     string  `json:"clientId,omitempty"`
	ClientSecret *Secret `json:"clientSecret,omitempty"`
}

// OAuth2TokenRequest asks for a token that is obtained and refreshed for the task.
type OAuth2TokenRequest struct {
	Name                 string        `json:"name,omitempty"`
	Type                 TokenType     `json:"type,omitempty"`
	Client               *OAuth2Client `json:"client,omitempty"`
	IdpDiscoveryEndpoint string        `json:"idpDiscoveryEndpoint,omitempty"`
	TokenEndpoint        string        `json:"tokenEndpoint,omitempty"`
}

// MountType is how a secret reaches the container (flyteidl.core.Secret.MountType).
type MountType int32

// The mount types. ANY lets secctx choose (its config's anyMountAs, FILE by default).
const (
	MountAny    MountType = 0
	MountEnvVar MountType = 1
	MountFile   MountType = 2
)

var mountTypeNames = []string{"ANY", "ENV_VAR", "FILE"}

func (m MountType) String() string {
	if m >= 0 && int(m) < len(mountTypeNames) {
		return mountTypeNames[m]
	}
	return strconv.Itoa(int(m))
}

// Valid reports whether m is one of the defined mount types.
func (m MountType) Valid() bool { return m >= 0 && int(m) < len(mountTypeNames) }

// MarshalJSON writes the enum's name, as protobuf-JSON does.
func (m MountType) MarshalJSON() ([]byte, error) {
	if !m.Valid() {
		return nil, fmt.Errorf("mount type %d: must be one of ANY, ENV_VAR, FILE", int32(m))
	}
	return []byte(`"` + m.String() + `"`), nil
}

// UnmarshalJSON accepts the name or the number, as protobuf-JSON does.
func (m *MountType) UnmarshalJSON(b []byte) error {
	v, err := decodeEnum(b, mountTypeNames)
	if err != nil {
		return err
	}
	*m = MountType(v)
	return nil
}

// TokenType is the kind of OAuth2 token request (flyteidl.core.OAuth2TokenRequest.Type).
type TokenType int32

// TokenClientCredentials is a two-legged token from client credentials.
const TokenClientCredentials TokenType = 0

var tokenTypeNames = []string{"CLIENT_CREDENTIALS"}

func (t TokenType) String() string {
	if t >= 0 && int(t) < len(tokenTypeNames) {
		return tokenTypeNames[t]
	}
	return strconv.Itoa(int(t))
}

// Valid reports whether t is a defined token type.
func (t TokenType) Valid() bool { return t >= 0 && int(t) < len(tokenTypeNames) }

// MarshalJSON writes the enum's name.
func (t TokenType) MarshalJSON() ([]byte, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("token type %d: must be CLIENT_CREDENTIALS", int32(t))
	}
	return []byte(`"` + t.String() + `"`), nil
}

// UnmarshalJSON accepts the name or the number.
func (t *TokenType) UnmarshalJSON(b []byte) error {
	v, err := decodeEnum(b, tokenTypeNames)
	if err != nil {
		return err
	}
	*t = TokenType(v)
	return nil
}
