package securityctx

import (
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzDecode: the decoder never panics, and whatever it accepts survives an
// encode/decode round trip unchanged.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `[]`, `{"secrets":[{"group":"g","key":"k","mountRequirement":"ENV_VAR","envVar":"X"}]}`,
		`{"run_as":{"k8s_service_account":"sa","oauth2_client":{"client_id":"c","client_secret":{"group":"s"}}}}`,
		`{"tokens":[{"name":"t","type":0,"client":{"clientId":"c"},"tokenEndpoint":"https://x"}]}`,
		`{"secrets":[{"group":"g","mount_requirement":2,"mountRequirement":1}]}`,
		`{"secrets":[null,{"group":5}],"runAs":{"iamRole":"arn"}}`, `{"a":`, `{"connectionRef":"c"}`,
		`{"tokens":[{"name":"t","client":{"clientId":"c","clientSecret":{"group":"g","key":"k"}},"tokenEndpoint":"https://idp/oauth2/%2e%2e/admin/token"}]}`,
		`{"tokens":[{"name":"t","client":{"clientId":"c","clientSecret":{"group":"g","key":"k"}},"idpDiscoveryEndpoint":"https://u:p@idp/x?client_secret=s"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sc, err := Decode(data)
		if err != nil {
			if sc != nil {
				t.Fatal("Decode returned a value with an error")
			}
			return
		}
		s, err := Encode(sc)
		if err != nil {
			t.Fatalf("Encode of a decoded value: %v", err)
		}
		back, err := Decode([]byte(s))
		if err != nil {
			t.Fatalf("Decode(Encode(x)): %v", err)
		}
		if diff := cmp.Diff(sc, back, emptyAsNil()); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
		// No message quotes an endpoint's user info or query: either may
		// hold a credential.
		msg := sc.Validate().Error()
		for _, tok := range sc.Tokens {
			for _, raw := range []string{tok.TokenEndpoint, tok.IdpDiscoveryEndpoint} {
				u, err := url.Parse(raw)
				if err != nil {
					continue
				}
				if u.User != nil && u.User.String() != "" && strings.Contains(msg, u.User.String()+"@") {
					t.Errorf("message shows the user info of %q: %s", raw, msg)
				}
				if u.RawQuery != "" && strings.Contains(msg, "?"+u.RawQuery) {
					t.Errorf("message shows the query of %q: %s", raw, msg)
				}
			}
		}
	})
}

// emptyAsNil treats an empty list like a missing one: JSON drops both.
func emptyAsNil() cmp.Option {
	return cmp.FilterValues(func(x, y any) bool {
		return isEmptySlice(x) && isEmptySlice(y)
	}, cmp.Comparer(func(_, _ any) bool { return true }))
}

func isEmptySlice(v any) bool {
	switch s := v.(type) {
	case []Secret:
		return len(s) == 0
	case []OAuth2TokenRequest:
		return len(s) == 0
	}
	return false
}
