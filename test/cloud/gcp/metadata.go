package gcp

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Pods finds the pod that has an IP, as GKE's metadata server knows its
// callers by their source address.
type Pods interface {
	PodByIP(ctx context.Context, ip string) (namespace, name, serviceAccount string, startTime time.Time, annotations map[string]string, err error)
}

// ServiceAccounts gives a Kubernetes ServiceAccount's annotations (the
// Google service account it acts as is iam.gke.io/gcp-service-account).
type ServiceAccounts interface {
	ServiceAccountAnnotations(ctx context.Context, namespace, name string) (map[string]string, error)
}

// Pod is the pod calling the metadata server.
type Pod struct {
	IP, Namespace, Name, ServiceAccount string
	StartTime                           time.Time
	Annotations                         map[string]string
}

// Annotations the metadata server reads.
const (
	// GSAAnnotation on a Kubernetes ServiceAccount names the Google service
	// account its pods act as.
	GSAAnnotation = "iam.gke.io/gcp-service-account"
	// DelayAnnotation on a pod (a Go duration, "5s") keeps the metadata
	// server answering it 503 for that long after the pod's start, as
	// GKE's did in issue #14349.
	DelayAnnotation = "test.secctx.dev/metadata-delay"
)

// KubePods implements Pods and ServiceAccounts with the cluster's API.
type KubePods struct {
	Client kubernetes.Interface
}

