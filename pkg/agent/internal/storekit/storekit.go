// Package storekit is what the fetch's stores share, those of pkg/agent
// and those in packages of their own (pkg/agent/gcp): the trust of a
// store's CA bundle, the HTTP client of its identity and API calls, and
// the wording of their errors. It is internal so that pkg/agent's API
// stays the stores' registration alone.
package storekit

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/secctx/secctx/pkg/agentapi"
)

// MaxSecretSize bounds one value (agentapi.MaxSecretBytes).
const MaxSecretSize = agentapi.MaxSecretBytes

// TLS is a TLS configuration that trusts the system's CAs and the PEM
// certificates of bundle, which came from the environment variable env.
func TLS(bundle, env string) (*tls.Config, error) {
	if bundle == "" {
		return &tls.Config{MinVersion: tls.VersionTLS12}, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM([]byte(bundle)) {
		return nil, fmt.Errorf("%s: no PEM certificate in it", env)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// HTTPClient is a client for a store's identity and API calls: it trusts
// tlsConf and follows no redirect, as a token request that a 307 or 308
// replays would carry the pod's token to another host. A request gets 30
// seconds, so that one that hangs leaves time to retry.
func HTTPClient(tlsConf *tls.Config) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	return &http.Client{Transport: tr, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
}

// TokenSubject is the subject of a service-account token, for messages:
// system:serviceaccount:<namespace>:<name>. The token is not verified
// here; the store does that.
func TokenSubject(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(b, &claims) != nil {
		return ""
	}
	return claims.Sub
}

// Refused says whether an HTTP status refuses for good: a 4xx other than
// a timeout or throttling.
func Refused(code int) bool {
	return code >= 400 && code < 500 && code != http.StatusTooManyRequests && code != http.StatusRequestTimeout
}

// OneLine is s on one line, at most 400 bytes: the SDKs' messages run
// over lines, with whole answers, which a termination message has no room
// for.
func OneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// Describe names a secret for a message, as the fetch and every store
// word it: its store and where it is, never what.
func Describe(s agentapi.Secret) string {
	d := s.Store + " " + s.ID
	if s.Key != "" {
		d += " key " + strconv.Quote(s.Key)
	}
	if s.Version != "" {
		d += " version " + strconv.Quote(s.Version)
	}
	return d
}
