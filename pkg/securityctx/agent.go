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
