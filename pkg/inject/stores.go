package inject

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/secctx/secctx/pkg/securityctx"
)

// A store is a secret backend as the webhook sees it: it checks its part of
// the config and lays a SecurityContext's secrets out in the pod, without
// the pod. Each backend's file adds itself to stores, so that a new backend
// adds a file and grows no switch.
type store interface {
	validate(c Config) error
	plan(cfg Config, secrets []securityctx.Secret, fields []string) (*secretPlan, securityctx.ErrorList)
}

var stores = map[string]store{}

// backend is the configured backend; empty is the default, for Configs
// built in code.
func (c Config) backend() string {
	if c.Backend == "" {
		return BackendKubernetes
	}
	return c.Backend
}

// storeNames lists the backends for a message: "a, b or c".
func storeNames() string {
	names := make([]string, 0, len(stores))
	for n := range stores {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// checkURL: an absolute http(s) URL with a host and nothing after the
// path; plain http only for the hosts in inject.tokens.httpHosts.
func checkURL(field, u string, httpHosts []string) error {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Errorf("%s %q: %v", field, u, err)
	case p.Host == "" || p.User != nil || p.RawQuery != "" || p.Fragment != "":
		return fmt.Errorf("%s %q: must be an https URL with a host, and no user, query or fragment", field, u)
	case p.Scheme == "https":
	case p.Scheme == "http" && slices.Contains(httpHosts, p.Host):
	case p.Scheme == "http":
		return fmt.Errorf("%s %q: must be https (http only for a host in inject.tokens.httpHosts)", field, u)
	default:
		return fmt.Errorf("%s %q: must be an https URL", field, u)
	}
	return nil
}
