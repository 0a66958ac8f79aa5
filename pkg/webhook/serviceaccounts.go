package webhook

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ServiceAccountLookup answers from a cache of service-account metadata and,
// when the cache does not have the account, asks the API server: the account
// may have been created a moment before the pod, faster than the cache saw it.
type ServiceAccountLookup struct {
	Cache client.Reader
	API   client.Reader
}

func serviceAccountMeta() *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("ServiceAccount"))
	return m
}

// ServiceAccountExists implements inject.ServiceAccounts.
func (l *ServiceAccountLookup) ServiceAccountExists(ctx context.Context, namespace, name string) (bool, error) {
	key := client.ObjectKey{Namespace: namespace, Name: name}
	if l.Cache != nil && l.Cache.Get(ctx, key, serviceAccountMeta()) == nil {
		return true, nil
	}
	switch err := l.API.Get(ctx, key, serviceAccountMeta()); {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, err
	}
}
