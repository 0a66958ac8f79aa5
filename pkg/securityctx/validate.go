package securityctx

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// EnvVarPattern is what secrets[].envVar must match.
const EnvVarPattern = `^[A-Z_][A-Z0-9_]*$`

// Length bounds of the names a SecurityContext puts into a pod: an env var
// name, and the execution identity (kept whole in an annotation). Each is far
// above real use; without them a megabyte name would be copied into the pod.
const (
	MaxEnvVarLength            = 256
	MaxExecutionIdentityLength = 1024
)

// validEnvVar is EnvVarPattern without a regexp engine: this runs for every
// secret of every pod.
func validEnvVar(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// MaxTokenNameLength bounds tokens[].name, a DNS label.
const MaxTokenNameLength = 63

// ValidateOptions relax Validate where a deployment says so.
type ValidateOptions struct {
	// HTTPHosts are hosts (host or host:port, as in the URL) whose token and
	// discovery endpoints may be plain http: a test provider, never a real one.
	HTTPHosts []string
}

// Validate checks what holds whatever the backend: required fields, enum
// ranges, envVar names, token names and endpoints. It returns every problem,
// each with its field path; backend-specific rules (a Kubernetes Secret name,
// say) are checked by the injector.
func (sc *SecurityContext) Validate() ErrorList { return sc.ValidateWith(ValidateOptions{}) }

// ValidateWith is Validate with options.
func (sc *SecurityContext) ValidateWith(o ValidateOptions) ErrorList {
	var errs ErrorList
	if sc.RunAs != nil {
		if c := sc.RunAs.OAuth2Client; c != nil {
			errs = append(errs, validateClient(c, "runAs.oauth2Client")...)
		}
		if ei := sc.RunAs.ExecutionIdentity; len(ei) > MaxExecutionIdentityLength {
			errs = append(errs, Invalid("runAs.executionIdentity", ei, "must be at most "+strconv.Itoa(MaxExecutionIdentityLength)+" bytes"))
		}
	}
	for i := range sc.Secrets {
		errs = append(errs, validateSecret(&sc.Secrets[i], index("secrets", i))...)
	}
	names := map[string]int{}
	for i := range sc.Tokens {
		t := &sc.Tokens[i]
		p := index("tokens", i)
		switch first, dup := names[t.Name]; {
		case t.Name == "":
			errs = append(errs, Required(p+".name"))
		case !validTokenName(t.Name):
			errs = append(errs, Invalid(p+".name", t.Name, "must be a DNS label that starts with a letter: at most "+
				strconv.Itoa(MaxTokenNameLength)+" characters of a-z, 0-9 and '-', ending in a letter or digit (it names a file and, upper-cased, env vars)"))
		case dup:
			errs = append(errs, Invalid(p+".name", t.Name, "must be unique; tokens["+strconv.Itoa(first)+"] has it too"))
		default:
			names[t.Name] = i
		}
		if !t.Type.Valid() {
			errs = append(errs, Invalid(p+".type", t.Type.String(), allowedEnum(tokenTypeNames)))
		}
		if t.Client == nil {
			errs = append(errs, Required(p+".client"))
		} else {
			errs = append(errs, validateClient(t.Client, p+".client")...)
		}
		if t.TokenEndpoint == "" && t.IdpDiscoveryEndpoint == "" {
			errs = append(errs, &FieldError{Field: p, Detail: "tokenEndpoint or idpDiscoveryEndpoint is required"})
		}
		errs = append(errs, validateEndpoint(t.TokenEndpoint, p+".tokenEndpoint", o.HTTPHosts)...)
		errs = append(errs, validateEndpoint(t.IdpDiscoveryEndpoint, p+".idpDiscoveryEndpoint", o.HTTPHosts)...)
	}
	return errs
}

func validateSecret(s *Secret, path string) ErrorList {
	var errs ErrorList
	if s.Group == "" {
		errs = append(errs, Required(path+".group"))
	}
	if !s.MountRequirement.Valid() {
		errs = append(errs, Invalid(path+".mountRequirement", s.MountRequirement.String(), allowedEnum(mountTypeNames)))
	}
	switch {
	case s.EnvVar == "":
	case !validEnvVar(s.EnvVar):
		errs = append(errs, Invalid(path+".envVar", s.EnvVar, "must match "+EnvVarPattern))
	case len(s.EnvVar) > MaxEnvVarLength:
		errs = append(errs, Invalid(path+".envVar", s.EnvVar, "must be at most "+strconv.Itoa(MaxEnvVarLength)+" characters"))
	}
	return errs
}

// MaxClientIDLength bounds a client id, which goes into the pod spec.
const MaxClientIDLength = 1024

// validateClient checks a client: an id, and a secret that is one value (a
// group and a key); how it reaches the pod is the injector's.
func validateClient(c *OAuth2Client, path string) ErrorList {
	var errs ErrorList
	switch {
	case c.ClientID == "":
		errs = append(errs, Required(path+".clientId"))
	case len(c.ClientID) > MaxClientIDLength || strings.ContainsFunc(c.ClientID, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		errs = append(errs, Invalid(path+".clientId", c.ClientID, "must be at most "+strconv.Itoa(MaxClientIDLength)+" bytes without control characters"))
	}
	if c.ClientSecret == nil {
		errs = append(errs, Required(path+".clientSecret"))
		return errs
	}
	s := c.ClientSecret
	errs = append(errs, validateSecret(s, path+".clientSecret")...)
	if s.Key == "" {
		errs = append(errs, &FieldError{Field: path + ".clientSecret.key", Detail: "required: a client secret is one value, the key of its group"})
	}
	if s.EnvVar != "" {
		errs = append(errs, Invalid(path+".clientSecret.envVar", s.EnvVar, "must be empty: secctx decides where a client secret goes, and never puts it in an env var"))
	}
	if s.MountRequirement == MountEnvVar {
		errs = append(errs, Invalid(path+".clientSecret.mountRequirement", s.MountRequirement.String(), "must be ANY or FILE: a client secret is never put in an env var"))
	}
	return errs
}

// validTokenName: a DNS label (RFC 1123) that starts with a letter, so that
// its upper-cased form is a portable env var name.
func validTokenName(s string) bool {
	if len(s) == 0 || len(s) > MaxTokenNameLength || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// validateEndpoint: an absolute https URL with a host, without user info or
// fragment; plain http only for the hosts allowed.
func validateEndpoint(raw, path string, httpHosts []string) ErrorList {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Host == "" || u.Opaque != "" || u.User != nil || u.Fragment != "" || strings.ContainsAny(raw, " \t\r\n"):
		return ErrorList{Invalid(path, raw, "must be an https:// URL with a host, and no user, fragment or spaces")}
	case u.Scheme == "https":
	case u.Scheme == "http" && slices.Contains(httpHosts, u.Host):
	default:
		return ErrorList{Invalid(path, raw, "must be an https:// URL with a host")}
	}
	return nil
}