// PodByIP is the one Running or Pending pod, of any namespace, whose IP
// is ip; pods on the host's network share its address and are left out.
func (k KubePods) PodByIP(ctx context.Context, ip string) (namespace, name, serviceAccount string, startTime time.Time, annotations map[string]string, err error) {
	list, err := k.Client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.podIP=" + ip})
	if err != nil {
		return "", "", "", time.Time{}, nil, fmt.Errorf("list pods with IP %s: %w", ip, err)
	}
	var found []corev1.Pod
	for _, p := range list.Items {
		if !p.Spec.HostNetwork && (p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodPending) {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		return "", "", "", time.Time{}, nil, fmt.Errorf("%d running pods have IP %s", len(found), ip)
	}
	p := found[0]
	start := p.CreationTimestamp.Time
	if p.Status.StartTime != nil {
		start = p.Status.StartTime.Time
	}
	return p.Namespace, p.Name, p.Spec.ServiceAccountName, start, p.Annotations, nil
}

// ServiceAccountAnnotations implements ServiceAccounts.
func (k KubePods) ServiceAccountAnnotations(ctx context.Context, namespace, name string) (map[string]string, error) {
	sa, err := k.Client.CoreV1().ServiceAccounts(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get service account %s/%s: %w", namespace, name, err)
	}
	return sa.Annotations, nil
}

// defaultScopes are those of a GKE node's default token.
var defaultScopes = []string{"https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/userinfo.email"}

// serveMetadata answers what the official metadata client and the compute
// token provider ask for, for the pod that calls.
func (s *Server) serveMetadata(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Metadata-Flavor", "Google")
	w.Header().Set("Server", "GKE Metadata Server (secctx test)")
	// The client's probe for "on GCE" reads the root and its header.
	if r.URL.Path == "/" {
		fmt.Fprint(w, "computeMetadata/\n")
		return
	}
	suffix, ok := strings.CutPrefix(r.URL.Path, "/computeMetadata/v1/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	ip, _, _ := net.SplitHostPort(r.RemoteAddr)
	// Like Google's: the header proves the request is not a redirected
	// browser's, a forwarded one is refused.
	if r.Header.Get("Metadata-Flavor") != "Google" || r.Header.Get("X-Forwarded-For") != "" {
		s.journal.Refused("metadata", ip, suffix, "no Metadata-Flavor: Google header, or forwarded")
		http.Error(w, "Missing required header \"Metadata-Flavor\": \"Google\"", http.StatusForbidden)
		return
	}
	pod, err := s.callerPod(r.Context(), ip)
	if err != nil {
		// Not ready rather than forbidden: a new pod's address may reach
		// the API server after the pod's first call, and clients retry 503.
		s.journal.Refused("metadata", ip, suffix, err.Error())
		http.Error(w, "the metadata server does not know this pod yet: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	who := "pod " + pod.Namespace + "/" + pod.Name
	if until := pod.StartTime.Add(s.startupDelay(pod)); time.Now().Before(until) {
		s.journal.Refused("metadata", who, suffix, "startup delay: not ready until "+until.Format(time.RFC3339Nano))
		http.Error(w, "the metadata server is not ready for this pod yet", http.StatusServiceUnavailable)
		return
	}
	gsa, err := s.gsaOf(r.Context(), pod)
	if err != nil {
		s.journal.Refused("metadata", who, suffix, err.Error())
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	email := gsa
	if email == "" {
		email = s.opts.ProjectID + ".svc.id.goog"
	}
	const accounts = "instance/service-accounts/"
	switch {
	case suffix == "project/project-id":
		fmt.Fprint(w, s.opts.ProjectID)
	case suffix == "project/numeric-project-id":
		fmt.Fprint(w, s.opts.ProjectNumber)
	case suffix == "universe/universe-domain":
		fmt.Fprint(w, "googleapis.com")
	case suffix == accounts:
		fmt.Fprintf(w, "default/\n%s/\n", email)
	case strings.HasPrefix(suffix, accounts):
		// default or the account's email, then an item.
		account, item, _ := strings.Cut(strings.TrimPrefix(suffix, accounts), "/")
		if account != "default" && account != email {
			http.NotFound(w, r)
			return
		}
		switch item {
		case "email":
			fmt.Fprint(w, email)
		case "aliases":
			fmt.Fprint(w, "default")
		case "scopes":
			fmt.Fprint(w, strings.Join(defaultScopes, "\n")+"\n")
		case "":
			if r.URL.Query().Get("recursive") == "true" {
				writeJSON(w, http.StatusOK, map[string]any{"aliases": []string{"default"}, "email": email, "scopes": defaultScopes})
				return
			}
			fmt.Fprint(w, "aliases\nemail\nscopes\ntoken\n")
		case "token":
			s.serveMetadataToken(w, r, pod, gsa)
		default:
			http.NotFound(w, r)
		}
	default:
		http.NotFound(w, r)
	}
}

// serveMetadataToken mints the pod's token: of the Google service account
// its KSA names, when the KSA's principal may act as it (GKE's
// roles/iam.workloadIdentityUser), else of the KSA's own principal.
func (s *Server) serveMetadataToken(w http.ResponseWriter, r *http.Request, pod Pod, gsa string) {
	ksa := s.KSAPrincipal(pod.Namespace, pod.ServiceAccount)
	who := "pod " + pod.Namespace + "/" + pod.Name + " (" + ksa + ")"
	principal := ksa
	if gsa != "" {
		if !s.mayActAs(ksa, gsa) {
			s.journal.Refused("metadata", who, "a token of "+gsa, ksa+" may not act as "+gsa)
			http.Error(w, fmt.Sprintf("Unable to generate access token; IAM returned 403 Forbidden: Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist). %s may not act as %s.", ksa, gsa), http.StatusForbidden)
			return
		}
		principal = ServiceAccountPrincipal(gsa)
	}
	scopes := defaultScopes
	if q := r.URL.Query().Get("scopes"); q != "" {
		scopes = strings.Split(q, ",")
	}
	tok, exp := s.mint(principal, 0)
	s.journal.Granted("metadata", who, fmt.Sprintf("an access token of %s (scopes %q)", principal, scopes))
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "expires_in": int(time.Until(exp).Seconds()), "token_type": "Bearer"})
}

func (s *Server) callerPod(ctx context.Context, ip string) (Pod, error) {
	if s.opts.Pods == nil {
		return Pod{}, fmt.Errorf("this test server was started without Pods")
	}
	ns, name, sa, start, ann, err := s.opts.Pods.PodByIP(ctx, ip)
	if err != nil {
		return Pod{}, err
	}
	return Pod{IP: ip, Namespace: ns, Name: name, ServiceAccount: sa, StartTime: start, Annotations: ann}, nil
}

func (s *Server) startupDelay(pod Pod) time.Duration {
	if s.opts.StartupDelay != nil {
		if d := s.opts.StartupDelay(pod); d > 0 {
			return d
		}
	}
	d, _ := time.ParseDuration(pod.Annotations[DelayAnnotation])
	return d
}

// gsaOf is the Google service account the pod's KSA names, or "".
func (s *Server) gsaOf(ctx context.Context, pod Pod) (string, error) {
	if s.opts.ServiceAccounts == nil {
		return "", nil
	}
	ann, err := s.opts.ServiceAccounts.ServiceAccountAnnotations(ctx, pod.Namespace, pod.ServiceAccount)
	if err != nil {
		return "", err
	}
	return ann[GSAAnnotation], nil
}
