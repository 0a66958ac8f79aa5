package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is secctx.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "secctx.dev", Version: "v1alpha1"}

// AddToScheme adds the types of this group to a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &SecurityContextPolicy{}, &SecurityContextPolicyList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// SecurityContextPolicy allows the namespaces it selects to ask for what it
// lists. Several policies that select a namespace add up: a request is
// allowed when any of them allows it.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=scp
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=".metadata.creationTimestamp"
type SecurityContextPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec SecurityContextPolicySpec `json:"spec"`
}

// SecurityContextPolicySpec is what a policy allows, and where.
type SecurityContextPolicySpec struct {
	// NamespaceSelector selects the namespaces whose pods this policy
	// allows; {} selects every namespace.
	NamespaceSelector metav1.LabelSelector `json:"namespaceSelector"`
	// Allow is what those pods may ask for.
	Allow Allow `json:"allow"`
	// Refresh bounds how often those pods' secrets are read again from
	// their stores (inject.refresh).
	// +optional
	Refresh *RefreshBounds `json:"refresh,omitempty"`
}

// RefreshBounds bounds the refresh of fetched secrets in a policy's
// namespaces. Unlike the allow lists, which add up, a bound is a limit:
// of several policies that select a namespace, the strictest applies.
type RefreshBounds struct {
	// MinIntervalSeconds is the least time between two reads of a pod's
	// secrets: a pod refreshes every inject.refresh.intervalSeconds or
	// this, whichever is longer. It never turns refresh on.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=604800
	MinIntervalSeconds int32 `json:"minIntervalSeconds"`
}

// Allow lists what may be asked for. A glob's * matches any run of
// characters, / and : included, and ? one character; nothing else is
// special. An empty list allows nothing of its kind.
type Allow struct {
	// SecretGroups are globs of secrets[].group (and of a client secret's
	// group).
	// +optional
	// +kubebuilder:validation:MaxItems=256
	SecretGroups []string `json:"secretGroups,omitempty"`
	// ServiceAccounts are globs of runAs.k8sServiceAccount.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	ServiceAccounts []string `json:"serviceAccounts,omitempty"`
	// IAMRoles are globs of runAs.iamRole (role ARNs).
	// +optional
	// +kubebuilder:validation:MaxItems=256
	IAMRoles []string `json:"iamRoles,omitempty"`
	// ExecutionIdentities are globs of runAs.executionIdentity.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	ExecutionIdentities []string `json:"executionIdentities,omitempty"`
	// TokenEndpoints are URL prefixes of tokens[].tokenEndpoint: the
	// scheme and host must be equal, and the path must start with the
	// prefix's path at a / boundary.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	TokenEndpoints []string `json:"tokenEndpoints,omitempty"`
	// DiscoveryEndpoints are URL prefixes of tokens[].idpDiscoveryEndpoint,
	// compared as TokenEndpoints.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	DiscoveryEndpoints []string `json:"discoveryEndpoints,omitempty"`
	// MountTypes are the mount requirements secrets may have.
	// +optional
	// +kubebuilder:validation:items:Enum=ANY;ENV_VAR;FILE
	MountTypes []string `json:"mountTypes,omitempty"`
	// Backends are the backends secctx may serve these pods from.
	// +optional
	// +kubebuilder:validation:items:Enum=kubernetes;vault;aws;gcp;azure
	Backends []string `json:"backends,omitempty"`
}

// SecurityContextPolicyList is a list of policies.
//
// +kubebuilder:object:root=true
type SecurityContextPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SecurityContextPolicy `json:"items"`
}
