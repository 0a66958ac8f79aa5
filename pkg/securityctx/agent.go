package securityctx

// AgentToken is what the token sidecar (secctx agent tokens) is told about
// one token. The webhook writes a list of them, as JSON, into the sidecar's
// arguments; so it holds no secret, only where the secret is.
type AgentToken struct {
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
}

// AgentSecret is what the fetch init container (secctx agent fetch) is told
// about one secret: where it is in its store and which file to write. Like
// AgentToken it holds no secret.
type AgentSecret struct {
	// Field names the request in the SecurityContext (secrets[0]), so
	// that a failure says which one it was.
	Field string `json:"field"`
	// ID names the secret in its store: a Secrets Manager ARN, or a Vault
	// path.
	ID string `json:"id"`
	// Version selects a version: a Secrets Manager staging label.
	Version string `json:"version,omitempty"`
	// Key is the key inside the secret's data (Vault).
	Key string `json:"key,omitempty"`
	// Engine is how to read the data (Vault): kv1, kv2 or db.
	Engine string `json:"engine,omitempty"`
	// File is where the value is written, inside the fetch container.
	File string `json:"file"`
}
