package gcp

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestKubePods(t *testing.T) {
	start := metav1.NewTime(time.Now().Truncate(time.Second))
	pod := func(ns, name string, phase corev1.PodPhase, hostNetwork bool) corev1.Pod {
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{DelayAnnotation: "5s"}},
			Spec:       corev1.PodSpec{ServiceAccountName: "app", HostNetwork: hostNetwork},
			Status:     corev1.PodStatus{Phase: phase, PodIP: "10.88.0.7", StartTime: &start},
		}
	}
	c := fake.NewClientset(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app",
		Annotations: map[string]string{GSAAnnotation: readerGSA}}})
	var selector string
	// The fake clientset ignores field selectors: answer as the API server
	// would for status.podIP=10.88.0.7, with pods KubePods must skip.
	c.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		selector = a.(k8stesting.ListAction).GetListRestrictions().Fields.String()
		return true, &corev1.PodList{Items: []corev1.Pod{
			pod("team", "done", corev1.PodSucceeded, false),
			pod("kube-system", "proxy", corev1.PodRunning, true),
			pod("team", "app-1", corev1.PodRunning, false),
		}}, nil
	})
	k := KubePods{Client: c}
	ns, name, sa, started, ann, err := k.PodByIP(context.Background(), "10.88.0.7")
	if err != nil {
		t.Fatal(err)
	}
	if selector != "status.podIP=10.88.0.7" {
		t.Errorf("field selector %q", selector)
	}
	if ns != "team" || name != "app-1" || sa != "app" || !started.Equal(start.Time) || ann[DelayAnnotation] != "5s" {
		t.Errorf("got %s/%s sa %s started %v annotations %v", ns, name, sa, started, ann)
	}
	got, err := k.ServiceAccountAnnotations(context.Background(), "team", "app")
	if err != nil || got[GSAAnnotation] != readerGSA {
		t.Errorf("service account annotations: %v %v", got, err)
	}
}
