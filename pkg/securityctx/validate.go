package securityctx

import (
	"net/url"
	"strconv"
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

// Validate checks what holds whatever the backend: required fields, enum
// ranges, envVar names, token names and endpoints. It returns every problem,
// each with its field path; backend-specific rules (a Kubernetes Secret name,
// say) are checked by the injector.
func (sc *SecurityContext) Validate() ErrorList {
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
		errs = append(errs, validateHTTPS(t.TokenEndpoint, p+".tokenEndpoint")...)
		errs = append(errs, validateHTTPS(t.IdpDiscoveryEndpoint, p+".idpDiscoveryEndpoint")...)
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

func validateClient(c *OAuth2Client, path string) ErrorList {
	var errs ErrorList
	if c.ClientID == "" {
		errs = append(errs, Required(path+".clientId"))
	}
	if c.ClientSecret == nil {
		errs = append(errs, Required(path+".clientSecret"))
	} else {
		errs = append(errs, validateSecret(c.ClientSecret, path+".clientSecret")...)
	}
	return errs
}

func validateHTTPS(raw, path string) ErrorList {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return ErrorList{Invalid(path, raw, "must be an https:// URL with a host")}
	}
	return nil
}
