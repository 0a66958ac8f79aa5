package gcp

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RFC 8693 values Google STS takes for workload identity federation.
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
	tokenTypeJWT       = "urn:ietf:params:oauth:token-type:jwt"
	tokenTypeIDToken   = "urn:ietf:params:oauth:token-type:id_token"
)

// apiHandler serves STS (sts.googleapis.com/v1/token) and the IAM
// credentials API (iamcredentials.googleapis.com), which credential
// configurations name by URL, so one HTTPS listener holds both.
func (s *Server) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/token", s.serveSTS)
	mux.HandleFunc("POST /v1/projects/-/serviceAccounts/{call}", s.serveGenerateAccessToken)
	return mux
}

// serveSTS exchanges a pod's service-account token for an access token of
// the pool subject system:serviceaccount:<ns>:<sa>.
func (s *Server) serveSTS(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(r)
	if err != nil {
		s.stsError(w, "", "invalid_request", err.Error())
		return
	}
	audience := form.Get("audience")
	switch {
	case form.Get("grant_type") != grantTokenExchange:
		s.stsError(w, audience, "unsupported_grant_type", fmt.Sprintf("Invalid value for \"grant_type\": %q.", form.Get("grant_type")))
		return
	case form.Get("requested_token_type") != tokenTypeAccess:
		s.stsError(w, audience, "invalid_request", fmt.Sprintf("Invalid value for \"requested_token_type\": %q.", form.Get("requested_token_type")))
		return
	case form.Get("subject_token_type") != tokenTypeJWT && form.Get("subject_token_type") != tokenTypeIDToken:
		s.stsError(w, audience, "invalid_request", fmt.Sprintf("Invalid value for \"subject_token_type\": %q.", form.Get("subject_token_type")))
		return
	case form.Get("subject_token") == "":
		s.stsError(w, audience, "invalid_request", "Missing required parameter: \"subject_token\".")
		return
	}
	p, ok := s.providers[audience]
	if !ok {
		s.stsError(w, audience, "invalid_target", "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.")
		return
	}
	if s.opts.Reviewer == nil {
		s.stsError(w, audience, "invalid_grant", "this test server has no Reviewer to check subject tokens")
		return
	}
	subject, err := s.opts.Reviewer.Review(r.Context(), form.Get("subject_token"), p.KubeAudience)
	if err != nil {
		s.stsError(w, audience, "invalid_grant", fmt.Sprintf("The subject token was refused for audience %q: %v", p.KubeAudience, err))
		return
	}
	m := providerRE.FindStringSubmatch(audience)
	principal := fmt.Sprintf("principal://iam.googleapis.com/projects/%s/locations/global/workloadIdentityPools/%s/subject/%s", m[1], m[2], subject)
	tok, exp := s.mint(principal, 0)
	s.journal.Granted("sts", principal, fmt.Sprintf("an access token for %s (scopes %q)", audience, form.Get("scope")))
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token":      tok,
		"issued_token_type": tokenTypeAccess,
		"token_type":        "Bearer",
		"expires_in":        int(time.Until(exp).Seconds()),
	})
}

// stsError answers in Google STS's error shape.
func (s *Server) stsError(w http.ResponseWriter, audience, code, description string) {
	s.journal.Refused("sts", "", "an access token for "+audience, code+": "+description)
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": description})
}

// readForm reads a token request, form-encoded as the Go libraries send it
// or JSON as Google's REST reference shows it.
func readForm(r *http.Request) (url.Values, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read the request: %w", err)
	}
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == "application/json" {
		var fields map[string]any
		if err := json.Unmarshal(body, &fields); err != nil {
			return nil, fmt.Errorf("parse the request: %w", err)
		}
		form := url.Values{}
		for k, v := range fields {
			switch v := v.(type) {
			case string:
				form.Set(k, v)
			case []any:
				// scope may come as a list.
				var parts []string
				for _, p := range v {
					parts = append(parts, fmt.Sprint(p))
				}
				form.Set(k, strings.Join(parts, " "))
			}
		}
		return form, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("parse the request: %w", err)
	}
	return form, nil
}

// serveGenerateAccessToken mints a token of a Google service account for a
// caller granted token creation on it.
func (s *Server) serveGenerateAccessToken(w http.ResponseWriter, r *http.Request) {
	email, ok := strings.CutSuffix(r.PathValue("call"), ":generateAccessToken")
	if !ok || email == "" {
		googleError(w, http.StatusNotFound, "NOT_FOUND", "Method not found.")
		return
	}
	resource := "projects/-/serviceAccounts/" + email
	caller, err := s.principalOf(r.Header.Get("Authorization"))
	if err != nil {
		s.journal.Refused("iamcredentials", "", resource, err.Error())
		googleError(w, http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.")
		return
	}
	var req struct {
		Delegates []string `json:"delegates"`
		Scope     []string `json:"scope"`
		Lifetime  string   `json:"lifetime"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "Invalid JSON payload received: "+err.Error())
		return
	}
	if len(req.Delegates) > 0 {
		s.journal.Refused("iamcredentials", caller, resource, "delegation chains are not supported by this test server")
		googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", "delegates are not supported by this test server")
		return
	}
	if !s.mayActAs(caller, email) {
		s.journal.Refused("iamcredentials", caller, resource, "no token creator grant on "+email)
		googleError(w, http.StatusForbidden, "PERMISSION_DENIED", "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).")
		return
	}
	lifetime := time.Hour
	if req.Lifetime != "" {
		d, err := time.ParseDuration(req.Lifetime)
		if err != nil || d <= 0 {
			googleError(w, http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf("Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), %q", req.Lifetime))
			return
		}
		lifetime = d
	}
	principal := ServiceAccountPrincipal(email)
	tok, exp := s.mint(principal, lifetime)
	s.journal.Granted("iamcredentials", caller, fmt.Sprintf("an access token of %s (scopes %q)", principal, req.Scope))
	writeJSON(w, http.StatusOK, map[string]string{"accessToken": tok, "expireTime": exp.UTC().Format(time.RFC3339)})
}

// googleError answers in the JSON shape of Google's REST APIs.
func googleError(w http.ResponseWriter, code int, status, message string) {
	writeJSON(w, code, map[string]any{"error": map[string]any{"code": code, "message": message, "status": status}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
