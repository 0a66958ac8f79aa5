// Command oidc runs a real OpenID Provider (zitadel/oidc's pkg/op, through
// internal/oidctest) and a small resource server that accepts only its
// valid tokens, for the cluster suite and the demo.
//
//	ISSUER       the provider's URL as pods reach it (required)
//	CLIENTS      id=secret pairs, comma-separated (required)
//	LIFETIME     access token lifetime, a Go duration (default 1h)
//	PORT, API_PORT  provider and resource server ports (8080, 8081)
package main

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/secctx/secctx/internal/oidctest"
)

func main() {
	clients := map[string]string{}
	for _, pair := range strings.Split(os.Getenv("CLIENTS"), ",") {
		if id, secret, ok := strings.Cut(pair, "="); ok {
			clients[id] = secret
		}
	}
	lifetime := time.Hour
	if v := os.Getenv("LIFETIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			fail(fmt.Errorf("LIFETIME: %w", err))
		}
		lifetime = d
	}
	p, err := oidctest.New(oidctest.Options{Issuer: os.Getenv("ISSUER"), Clients: clients, TokenLifetime: lifetime})
	if err != nil {
		fail(err)
	}
	port, apiPort := env("PORT", "8080"), env("API_PORT", "8081")
	go func() { fail(http.ListenAndServe(":"+apiPort, p.ResourceServer())) }()
	fmt.Printf("OpenID provider %s on :%s, resource server on :%s, tokens last %s\n", os.Getenv("ISSUER"), port, apiPort, lifetime)
	fail(http.ListenAndServe(":"+port, p))
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "oidc:", err)
	os.Exit(1)
}
