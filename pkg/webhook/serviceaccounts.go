package webhook

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/secctx/secctx/pkg/inject"
)

// ServiceAccountLookup answers from a cache of service accounts and, when
// the cache does not have the account, asks the API server: the account may
// have been created a moment before the pod, faster than the cache saw it.
type ServiceAccountLookup struct {
	Cache client.Reader
	API   client.Reader
}

// ServiceAccount implements inject.ServiceAccounts.
func (l *ServiceAccountLookup) ServiceAccount(ctx context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	sa := &corev1.ServiceAccount{}
	if l.Cache != nil && l.Cache.Get(ctx, key, sa) == nil {
		return sa, nil
	}
	switch err := l.API.Get(ctx, key, sa); {
	case err == nil:
		return sa, nil
	case apierrors.IsNotFound(err):
		return nil, nil
	default:
		return nil, err
	}
}

// trimServiceAccount keeps of a cached account what injection reads: its
// name, automountServiceAccountToken and imagePullSecrets.
func trimServiceAccount(obj any) (any, error) {
	sa, ok := obj.(*corev1.ServiceAccount)
	if !ok {
		return obj, nil
	}
	out := &corev1.ServiceAccount{
		AutomountServiceAccountToken: sa.AutomountServiceAccountToken,
		ImagePullSecrets:             sa.ImagePullSecrets,
	}
	out.Name, out.Namespace, out.ResourceVersion, out.UID = sa.Name, sa.Namespace, sa.ResourceVersion, sa.UID
	// The annotations that name the account's cloud identity: without
	// them a cached account would have no EKS role or Azure client id.
	for _, k := range inject.AccountAnnotations {
		if v, ok := sa.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out, nil
}
