package framework

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/secctx/secctx/test/framework/cluster"
)

// OIDCIssuer is the test provider's URL, as pods reach it.
const OIDCIssuer = "http://" + OIDCHost

// StartOIDCProvider runs the test OpenID Provider and its resource server
// (test/images/oidc) in namespace ns behind a Service at OIDCIP (provider
// on 8080, resource server on 8081), with the given clients (id to secret)
// and token lifetime, and waits until it answers discovery.
func StartOIDCProvider(ctx context.Context, c *cluster.Cluster, ns string, clients map[string]string, lifetime time.Duration) error {
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
		return err
	}
	var kv []string
	for id, secret := range clients {
		kv = append(kv, id+"="+secret)
	}
	pairs := strings.Join(kv, ",")
	labels := map[string]string{"app": "oidc"}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "oidc", Namespace: ns},
		Spec: corev1.ServiceSpec{ClusterIP: OIDCIP, Selector: labels, Ports: []corev1.ServicePort{
			{Name: "provider", Port: 8080, TargetPort: intstr.FromInt32(8080)},
			{Name: "api", Port: 8081, TargetPort: intstr.FromInt32(8081)},
		}},
	}
	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "oidc", Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "oidc", Image: OIDCImage, ImagePullPolicy: corev1.PullNever,
			Env: []corev1.EnvVar{
				{Name: "ISSUER", Value: OIDCIssuer},
				{Name: "CLIENTS", Value: pairs},
				{Name: "LIFETIME", Value: lifetime.String()},
			},
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Path: "/.well-known/openid-configuration", Port: intstr.FromInt32(8080)}}},
		}}},
	}
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return err
	}
	return Poll(ctx, 90*time.Second, func() (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "oidc", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}
