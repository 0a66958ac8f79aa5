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
	MaxEnvVarLength = 256
	// MaxNameLength bounds a secret's group, groupVersion and key: far
	// above any store's names (an AWS ARN, the longest, is at most 2048).
	MaxNameLength              = 4096
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
	for _, f := range []struct{ name, value string }{{"group", s.Group}, {"groupVersion", s.GroupVersion}, {"key", s.Key}} {
		if len(f.value) > MaxNameLength {
			errs = append(errs, Invalid(path+"."+f.name, f.value, "must be at most "+strconv.Itoa(MaxNameLength)+" bytes"))
		}
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

// MaxEndpointLength bounds a token or discovery endpoint: it goes into the
// sidecar's arguments and the audit line.
const MaxEndpointLength = 2048

// validateEndpoint: an absolute https URL with a host, at most
// MaxEndpointLength bytes, without user info, query or fragment (a client
// secret in a query would be in every log line that shows the URL), and a
// path of plain elements: no . or .. element, no empty one, and no
// percent-encoded dot, slash or backslash, so that the path a policy allows
// is the path the provider serves. Plain http only for the hosts allowed. The
// value is quoted without its user info or query.
func validateEndpoint(raw, path string, httpHosts []string) ErrorList {
	if raw == "" {
		return nil
	}
	shown := RedactURL(raw)
	if len(raw) > MaxEndpointLength {
		return ErrorList{Invalid(path, shown, "must be at most "+strconv.Itoa(MaxEndpointLength)+" bytes")}
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil || u.Hostname() == "" || u.Opaque != "" || u.User != nil || u.Fragment != "" || u.RawQuery != "" || u.ForceQuery ||
		strings.ContainsAny(raw, "@#") || strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '\\' }):
		return ErrorList{Invalid(path, shown, "must be an https:// URL with a host, and no user info, query, fragment, spaces or backslashes")}
	case u.Scheme == "https":
	case u.Scheme == "http" && slices.Contains(httpHosts, u.Host):
	default:
		return ErrorList{Invalid(path, shown, "must be an https:// URL with a host")}
	}
	if msg := badURLPath(u.EscapedPath()); msg != "" {
		return ErrorList{Invalid(path, shown, "the path "+msg)}
	}
	return nil
}

// badURLPath says what is wrong with a URL's escaped path, or "": an empty
// element (other than a trailing slash), a . or .. element, or a
// percent-encoded dot, slash or backslash, which a server may decode into
// one of those.
func badURLPath(p string) string {
	lower := strings.ToLower(p)
	for _, enc := range []string{"%2e", "%2f", "%5c", "%25"} {
		if strings.Contains(lower, enc) {
			return "must not percent-encode . / \\ or % (" + enc + ")"
		}
	}
	// A control character, even encoded (..%00), and a ; (..;/, a matrix
	// parameter that Java servers strip) can make an element a .. to the
	// server that is not one here.
	for i := 0; i+2 < len(p); i++ {
		if p[i] == '%' && (p[i+1] == '0' || p[i+1] == '1' || p[i+1] == '7' && (p[i+2] == 'f' || p[i+2] == 'F')) {
			return "must not percent-encode a control character (" + p[i:i+3] + ")"
		}
	}
	if strings.Contains(p, ";") {
		return "must not hold ;"
	}
	rest := strings.TrimPrefix(p, "/")
	if rest == "" {
		return ""
	}
	elems := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	for _, e := range elems {
		if e == "" || e == "." || e == ".." {
			return "must not have an empty, . or .. element"
		}
	}
	return ""
}

// RedactURL is raw as a message may show it: everything from the first ?
// or # replaced by a placeholder, and everything between the scheme and the
// last @ too, since a query, a fragment or user info may hold a credential.
// It works on text that does not parse as a URL, whatever its slashes
// (https:/user:pw@host, //user:pw@host, a / or # inside the password).
func RedactURL(raw string) string {
	out := raw
	if at := strings.LastIndexByte(raw, '@'); at >= 0 {
		// The last @ of the whole text: a password may hold / ? or #.
		start := 0
		if i := strings.IndexByte(raw, ':'); i > 0 && isScheme(raw[:i]) {
			start = i + 1
		}
		for start < len(raw) && (raw[start] == '/' || raw[start] == '\\') {
			start++
		}
		if start <= at {
			out = raw[:start] + "<user info removed>" + raw[at:]
		}
	}
	if i := strings.IndexAny(out, "?#"); i >= 0 {
		out = out[:i] + "?<query or fragment removed>"
	}
	return out
}

// isScheme: a URL scheme, letters then letters, digits, + - or . (RFC 3986).
func isScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return false
		}
	}
	return s != ""
}
