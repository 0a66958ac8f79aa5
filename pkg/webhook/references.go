package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/secctx/secctx/pkg/inject"
	"github.com/secctx/secctx/pkg/securityctx"
)

// Reference check modes (docs/policy.md).
const (
	// RefChecksOff: Secrets are not read; a missing one shows on the pod,
	// which the kubelet cannot start.
	RefChecksOff = "off"
	// RefChecksWarn: a missing Secret or key is an admission warning.
	RefChecksWarn = "warn"
	// RefChecksDeny: it is a denial.
	RefChecksDeny = "deny"
)

// SecretKeys tells which keys a Secret has, never their values.
type SecretKeys interface {
	// Keys returns the names of the Secret's keys, and found false when
	// there is no such Secret.
	Keys(ctx context.Context, namespace, name string) (keys []string, found bool, err error)
}

// APISecretKeys reads Secrets from the API server on demand, one GET each,
// and keeps only their key names: values are dropped as soon as the
// response is decoded, and nothing is cached, so no informer holds every
// Secret of the cluster and a Secret created a moment before its pod is
// seen. Its RBAC is get on secrets, without list or watch.
type APISecretKeys struct {
	Reader client.Reader
}

// Keys implements SecretKeys.
func (a APISecretKeys) Keys(ctx context.Context, namespace, name string) ([]string, bool, error) {
	var s corev1.Secret
	err := a.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &s)
	keys := make([]string, 0, len(s.Data))
	for k := range s.Data {
		keys = append(keys, k)
	}
	clear(s.Data)
	switch {
	case apierrors.IsNotFound(err):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("get Secret %s/%s: %w", namespace, name, err)
	}
	slices.Sort(keys)
	return keys, true, nil
}

// WithReferenceChecks makes m check, in mode (warn or deny; off, or a nil
// keys, checks nothing), that the Kubernetes Secrets and keys an admitted
// pod refers to exist.
func (m *PodMutator) WithReferenceChecks(mode string, keys SecretKeys) *PodMutator {
	if mode == RefChecksOff || mode == "" || keys == nil {
		m.secretKeys, m.refMode = nil, RefChecksOff
		return m
	}
	m.secretKeys, m.refMode = keys, mode
	return m
}

// maxKeysShown bounds the key names a missing-key message lists.
const maxKeysShown = 5

// CheckReferences says, one sentence each, which of refs do not exist in
// namespace. Each Secret is read once, in the order the pod names them.
func CheckReferences(ctx context.Context, keys SecretKeys, namespace string, refs []inject.SecretRef) ([]string, error) {
	var problems []string
	var done []string
	for i, r := range refs {
		if slices.Contains(done, r.Secret) {
			continue
		}
		done = append(done, r.Secret)
		have, found, err := keys.Keys(ctx, namespace, r.Secret)
		if err != nil {
			return nil, fmt.Errorf("check the Secrets the pod refers to: %w", err)
		}
		var fields []string
		for _, o := range refs[i:] {
			if o.Secret != r.Secret {
				continue
			}
			if !found {
				if !slices.Contains(fields, o.Field) {
					fields = append(fields, o.Field)
				}
				continue
			}
			if o.Key == "" || slices.Contains(have, o.Key) {
				continue
			}
			problems = append(problems, fmt.Sprintf("%s: Secret %s in namespace %s has no key %s%s",
				o.Field, securityctx.Quote(o.Secret), namespace, securityctx.Quote(o.Key), keyHint(have, o.Key)))
		}
		if !found {
			problems = append(problems, fmt.Sprintf("%s: Secret %s not found in namespace %s",
				strings.Join(fields, ", "), securityctx.Quote(r.Secret), namespace))
		}
	}
	return problems, nil
}

// ReferenceWarning is what the author is told of a problem CheckReferences
// found, when the pod is admitted anyway.
func ReferenceWarning(problem string) string {
	return "reference check: " + problem + ": the pod will not start until it exists"
}

// keyHint names the keys a Secret has, so that a typo or a case slip
// shows: key names are not secret to whoever may mount the Secret.
func keyHint(have []string, key string) string {
	if len(have) == 0 {
		return " (it has no keys)"
	}
	for _, k := range have {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf(" (it has %s: keys are case-sensitive)", securityctx.Quote(k))
		}
	}
	shown := have
	more := ""
	if len(shown) > maxKeysShown {
		shown, more = shown[:maxKeysShown], fmt.Sprintf(" and %d more", len(have)-maxKeysShown)
	}
	q := make([]string, len(shown))
	for i, k := range shown {
		q[i] = securityctx.Quote(k)
	}
	return " (it has " + strings.Join(q, ", ") + more + ")"
}
