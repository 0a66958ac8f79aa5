package azure

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
)

// serveVault is Key Vault's GET /secrets/<name>[/<version>] for vault, in
// Key Vault's order: authentication (401 with the challenge that tells the
// client its tenant and resource), then authorization, then the secret.
func (s *Server) serveVault(w http.ResponseWriter, r *http.Request, vault string) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	tok, err := s.tokenOf(r.Header.Get("Authorization"))
	switch {
	case errors.Is(err, errNoToken):
		// Every client's first request: it learns its tenant and resource
		// from the challenge.
		s.journal.Note("keyvault: challenged an unauthenticated request for vault %s %s", vault, path)
		s.challenge(w, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	case err != nil:
		s.journal.Refused("keyvault", "", "vault "+vault+" "+path, err.Error())
		s.challenge(w, "AKV10000: Request is missing a valid Bearer or PoP token.")
		return
	case tok.tenant != s.opts.TenantID:
		s.journal.Refused("keyvault", tok.clientID, "vault "+vault+" "+path, "a token of tenant "+tok.tenant)
		s.challenge(w, fmt.Sprintf("AKV10032: Invalid issuer. Expected one of https://sts.windows.net/%s/, found a token of tenant %s.", s.opts.TenantID, tok.tenant))
		return
	case strings.TrimSuffix(tok.resource, "/") != VaultResource:
		s.journal.Refused("keyvault", tok.clientID, "vault "+vault+" "+path, "a token for "+tok.resource)
		s.challenge(w, "AKV10022: Invalid audience. Expected "+VaultResource+", found: "+tok.resource+".")
		return
	}
	name, version, _ := strings.Cut(strings.TrimPrefix(path, "/secrets/"), "/")
	if r.Method != http.MethodGet || !strings.HasPrefix(path, "/secrets/") || name == "" || strings.Contains(version, "/") {
		kvError(w, http.StatusBadRequest, "BadParameter", "This test server serves GET /secrets/<name>[/<version>] only.", "")
		return
	}
	if r.URL.Query().Get("api-version") == "" {
		kvError(w, http.StatusBadRequest, "BadParameter", "The request URI contains an invalid API version.", "")
		return
	}
	resource := "vault " + vault + " secret " + name
	if version != "" {
		resource += " version " + version
	}
	if !s.granted(tok.clientID, vault, name) {
		s.journal.Refused("keyvault", tok.clientID, resource, "no grant")
		kvError(w, http.StatusForbidden, "Forbidden", fmt.Sprintf("The user, group or application 'appid=%s;iss=https://sts.windows.net/%s/' does not have secrets get permission on key vault '%s;location=secctx-test'.", tok.clientID, tok.tenant, vault), "AccessDenied")
		return
	}
	s.mu.Lock()
	v := s.find(vault, name, version)
	var found secretVersion
	if v != nil {
		found = *v
	}
	s.mu.Unlock()
	switch {
	case v == nil:
		s.journal.Refused("keyvault", tok.clientID, resource, "not found")
		id := name
		if version != "" {
			id += "/" + version
		}
		kvError(w, http.StatusNotFound, "SecretNotFound", fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", id), "")
		return
	case !found.enabled:
		s.journal.Refused("keyvault", tok.clientID, resource, "the secret is disabled")
		kvError(w, http.StatusForbidden, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
		return
	}
	s.journal.Granted("keyvault", tok.clientID, resource)
	id := azsecrets.ID("https://" + r.Host + "/secrets/" + name + "/" + found.id)
	enabled, recoverable, level := true, int32(90), "Recoverable+Purgeable"
	secret := azsecrets.Secret{
		ID: &id, Value: &found.value, Tags: map[string]*string{},
		Attributes: &azsecrets.SecretAttributes{Enabled: &enabled, Created: &found.created, Updated: &found.created,
			RecoverableDays: &recoverable, RecoveryLevel: &level},
	}
	writeJSON(w, http.StatusOK, secret)
}

// challenge is Key Vault's 401: the header names the tenant's authority
// and the resource to ask a token for.
func (s *Server) challenge(w http.ResponseWriter, message string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://%s/%s", resource="%s"`, s.entraAddr, s.opts.TenantID, VaultResource))
	kvError(w, http.StatusUnauthorized, "Unauthorized", message, "")
}

// kvError answers in Key Vault's error shape.
func kvError(w http.ResponseWriter, code int, errCode, message, inner string) {
	e := map[string]any{"code": errCode, "message": message}
	if inner != "" {
		e["innererror"] = map[string]string{"code": inner}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}
