package azure

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
)

const (
	grantClientCredentials = "client_credentials"
	assertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// entraHandler serves what MSAL for Go (under azidentity) asks Entra ID:
// instance discovery, the tenant's OpenID configuration, and tokens.
func (s *Server) entraHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /common/discovery/instance", s.serveInstanceDiscovery)
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", s.serveOpenIDConfiguration)
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", s.serveToken)
	return mux
}

// serveInstanceDiscovery answers MSAL's check of an authority it does not
// know (when instance discovery is on): the authority's host is its own
// alias, its tenant's configuration at the usual path.
func (s *Server) serveInstanceDiscovery(w http.ResponseWriter, r *http.Request) {
	auth, err := url.Parse(r.URL.Query().Get("authorization_endpoint"))
	var tenant string
	if err == nil {
		tenant, _, _ = strings.Cut(strings.TrimPrefix(auth.EscapedPath(), "/"), "/")
	}
	if err != nil || auth.Host == "" || tenant == "" {
		entraError(w, http.StatusBadRequest, "invalid_instance", 50049, "Unknown or invalid instance.")
		return
	}
	s.journal.Note("entra: instance discovery for %s", auth.Host)
	writeJSON(w, http.StatusOK, map[string]any{
		"tenant_discovery_endpoint": "https://" + auth.Host + "/" + tenant + "/v2.0/.well-known/openid-configuration",
		"api-version":               "1.1",
		"metadata":                  []map[string]any{{"preferred_network": auth.Host, "preferred_cache": auth.Host, "aliases": []string{auth.Host}}},
	})
}

// serveOpenIDConfiguration names this server's endpoints on the host the
// client used, which MSAL checks against its authority.
func (s *Server) serveOpenIDConfiguration(w http.ResponseWriter, r *http.Request) {
	base := "https://" + r.Host + "/" + r.PathValue("tenant")
	s.journal.Note("entra: OpenID configuration of %s", base)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                base + "/v2.0",
		"token_endpoint":                        base + "/oauth2/v2.0/token",
		"authorization_endpoint":                base + "/oauth2/v2.0/authorize",
		"jwks_uri":                              base + "/discovery/v2.0/keys",
		"token_endpoint_auth_methods_supported": []string{"client_secret_post", "private_key_jwt", "client_secret_basic"},
		"response_types_supported":              []string{"code", "id_token", "code id_token", "id_token token"},
		"subject_types_supported":               []string{"pairwise"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

// serveToken is the client credentials grant with a federated assertion:
// the pod's token, valid for AssertionAudience at the cluster's API
// server, whose subject a federated credential of the app names.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	tenant := r.PathValue("tenant")
	if err := r.ParseForm(); err != nil {
		entraError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body could not be parsed: "+err.Error())
		return
	}
	f := r.PostForm
	clientID, scope := f.Get("client_id"), resourceScope(f.Get("scope"))
	what := "a token for " + scope + " in tenant " + tenant
	refuse := func(code int, errCode string, aadsts int, desc string) {
		s.journal.Refused("entra", clientID, what, fmt.Sprintf("AADSTS%d: %s", aadsts, desc))
		entraError(w, code, errCode, aadsts, desc)
	}
	switch {
	case f.Get("grant_type") != grantClientCredentials:
		refuse(http.StatusBadRequest, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+f.Get("grant_type")+"'.")
		return
	case clientID == "":
		refuse(http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	case f.Get("client_assertion_type") != assertionTypeJWTBearer || f.Get("client_assertion") == "":
		refuse(http.StatusUnauthorized, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	case !strings.HasSuffix(scope, "/.default") || strings.Contains(scope, " "):
		refuse(http.StatusBadRequest, "invalid_scope", 1002012, "The provided value for scope "+f.Get("scope")+" is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
		return
	}
	s.mu.Lock()
	known := s.apps[[2]string{tenant, clientID}]
	s.mu.Unlock()
	if !known {
		refuse(http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", clientID, tenant))
		return
	}
	if s.opts.Reviewer == nil {
		refuse(http.StatusUnauthorized, "invalid_client", 700027, "Client assertion failed signature validation: this test server has no Reviewer.")
		return
	}
	subject, err := s.opts.Reviewer.Review(r.Context(), f.Get("client_assertion"), AssertionAudience)
	if err != nil {
		refuse(http.StatusUnauthorized, "invalid_client", 700027, "Client assertion failed signature validation: "+err.Error())
		return
	}
	s.mu.Lock()
	federated := s.federated[[3]string{tenant, clientID, subject}]
	s.mu.Unlock()
	if !federated {
		refuse(http.StatusUnauthorized, "invalid_client", 700213, fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'. Check your federated identity credential Subject, Audience and Issuer against the presented assertion.", subject))
		return
	}
	resource := strings.TrimSuffix(scope, "/.default")
	tok, exp := s.mint(tenant, clientID, resource)
	s.journal.Granted("entra", clientID+" (as "+subject+")", what)
	secs := int(time.Until(exp).Seconds())
	writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok})
}

// resourceScope drops the OpenID scopes MSAL adds to every request
// (openid, offline_access, profile), which Entra ID ignores for client
// credentials, leaving the resource's.
func resourceScope(scope string) string {
	var kept []string
	for _, sc := range strings.Fields(scope) {
		switch sc {
		case "openid", "offline_access", "profile", "email":
		default:
			kept = append(kept, sc)
		}
	}
	return strings.Join(kept, " ")
}

// entraError answers in Entra ID's error shape: an OAuth error, and an
// AADSTS code in the description and error_codes.
func entraError(w http.ResponseWriter, code int, errCode string, aadsts int, desc string) {
	now := time.Now().UTC()
	trace, corr := uuid.NewString(), uuid.NewString()
	writeJSON(w, code, map[string]any{
		"error": errCode,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s",
			aadsts, desc, trace, corr, now.Format("2006-01-02 15:04:05Z")),
		"error_codes":    []int{aadsts},
		"timestamp":      now.Format("2006-01-02 15:04:05Z"),
		"trace_id":       trace,
		"correlation_id": corr,
		"error_uri":      fmt.Sprintf("https://%s/error?code=%d", LoginHost, aadsts),
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
