// Package agentapi is what the webhook tells the in-pod agent (secctx-agent):
// the tokens the sidecar keeps and the secrets the fetch reads, as the JSON
// the webhook writes into their arguments, and the bounds both sides hold
// to. It imports nothing but the standard library, so that pkg/inject (the
// writer) and pkg/agent (the reader) share it without the agent linking the
// Kubernetes API types that pkg/securityctx carries.
package agentapi

// Token is what the token sidecar (secctx-agent tokens) is told about one
// token. The webhook writes a list of them, as JSON, into the sidecar's
// arguments; so it holds no secret, only where the secret is.
type Token struct {
	// Name is tokens[].name; the token is written to a file of that name.
	Name string `json:"name"`
	// ClientID is the OAuth2 client's id.
	ClientID string `json:"clientId"`
	// ClientSecretFile is the path, inside the sidecar, of the file that
	// holds the client secret.
	ClientSecretFile string `json:"clientSecretFile"`
	// TokenEndpoint, when set, is used as it is; else it is found through
	// OpenID discovery at DiscoveryEndpoint.
	TokenEndpoint     string `json:"tokenEndpoint,omitempty"`
	DiscoveryEndpoint string `json:"idpDiscoveryEndpoint,omitempty"`
	// AuthStyle is how the client authenticates to the token endpoint:
	// AuthStyleHeader (empty means it) or AuthStyleBody. It is chosen once,
	// by configuration, never by trying one after the other.
	AuthStyle string `json:"authStyle,omitempty"`
}

// How a client sends its id and secret to the token endpoint (RFC 6749
// section 2.3.1).
const (
	// AuthStyleHeader is HTTP Basic authentication, the default.
	AuthStyleHeader = "header"
	// AuthStyleBody is client_id and client_secret in the form body, for
	// providers that accept nothing else.
	AuthStyleBody = "body"
)

// Bounds the webhook and the agent agree on.
const (
	// MaxTokenBytes bounds one access token the sidecar writes; a larger
	// answer is refused. The webhook sizes the token volume from it.
	MaxTokenBytes = 64 << 10
	// MaxEnvBytes is the kernel's bound on one environment string,
	// NAME=value with its NUL (MAX_ARG_STRLEN, 32 pages of 4 KiB): a value
	// the exec wrapper sets must fit in it, or execve fails with E2BIG.
	MaxEnvBytes = 128 << 10
	// MaxEnvValueBytes bounds a value the fetch writes for the exec
	// wrapper to set as an env var (Secret.EnvVar): MaxEnvBytes less the
	// longest name, 256 bytes as envVar allows, the "=" and the NUL. The
	// wrapper checks each NAME=value against MaxEnvBytes itself.
	MaxEnvValueBytes = MaxEnvBytes - 256 - 2
	// MaxSecretBytes bounds one value the fetch or the sidecar writes
	// (Secrets Manager's own limit is 64 KiB; the files live in memory).
	// The webhook sizes the volume of refreshed secrets from it.
	MaxSecretBytes = 1 << 20
)

// The stores the fetch reads (Secret.Store).
const (
	StoreAWS   = "aws"
	StoreVault = "vault"
	StoreGCP   = "gcp"
	StoreAzure = "azure"
)

// Secret is what the fetch init container (secctx-agent fetch) is told about
// one secret: where it is in its store and which file to write. Like Token it
// holds no secret.
type Secret struct {
	// Field names the request in the SecurityContext (secrets[0]), so
	// that a failure says which one it was.
	Field string `json:"field"`
	// Store is the store the secret is read from: StoreAWS, StoreVault,
	// StoreGCP or StoreAzure. One fetch reads the secrets of several
	// stores, each as the pod's own identity for that store.
	Store string `json:"store"`
	// ID names the secret in its store: a Secrets Manager ARN, a Vault
	// path, a Secret Manager secret (projects/<p>/secrets/<s>) or a Key
	// Vault secret's URL (https://<vault host>/secrets/<name>).
	ID string `json:"id"`
	// Version selects a version: a Secrets Manager staging label, a Secret
	// Manager version (a number or latest; empty is latest), a Key Vault
	// version (empty is the current one).
	Version string `json:"version,omitempty"`
	// Key is the key inside the secret's data (Vault), or the field of a
	// JSON object the secret holds (gcp); empty is the whole value.
	Key string `json:"key,omitempty"`
	// Engine is how to read the data (Vault): kv1, kv2, or db for the
	// database engine's dynamic credentials.
	Engine string `json:"engine,omitempty"`
	// Leased says the value is a lease's, such as a database user Vault
	// makes for each read: it lives as long as the lease, so the sidecar
	// renews the lease and, before it ends, reads a new value. Every key
	// of one ID comes from one read.
	Leased bool `json:"leased,omitzero"`
	// File is where the value is written, inside the fetch container.
	File string `json:"file"`
	// EnvVar says that the exec wrapper sets the value as an env var
	// (ENV_VAR), so the fetch holds it to MaxEnvValueBytes and refuses a
	// NUL byte: either would otherwise fail the task's execve with no
	// word of which secret it was.
	EnvVar bool `json:"envVar,omitzero"`
}
